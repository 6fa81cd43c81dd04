"""tf-genrec evaluate: leave-one-out Recall/NDCG of an exported recall model.

Scores the SavedModel that serves (not a Python re-implementation) on the
validation or test split of a dataset directory (--data_dir, default
amazon-scientific), full catalogue, Recall@5/10/50/100/300 and NDCG@5/10;
the most-popular baseline (and with --sasrec the in-project SASRec, trained
on the training split with validation early stopping, or with --sasrec_dir
the one `tf-genrec train_sasrec --model_output` saved) is scored in the same
run on the same users. --refit scores the test split with every method fitted on
all items before the test target; --exclude_history ranks only items outside
each user's input history (see docs/quality.md).

  tf-genrec evaluate --saved_model_dir=runs/demo/models/ad_recall/1 --split=valid
"""
import json

from absl import app, flags, logging

from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import (MostPopular, SASRecConfig,
                                           evaluate_scorer, fit_sasrec,
                                           load_sasrec)
from tf_genrec.evaluation.metrics import DEFAULT_RECALL_KS
from tf_genrec.evaluation.saved_model_recall import evaluate_saved_model

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_string("saved_model_dir", None, "An exported version directory.")
flags.DEFINE_enum("split", "valid", ["valid", "test"], "Tune on valid only.")
flags.DEFINE_integer("beam_width", 300, "Beam width (>= --top_n: with one "
                     "item per SID a beam returns one item).")
flags.DEFINE_integer("top_n", max(DEFAULT_RECALL_KS), "Items returned per "
                     "user (Recall@K beyond it counts misses).")
flags.DEFINE_integer("batch_size", 64, "Users per SavedModel call.")
flags.DEFINE_integer("max_users", 0, "Evaluate the first N users (0: all).")
flags.DEFINE_bool("sasrec", False, "Also train + score the SASRec baseline "
                  "(about 10 minutes on 2 cores).")
flags.DEFINE_string("sasrec_dir", None, "Score this saved SASRec (`tf-genrec "
                    "train_sasrec --model_output`, trained on the same "
                    "dataset's training split) instead of training one.")
flags.DEFINE_bool("exclude_history", False, "Rank only items outside each "
                  "user's input history, every method alike; the SavedModel "
                  "must be exported with --exclude_history.")
flags.DEFINE_bool("refit", False, "Test split, every method refit on each "
                  "user's items before the test target (h[:-1]): the "
                  "SavedModel from `tf-genrec train --refit`, SASRec for the "
                  "epochs its validation run chose, most-popular counts.")
flags.mark_flag_as_required("saved_model_dir")


def main(argv):
  del argv
  if FLAGS.refit and FLAGS.split != "test":
    raise app.UsageError("--refit is for --split=test (a refit model has "
                         "trained on the validation targets)")
  dataset = load_dataset(FLAGS.data_dir)
  split = leave_one_out(dataset.histories)
  inputs, targets = split.inputs_and_targets(FLAGS.split)
  if FLAGS.max_users:
    inputs, targets = inputs[:FLAGS.max_users], targets[:FLAGS.max_users]
  report = {
      "dataset": dataset.name, "split": FLAGS.split, "users": len(inputs),
      "beam_width": FLAGS.beam_width, "refit": FLAGS.refit,
      "exclude_history": FLAGS.exclude_history,
      "generative": evaluate_saved_model(
          FLAGS.saved_model_dir, inputs, targets, FLAGS.beam_width,
          FLAGS.top_n, FLAGS.batch_size, FLAGS.exclude_history),
      "most_popular": evaluate_scorer(
          MostPopular(split.fit_histories(FLAGS.refit), dataset.num_items
                      ).score, inputs, targets,
          exclude_history=FLAGS.exclude_history),
  }
  if FLAGS.sasrec_dir:
    if FLAGS.sasrec or FLAGS.refit:
      raise app.UsageError("--sasrec_dir scores a saved SASRec: not with "
                           "--sasrec or --refit (they train one)")
    sasrec = load_sasrec(FLAGS.sasrec_dir)
    if sasrec.config.num_items != dataset.num_items:
      raise app.UsageError(f"--sasrec_dir={FLAGS.sasrec_dir} has num_items="
                           f"{sasrec.config.num_items}, the dataset "
                           f"{dataset.num_items}")
    report["sasrec"] = evaluate_scorer(sasrec.score, inputs, targets,
                                       exclude_history=FLAGS.exclude_history)
  elif FLAGS.sasrec:
    sasrec, info = fit_sasrec(
        split, SASRecConfig(num_items=dataset.num_items), FLAGS.refit)
    if FLAGS.refit:
      report["sasrec_refit_epochs"] = info["refit_epochs"]
    report["sasrec"] = evaluate_scorer(sasrec.score, inputs, targets,
                                       exclude_history=FLAGS.exclude_history)
  logging.info("%s", report)
  print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
