"""Issue #19's levers: HSTU retrieval variants scored on amazon-scientific
validation only (nothing here reads the test split; `tf-genrec train_hstu`
scores the chosen variant once, beside SASRec).

  .venv/bin/python experiments/hstu_levers.py --output=runs/hstu_levers.json \
      --variant=negatives_all --variant='lr_3e-3={"learning_rate": 3e-3}'

Each variant is a set of overrides of HSTUConfig / HSTUTrainConfig defaults
(VARIANTS below); results are appended to --output as each finishes, and a
re-run skips the variants already there.
"""
import dataclasses
import json
import os
import time

from absl import app, flags, logging

from tf_genrec.data.amazon import load_dataset, leave_one_out
from tf_genrec.training.hstu_comparison import HSTUComparisonOptions
from tf_genrec.training.hstu_retrieval import train_hstu_retrieval

# Round 1 against the defaults of then; round 2 on round 1's winner (every
# item as a negative); round 3 on round 2's (dropout 0.5). Round 3's winner
# became the defaults, so round 4's variants ("round4/...") start from it.
_ALL = {"num_negatives": 0}
_R2 = {**_ALL, "dropout": 0.5}
VARIANTS = {
    "defaults": {},
    "negatives_all": _ALL,
    "temperature_0.1": {"temperature": 0.1},
    "dropout_0.5": {"dropout": 0.5},
    "width_128": {"hidden_dim": 128, "attention_dim": 64, "linear_dim": 64},
    "layers_4": {"num_layers": 4},
    "negatives_all+temperature_0.1": {**_ALL, "temperature": 0.1},
    "negatives_all+dropout_0.5": _R2,
    "negatives_all+dropout_0.5+temperature_0.1": {**_R2, "temperature": 0.1},
    "negatives_all+dropout_0.5+width_128": {
        **_R2, "hidden_dim": 128, "attention_dim": 64, "linear_dim": 64},
    "round4/layers_4": {"num_layers": 4},
    "round4/temperature_0.1": {"temperature": 0.1},
    "round4/heads_4": {"num_heads": 4, "attention_dim": 32, "linear_dim": 32},
    "round4/batch_256": {"batch_size": 256},
}

flags.DEFINE_string("data_dir", "../shared/datasets/amazon-scientific",
                    "Dataset directory.")
flags.DEFINE_string("output", "runs/hstu_levers.json", "JSON results.")
flags.DEFINE_multi_string("variant", list(VARIANTS), "A name from "
                          "VARIANTS, or name=<json overrides>; repeated.")
FLAGS = flags.FLAGS


def _overrides(spec):
  name, _, text = spec.partition("=")
  return name, (json.loads(text) if text else VARIANTS[name])


def _configs(overrides, dataset):
  """(HSTUConfig, HSTUTrainConfig) of the defaults with these overrides
  (train_hstu's options split them the same way)."""
  options = dataclasses.replace(HSTUComparisonOptions(), **overrides)
  return options.hstu_config(dataset), options.train_config(alpha=0.0)


def main(_):
  results = {}
  if os.path.exists(FLAGS.output):
    with open(FLAGS.output, encoding="utf-8") as f:
      results = json.load(f)
  dataset = load_dataset(FLAGS.data_dir)
  split = leave_one_out(dataset.histories, dataset.timestamps)
  for name, overrides in map(_overrides, FLAGS.variant):
    if name in results:
      continue
    config, train_config = _configs(overrides, dataset)
    start = time.time()
    _, history = train_hstu_retrieval(
        split.train, *split.inputs_and_targets("valid"), dataset.num_items,
        config, train_config, train_times=split.train_times,
        valid_times=split.input_times("valid"))
    best = max((r for r in history if "valid" in r),
               key=lambda r: r["valid"]["ndcg@10"])
    results[name] = {"overrides": overrides, "valid": best["valid"],
                     "best_epoch": best["epoch"], "epochs_run": len(history),
                     "train_seconds": round(time.time() - start, 1)}
    logging.info("%s: %s", name, results[name])
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)),
                exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  app.run(main)
