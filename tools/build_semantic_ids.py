"""Item embeddings -> RQ-VAE semantic IDs -> item_table.tsv + report.json.

Binds one flag per SemanticIdOptions field (tf_genrec/semantic_ids/build.py,
where the step and its defaults live) and runs build_semantic_ids.

  python -m tools.build_semantic_ids \
    --embeddings=runs/demo/sids/item_embeddings.npy --output_dir=runs/demo/sids

With --codes=<.npy|.tsv> externally built SIDs replace the RQ-VAE.
"""
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.semantic_ids.build import (SemanticIdOptions,
                                          build_semantic_ids)

define_flags(SemanticIdOptions)


def main(argv):
  del argv
  report = run_step(build_semantic_ids, from_flags(SemanticIdOptions))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
