"""Embeds item text (title + categories + brand [+ description]) to a .npy.

Binds one flag per EmbedOptions field (tf_genrec/semantic_ids/embed_items.py,
where the step and its defaults live) and runs embed_items.

  python -m tools.embed_items --output=runs/demo/sids/item_embeddings.npy
"""
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.semantic_ids.embed_items import EmbedOptions, embed_items

define_flags(EmbedOptions)


def main(argv):
  del argv
  print(json.dumps(run_step(embed_items, from_flags(EmbedOptions))))


if __name__ == "__main__":
  app.run(main)
