"""The `tf-genrec train_hstu` step: HSTU retrieval beside its baselines.

compare_hstu(HSTUComparisonOptions) runs, on one dataset directory's
leave-one-out split and full catalogue: most-popular (training histories),
optionally SASRec (trained, or one saved by train_sasrec), one HSTU per
stochastic-length alpha (0 = off), with the time-gap attention bias when the
dataset has timestamps (--time_bias), and optionally an exported generative
recall model. SASRec and every HSTU train
on the training histories and early-stop on validation NDCG@10; the HSTU
with the best validation NDCG@10 is the chosen one. Every trained method
scores validation and test once; the generative model, which nothing here
chooses, scores the test split only (at its cost, a second split would
double the run). Writes and returns the report.
"""
import dataclasses
import json
import os
import time
from typing import Optional

from absl import logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import MostPopular, evaluate_scorer
from tf_genrec.evaluation.metrics import DEFAULT_RECALL_KS
from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.retrieval import save_hstu_retrieval
from tf_genrec.models.sasrec.model import SASRecConfig, load_sasrec
from tf_genrec.models.sasrec.trainer import fit_sasrec
from tf_genrec.options import OptionsError, option, refused_as
from tf_genrec.training.hstu_retrieval import (HSTUTrainConfig,
                                               train_hstu_retrieval)

# The defaults of the model and of its training, stated once there.
_MODEL, _TRAIN = HSTUConfig(), HSTUTrainConfig()


@dataclasses.dataclass(frozen=True)
class HSTUComparisonOptions:
  data_dir: str = option(DEFAULT_DATA_DIR, "Dataset directory; relative "
                         "paths are from the repo root.")
  output: str = option("runs/hstu/report.json", "JSON report.")
  model_output: Optional[str] = option(
      None, "Saves the chosen HSTU (config.json + weights.npz) for "
      "`tf-genrec export --graph=hstu_retrieval --checkpoint_dir=...`.")
  max_len: int = option(_MODEL.max_len, "Most recent items HSTU sees (N).")
  hidden_dim: int = option(_MODEL.hidden_dim, "Model width D.")
  num_layers: int = option(_MODEL.num_layers, "HSTU layers.")
  num_heads: int = option(_MODEL.num_heads, "Attention heads.")
  attention_dim: int = option(_MODEL.attention_dim, "Per-head Q/K size.")
  linear_dim: int = option(_MODEL.linear_dim, "Per-head U/V size.")
  dropout: float = option(_MODEL.dropout, "Dropout.")
  learning_rate: float = option(_TRAIN.learning_rate, "Adam learning rate.")
  batch_size: int = option(_TRAIN.batch_size, "Training batch size (users).")
  num_negatives: int = option(_TRAIN.num_negatives,
                              "Uniform negatives per batch; 0: every item "
                              "(full softmax).")
  temperature: float = option(_TRAIN.temperature,
                              "Softmax temperature on cosines.")
  max_epochs: int = option(_TRAIN.max_epochs, "Upper bound on epochs.")
  eval_every: int = option(_TRAIN.eval_every,
                           "Epochs between validation passes.")
  patience: int = option(_TRAIN.patience,
                         "Validation passes without improvement.")
  stochastic_length_alphas: list = option(
      ["0"], "One HSTU per alpha; 0 = stochastic length off, else in (0, 2].")
  time_bias: str = option(
      "auto", "HSTU's bucketed time-gap attention bias from the dataset's "
      "timestamps: auto = on exactly when the dataset has them.",
      choices=("auto", "on", "off"))
  seed: int = option(_TRAIN.seed, "Random seed.")
  sasrec: bool = option(False, "Also train + score SASRec (its defaults).")
  sasrec_dir: Optional[str] = option(
      None, "Also score the SASRec that `train_sasrec --model_output` saved "
      "(trained with its own early stopping on this dataset) instead of "
      "training one; not with --sasrec.")
  generative_saved_model: Optional[str] = option(
      None, "Also score this exported generative recall model (a version "
      "dir) on the test split.")
  beam_width: int = option(256, "Beam width of the generative model.")

  def _shared_fields(self, config):
    """This options' values of the fields it shares with config."""
    names = {f.name for f in dataclasses.fields(self)}
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(config)
            if f.name in names}

  def hstu_config(self, dataset) -> HSTUConfig:
    """The model's config; time_bias resolved against the dataset."""
    if self.time_bias not in ("auto", "on", "off"):
      raise OptionsError(f"time_bias={self.time_bias!r}: must be auto, on "
                         "or off")
    has_times = dataset.timestamps is not None
    if self.time_bias == "on" and not has_times:
      raise OptionsError(f"time_bias=on: dataset {dataset.name!r} "
                         f"({self.data_dir}) has no timestamps")
    return dataclasses.replace(_MODEL, **{
        **self._shared_fields(_MODEL),
        "time_bias": self.time_bias == "on" or (self.time_bias == "auto" and
                                                has_times)})

  def train_config(self, alpha: float) -> HSTUTrainConfig:
    return dataclasses.replace(_TRAIN, **{
        **self._shared_fields(_TRAIN), "stochastic_length_alpha": alpha})

  def alphas(self) -> list:
    try:
      alphas = [float(a) for a in self.stochastic_length_alphas]
    except ValueError as e:
      raise OptionsError(f"stochastic_length_alphas="
                         f"{self.stochastic_length_alphas}: {e}") from e
    bad = [a for a in alphas if not 0.0 <= a <= 2.0]
    if not alphas or bad:
      raise OptionsError(f"stochastic_length_alphas="
                         f"{self.stochastic_length_alphas}: each must be 0 "
                         "(off) or in (0, 2]")
    return alphas


def compare_hstu(options: HSTUComparisonOptions) -> dict:
  """Trains and scores every method (module doc); returns the report."""
  alphas = options.alphas()
  if options.sasrec and options.sasrec_dir:
    raise OptionsError(f"sasrec_dir={options.sasrec_dir} scores a saved "
                       "SASRec: not with sasrec (it trains one)")
  dataset = load_dataset(options.data_dir)
  config = options.hstu_config(dataset)
  split = leave_one_out(dataset.histories, dataset.timestamps
                        if config.time_bias else None)
  both = {s: split.inputs_and_targets(s) for s in ("valid", "test")}
  report = {}

  def score_all(name, scorer, times=False):
    """times: the scorer also takes the inputs' timestamps."""
    report.setdefault(name, {}).update(
        {s: evaluate_scorer(scorer, *both[s], times=split.input_times(s)
                            if times else None) for s in both})
    logging.info("%s: %s", name, report[name])

  score_all("most_popular", MostPopular(split.train, dataset.num_items).score)
  if options.sasrec_dir:
    with refused_as("sasrec_dir"):
      score_all("sasrec", load_sasrec(options.sasrec_dir,
                                      dataset.num_items).score)
    report["sasrec"]["model_dir"] = options.sasrec_dir
  elif options.sasrec:
    start = time.time()
    sasrec, info = fit_sasrec(split, SASRecConfig(num_items=dataset.num_items))
    score_all("sasrec", sasrec.score)
    report["sasrec"].update(info, train_seconds=round(time.time() - start, 1))
  if options.generative_saved_model:
    from tf_genrec.evaluation.saved_model_recall import evaluate_saved_model
    report["generative"] = {"test": evaluate_saved_model(
        options.generative_saved_model, *both["test"], options.beam_width,
        top_n=max(DEFAULT_RECALL_KS))}
    logging.info("generative: %s", report["generative"])

  chosen, best = None, -1.0
  for alpha in alphas:
    train_config = options.train_config(alpha)
    start = time.time()
    model, history = train_hstu_retrieval(
        split.train, *both["valid"], dataset.num_items, config, train_config,
        train_times=split.train_times, valid_times=split.input_times("valid"))
    name = f"hstu_sl{alpha:g}" if alpha else "hstu"
    score_all(name, model.score, times=True)
    report[name].update(
        hstu=dataclasses.asdict(config), train=dataclasses.asdict(train_config),
        epochs_run=len(history), train_seconds=round(time.time() - start, 1))
    if report[name]["valid"]["ndcg@10"] > best:
      chosen, best = (name, model), report[name]["valid"]["ndcg@10"]
  report["chosen_hstu"] = chosen[0]
  if options.model_output:
    save_hstu_retrieval(chosen[1], options.model_output)
    report["model"] = options.model_output
  os.makedirs(os.path.dirname(os.path.abspath(options.output)), exist_ok=True)
  with open(options.output, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  return report
