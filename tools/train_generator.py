"""tf-genrec train: a Qwen2 generator on semantic-ID user histories.

Binds one flag per TrainOptions field (tf_genrec/training/train_generator.py,
where the step and its defaults live) and runs train_generator. --preset
names a recipe (tf_genrec/training/presets.py); flags given override it.
Writes a Hugging Face Qwen2 checkpoint to <output_dir>/hf that `tf-genrec
export` and transformers both open; re-running with the same --output_dir
resumes.

  tf-genrec train --item_table=runs/demo/sids/item_table.tsv \
    --output_dir=runs/demo/generator --preset=recall_default
"""
import json

from absl import app, flags

from tf_genrec.options import define_flags, from_flags, run_step
from tf_genrec.training.train_generator import TrainOptions, train_generator

FLAGS = flags.FLAGS
define_flags(TrainOptions)


def main(argv):
  del argv
  # --preset is an enum flag: from_preset accepts it.
  options = from_flags(TrainOptions,
                       base=TrainOptions.from_preset(FLAGS.preset))
  print(json.dumps(run_step(train_generator, options)))


if __name__ == "__main__":
  app.run(main)
