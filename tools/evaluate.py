"""tf-genrec evaluate: leave-one-out Recall/NDCG of an exported recall model.

Binds one flag per EvalOptions field (tf_genrec/evaluation/evaluate.py,
where the step, its defaults and the protocol are described) and runs
evaluate; prints the report as JSON.

  tf-genrec evaluate --saved_model_dir=runs/demo/models/ad_recall/1 --split=valid
"""
import json

from absl import app

from tf_genrec.evaluation.evaluate import EvalOptions, evaluate
from tf_genrec.options import define_flags, from_flags, run_step

define_flags(EvalOptions)


def main(argv):
  del argv
  print(json.dumps(run_step(evaluate, from_flags(EvalOptions))))


if __name__ == "__main__":
  app.run(main)
