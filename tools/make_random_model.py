"""tf-genrec make_random_model: a random-weight generator + item table.

Binds one flag per RandomModelOptions field (tf_genrec/training/
random_model.py, where the step and its defaults live) and runs
make_random_model.

  tf-genrec make_random_model --output_dir=/tmp/bench_model   # the generator
    issue's small model: 4 layers, hidden 256, 4/2 heads, 10,000 items, L=4
"""
import json

from absl import app

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.training.random_model import (RandomModelOptions,
                                             make_random_model)

define_flags(RandomModelOptions)


def main(argv):
  del argv
  print(json.dumps(run_step(make_random_model, from_flags(RandomModelOptions))))


if __name__ == "__main__":
  app.run(main)
