"""The `tf-genrec train_sasrec` step: most-popular and SASRec baselines.

train_sasrec_baseline(SASRecBaselineOptions) fits both on a dataset
directory's leave-one-out training split (SASRec early-stops on validation
NDCG@10) and scores validation and test once, with the weights chosen on
validation. `refit` then trains SASRec again on h[:-1] for the epochs
validation chose (most-popular counts h[:-1] too) and scores the test split
only: the model the refit protocol compares with, and the teacher of a refit
generator (docs/quality.md). Optionally saves the model and its item
embeddings; writes and returns the report.
"""
import dataclasses
import json
import os
import time
from typing import Optional

import numpy as np
from absl import logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import MostPopular, evaluate_scorer
from tf_genrec.models.sasrec.model import SASRecConfig, save_sasrec
from tf_genrec.models.sasrec.trainer import fit_sasrec
from tf_genrec.options import option

_DEFAULT = SASRecConfig(num_items=1)  # the model defaults, stated once


@dataclasses.dataclass(frozen=True)
class SASRecBaselineOptions:
  data_dir: str = option(DEFAULT_DATA_DIR, "Dataset directory; relative "
                         "paths are from the repo root.")
  output: str = option("runs/baselines/report.json", "JSON report.")
  max_len: int = option(_DEFAULT.max_len, "Most recent items SASRec sees.")
  hidden_dim: int = option(_DEFAULT.hidden_dim, "SASRec hidden size.")
  num_blocks: int = option(_DEFAULT.num_blocks, "SASRec transformer blocks.")
  num_heads: int = option(_DEFAULT.num_heads, "SASRec attention heads.")
  dropout: float = option(_DEFAULT.dropout, "SASRec dropout.")
  learning_rate: float = option(_DEFAULT.learning_rate, "Adam learning rate.")
  batch_size: int = option(_DEFAULT.batch_size, "Training batch size.")
  max_epochs: int = option(_DEFAULT.max_epochs, "Upper bound on epochs.")
  eval_every: int = option(_DEFAULT.eval_every, "Epochs between validation "
                           "passes.")
  patience: int = option(_DEFAULT.patience, "Validation passes without "
                         "improvement.")
  seed: int = option(_DEFAULT.seed, "Random seed.")
  refit: bool = option(False, "Write and score (test only) the model refit "
                       "on h[:-1] for the epochs validation chose.")
  item_embeddings_output: Optional[str] = option(
      None, "Also saves the chosen model's item embeddings, [num_items, "
      "hidden_dim] .npy (row = item id), e.g. as the collaborative view for "
      "build_semantic_ids --embeddings.")
  model_output: Optional[str] = option(
      None, "Also saves the chosen model (config.json + weights.npz), e.g. "
      "as the teacher of `tf-genrec train --teacher_dir`.")

  def sasrec_config(self, num_items) -> SASRecConfig:
    """The SASRecConfig fields of these options, for num_items items."""
    return SASRecConfig(num_items=num_items, **{
        f.name: getattr(self, f.name)
        for f in dataclasses.fields(SASRecConfig) if f.name != "num_items"})


def _makedirs_for(path):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def train_sasrec_baseline(options: SASRecBaselineOptions) -> dict:
  """Fits, scores, saves what was asked; the report (also at output)."""
  o = options
  dataset = load_dataset(o.data_dir)
  split = leave_one_out(dataset.histories)
  # A refit model has trained on the validation targets.
  splits = ("test",) if o.refit else ("valid", "test")
  report = {"refit": o.refit}
  popular = MostPopular(split.fit_histories(o.refit), dataset.num_items)
  report["most_popular"] = {
      s: evaluate_scorer(popular.score, *split.inputs_and_targets(s))
      for s in splits}
  logging.info("most popular: %s", report["most_popular"])

  config = o.sasrec_config(dataset.num_items)
  start = time.time()
  model, info = fit_sasrec(split, config, o.refit)
  report["sasrec"] = {
      s: evaluate_scorer(model.score, *split.inputs_and_targets(s))
      for s in splits}
  report["sasrec"].update(config=dataclasses.asdict(config), **info,
                          train_seconds=round(time.time() - start, 1))
  if o.item_embeddings_output:
    _makedirs_for(o.item_embeddings_output)
    np.save(o.item_embeddings_output, model.item_embeddings())
    report["item_embeddings"] = o.item_embeddings_output
  if o.model_output:
    save_sasrec(model, o.model_output)
    report["model"] = o.model_output
  _makedirs_for(o.output)
  with open(o.output, "w") as f:
    json.dump(report, f, indent=2)
  return report
