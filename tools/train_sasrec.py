"""Baselines (most-popular, SASRec) on a dataset directory, leave-one-out,
full catalogue.

Binds one flag per SASRecBaselineOptions field
(tf_genrec/training/sasrec_baseline.py, where the step and its protocol are
described) and runs train_sasrec_baseline; prints the report.

  python -m tools.train_sasrec --output=runs/baselines/report.json
"""
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.training.sasrec_baseline import (SASRecBaselineOptions,
                                                train_sasrec_baseline)

define_flags(SASRecBaselineOptions)


def main(argv):
  del argv
  report = run_step(train_sasrec_baseline, from_flags(SASRecBaselineOptions))
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
