"""HSTU retrieval with its baselines in the same run, leave-one-out, full
catalogue.

Binds one flag per HSTUComparisonOptions field
(tf_genrec/training/hstu_comparison.py, where the step and its protocol are
described) and runs compare_hstu; prints the report.

  tf-genrec train_hstu --sasrec --stochastic_length_alphas=0,1.6 \
    --model_output=runs/hstu/model --output=runs/hstu/report.json
"""
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.training.hstu_comparison import (HSTUComparisonOptions,
                                                compare_hstu)

define_flags(HSTUComparisonOptions)


def main(argv):
  del argv
  report = run_step(compare_hstu, from_flags(HSTUComparisonOptions))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
