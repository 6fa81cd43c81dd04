"""tf-genrec train_hstu: HSTU retrieval on amazon-scientific, with the
baselines in the same run.

  tf-genrec train_hstu --sasrec --stochastic_length_alphas=0,1.6 \
    --model_output=runs/hstu/model --output=runs/hstu/report.json

Leave-one-out, full catalogue. Most-popular counts the training histories;
SASRec (--sasrec) and one HSTU per stochastic-length alpha (0 = off) train
on the training histories and early-stop on validation NDCG@10; the HSTU
variant with the best validation NDCG@10 is the chosen one (saved with
--model_output). Every method then scores the test split once.
--generative_saved_model adds an exported generative recall model, scored
through its serving signature on the same users.
"""
import dataclasses
import json
import os
import time

from absl import app, flags, logging

from tf_genrec.data.amazon import (DEFAULT_DATA_DIR, leave_one_out,
                                   load_dataset)
from tf_genrec.evaluation.baselines import MostPopular, evaluate_scorer
from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.retrieval import save_hstu_retrieval
from tf_genrec.models.sasrec.model import SASRecConfig
from tf_genrec.models.sasrec.trainer import fit_sasrec
from tf_genrec.training.hstu_retrieval import (HSTUTrainConfig,
                                               train_hstu_retrieval)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR,
                    "Dataset directory; relative paths are from the repo root.")
flags.DEFINE_string("output", "runs/hstu/report.json", "JSON report.")
flags.DEFINE_string("model_output", None, "Saves the chosen HSTU "
                    "(config.json + weights.npz) for `tf-genrec export "
                    "--graph=hstu_retrieval --checkpoint_dir=...`.")
flags.DEFINE_integer("max_len", 50, "Most recent items HSTU sees (N).")
flags.DEFINE_integer("hidden_dim", 64, "Model width D.")
flags.DEFINE_integer("num_layers", 2, "HSTU layers.")
flags.DEFINE_integer("num_heads", 2, "Attention heads.")
flags.DEFINE_integer("attention_dim", 32, "Per-head Q/K size.")
flags.DEFINE_integer("linear_dim", 32, "Per-head U/V size.")
flags.DEFINE_float("dropout", 0.2, "Dropout.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_integer("batch_size", 128, "Training batch size (users).")
flags.DEFINE_integer("num_negatives", 512, "Uniform negatives per batch.")
flags.DEFINE_float("temperature", 0.05, "Softmax temperature on cosines.")
flags.DEFINE_integer("max_epochs", 100, "Upper bound on epochs.")
flags.DEFINE_integer("eval_every", 2, "Epochs between validation passes.")
flags.DEFINE_integer("patience", 5, "Validation passes without improvement.")
flags.DEFINE_list("stochastic_length_alphas", ["0"], "One HSTU per alpha; "
                  "0 = stochastic length off, else in (0, 2].")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_bool("sasrec", False, "Also train + score SASRec.")
flags.DEFINE_string("generative_saved_model", None, "Also score this "
                    "exported generative recall model (a version dir).")
flags.DEFINE_integer("beam_width", 256, "Beam width of the generative model.")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  split = leave_one_out(dataset.histories)
  both = {s: split.inputs_and_targets(s) for s in ("valid", "test")}
  report = {}

  def score_all(name, scorer):
    report.setdefault(name, {}).update(
        {s: evaluate_scorer(scorer, *both[s]) for s in both})
    logging.info("%s: %s", name, report[name])

  score_all("most_popular", MostPopular(split.train, dataset.num_items).score)
  if FLAGS.sasrec:
    start = time.time()
    sasrec, info = fit_sasrec(split, SASRecConfig(num_items=dataset.num_items))
    score_all("sasrec", sasrec.score)
    report["sasrec"].update(info, train_seconds=round(time.time() - start, 1))
  if FLAGS.generative_saved_model:
    from tf_genrec.evaluation.saved_model_recall import evaluate_saved_model
    report["generative"] = {s: evaluate_saved_model(
        FLAGS.generative_saved_model, *both[s], FLAGS.beam_width)
                            for s in both}

  config = HSTUConfig(
      max_len=FLAGS.max_len, hidden_dim=FLAGS.hidden_dim,
      num_layers=FLAGS.num_layers, num_heads=FLAGS.num_heads,
      attention_dim=FLAGS.attention_dim, linear_dim=FLAGS.linear_dim,
      dropout=FLAGS.dropout)  # amazon-scientific has no timestamps
  chosen, best = None, -1.0
  for alpha in map(float, FLAGS.stochastic_length_alphas):
    train_config = HSTUTrainConfig(
        learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
        num_negatives=FLAGS.num_negatives, temperature=FLAGS.temperature,
        max_epochs=FLAGS.max_epochs, eval_every=FLAGS.eval_every,
        patience=FLAGS.patience, stochastic_length_alpha=alpha,
        seed=FLAGS.seed)
    start = time.time()
    model, history = train_hstu_retrieval(
        split.train, *both["valid"], dataset.num_items, config, train_config)
    name = f"hstu_sl{alpha:g}" if alpha else "hstu"
    score_all(name, model.score)
    report[name].update(
        hstu=dataclasses.asdict(config), train=dataclasses.asdict(train_config),
        epochs_run=len(history), train_seconds=round(time.time() - start, 1))
    if report[name]["valid"]["ndcg@10"] > best:
      chosen, best = (name, model), report[name]["valid"]["ndcg@10"]
  report["chosen_hstu"] = chosen[0]
  if FLAGS.model_output:
    save_hstu_retrieval(chosen[1], FLAGS.model_output)
    report["model"] = FLAGS.model_output
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
