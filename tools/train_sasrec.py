"""Baselines on a dataset directory (--data_dir, default amazon-scientific),
leave-one-out, full catalogue.

  python -m tools.train_sasrec --output=runs/baselines/report.json

Most-popular counts training interactions; SASRec trains on the training
histories and early-stops on validation NDCG@10. The test split is evaluated
once, with the weights chosen on validation. --refit then trains SASRec again
on h[:-1] for the epochs validation chose (most-popular counts h[:-1] too) and
scores the test split only: the model the refit protocol compares with, and
the teacher of a refit generator (docs/quality.md).
"""
import dataclasses
import json
import os
import time

import numpy as np
from absl import app, flags, logging

from tf_genrec.data.amazon import (DEFAULT_DATA_DIR, leave_one_out,
                                   load_dataset)
from tf_genrec.evaluation.baselines import (MostPopular, SASRecConfig,
                                            evaluate_scorer, fit_sasrec,
                                            save_sasrec)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR,
                    "Dataset directory; relative paths are from the repo root.")
flags.DEFINE_string("output", "runs/baselines/report.json", "JSON report.")
flags.DEFINE_integer("max_len", 50, "Most recent items SASRec sees.")
flags.DEFINE_integer("hidden_dim", 64, "SASRec hidden size.")
flags.DEFINE_integer("num_blocks", 2, "SASRec transformer blocks.")
flags.DEFINE_integer("num_heads", 2, "SASRec attention heads.")
flags.DEFINE_float("dropout", 0.3, "SASRec dropout.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("batch_size", 256, "Training batch size.")
flags.DEFINE_integer("max_epochs", 100, "Upper bound on epochs.")
flags.DEFINE_integer("eval_every", 2, "Epochs between validation passes.")
flags.DEFINE_integer("patience", 5, "Validation passes without improvement.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("refit", False, "Write and score (test only) the model "
                  "refit on h[:-1] for the epochs validation chose.")
flags.DEFINE_string("item_embeddings_output", None, "Also saves the chosen "
                    "model's item embeddings, [num_items, hidden_dim] .npy "
                    "(row = item id), e.g. as the collaborative view for "
                    "build_semantic_ids --embeddings.")
flags.DEFINE_string("model_output", None, "Also saves the chosen model "
                    "(config.json + weights.npz), e.g. as the teacher of "
                    "`tf-genrec train --teacher_dir`.")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  split = leave_one_out(dataset.histories)
  # A refit model has trained on the validation targets.
  splits = ("test",) if FLAGS.refit else ("valid", "test")
  report = {"refit": FLAGS.refit}
  popular = MostPopular(split.fit_histories(FLAGS.refit), dataset.num_items)
  report["most_popular"] = {
      s: evaluate_scorer(popular.score, *split.inputs_and_targets(s))
      for s in splits}
  logging.info("most popular: %s", report["most_popular"])

  config = SASRecConfig(
      num_items=dataset.num_items, max_len=FLAGS.max_len,
      hidden_dim=FLAGS.hidden_dim, num_blocks=FLAGS.num_blocks,
      num_heads=FLAGS.num_heads, dropout=FLAGS.dropout,
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
      max_epochs=FLAGS.max_epochs, eval_every=FLAGS.eval_every,
      patience=FLAGS.patience, seed=FLAGS.seed)
  start = time.time()
  model, info = fit_sasrec(split, config, FLAGS.refit)
  report["sasrec"] = {
      s: evaluate_scorer(model.score, *split.inputs_and_targets(s))
      for s in splits}
  report["sasrec"].update(config=dataclasses.asdict(config), **info,
                          train_seconds=round(time.time() - start, 1))
  if FLAGS.item_embeddings_output:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.item_embeddings_output)),
                exist_ok=True)
    np.save(FLAGS.item_embeddings_output, model.item_embeddings())
    report["item_embeddings"] = FLAGS.item_embeddings_output
  if FLAGS.model_output:
    save_sasrec(model, FLAGS.model_output)
    report["model"] = FLAGS.model_output
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
