"""The `tf-genrec evaluate` step: leave-one-out metrics of a SavedModel.

evaluate(EvalOptions) scores the SavedModel that serves (not a Python
re-implementation) on the validation or test split of a dataset directory,
full catalogue, Recall@5/10/50/100/300 and NDCG@5/10; the most-popular
baseline (and optionally SASRec, trained here or loaded) is scored in the
same run on the same users. `refit` scores the test split with every method
fitted on all items before the test target; `exclude_history` ranks only
items outside each user's input history (docs/quality.md).
"""
import dataclasses
from typing import Optional

from absl import logging

from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import MostPopular, evaluate_scorer
from tf_genrec.evaluation.metrics import DEFAULT_RECALL_KS
from tf_genrec.evaluation.saved_model_recall import evaluate_saved_model
from tf_genrec.models.sasrec.model import SASRecConfig, load_sasrec
from tf_genrec.models.sasrec.trainer import fit_sasrec
from tf_genrec.options import OptionsError, option, refused_as


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  saved_model_dir: str = option(None, "An exported version directory.",
                                required=True)
  data_dir: Optional[str] = option(
      None, "Dataset directory (default: ../shared/datasets/"
      "amazon-scientific from the repo).")
  split: str = option("valid", "Tune on valid only.",
                      choices=("valid", "test"))
  beam_width: int = option(300, "Beam width (>= --top_n: with one item per "
                           "SID a beam returns one item).")
  top_n: int = option(max(DEFAULT_RECALL_KS), "Items returned per user "
                      "(Recall@K beyond it counts misses).")
  batch_size: int = option(64, "Users per SavedModel call.")
  max_users: int = option(0, "Evaluate the first N users (0: all).")
  sasrec: bool = option(False, "Also train + score the SASRec baseline "
                        "(about 10 minutes on 2 cores).")
  sasrec_dir: Optional[str] = option(
      None, "Score this saved SASRec (`tf-genrec train_sasrec "
      "--model_output`, trained on the same dataset's training split) "
      "instead of training one.")
  exclude_history: bool = option(
      False, "Rank only items outside each user's input history, every "
      "method alike; the SavedModel must be exported with "
      "--exclude_history.")
  refit: bool = option(
      False, "Test split, every method refit on each user's items before "
      "the test target (h[:-1]): the SavedModel from `tf-genrec train "
      "--refit`, SASRec for the epochs its validation run chose, "
      "most-popular counts.")


def evaluate(options: EvalOptions) -> dict:
  """The report: per method, the metrics on the same users."""
  o = options
  if o.refit and o.split != "test":
    raise OptionsError(f"refit is for split=test, got split={o.split} (a "
                       "refit model has trained on the validation targets)")
  if o.sasrec_dir and (o.sasrec or o.refit):
    raise OptionsError(f"sasrec_dir={o.sasrec_dir} scores a saved SASRec: "
                       "not with sasrec or refit (they train one)")
  dataset = load_dataset(o.data_dir)
  split = leave_one_out(dataset.histories)
  inputs, targets = split.inputs_and_targets(o.split)
  if o.max_users:
    inputs, targets = inputs[:o.max_users], targets[:o.max_users]
  report = {
      "dataset": dataset.name, "split": o.split, "users": len(inputs),
      "beam_width": o.beam_width, "refit": o.refit,
      "exclude_history": o.exclude_history,
      "generative": evaluate_saved_model(
          o.saved_model_dir, inputs, targets, o.beam_width, o.top_n,
          o.batch_size, o.exclude_history),
      "most_popular": evaluate_scorer(
          MostPopular(split.fit_histories(o.refit), dataset.num_items).score,
          inputs, targets, exclude_history=o.exclude_history),
  }
  sasrec = None
  if o.sasrec_dir:
    with refused_as("sasrec_dir"):
      sasrec = load_sasrec(o.sasrec_dir, dataset.num_items)
  elif o.sasrec:
    sasrec, info = fit_sasrec(
        split, SASRecConfig(num_items=dataset.num_items), o.refit)
    if o.refit:
      report["sasrec_refit_epochs"] = info["refit_epochs"]
  if sasrec is not None:
    report["sasrec"] = evaluate_scorer(sasrec.score, inputs, targets,
                                       exclude_history=o.exclude_history)
  logging.info("%s", report)
  return report
