"""SASRec training: full-catalogue softmax, validation early stopping, and
the refit protocol (fit_sasrec)."""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.evaluation.early_stopping import ValidationEarlyStopping
from tf_genrec.models.sasrec.model import SASRec, SASRecConfig, pad_left


def _training_pairs(train_histories, max_len):
  """Per user: inputs s[:-1] and next-item targets s[1:] (as tokens)."""
  seqs = [np.asarray(h) + 1 for h in train_histories if len(h) >= 2]
  return (pad_left([s[:-1] for s in seqs], max_len),
          pad_left([s[1:] for s in seqs], max_len))


def train_sasrec(train_histories, valid_histories, valid_targets,
                 config: SASRecConfig, select_metric: str = "ndcg@10"):
  """Trains on training histories; early-stops on the validation split only.

  With valid_histories None (a refit whose epochs were chosen on validation
  before) it trains exactly config.max_epochs and keeps the final weights.
  Returns (model with the best validation weights, history of dicts).
  """
  tf.keras.utils.set_random_seed(config.seed)
  rng = np.random.default_rng(config.seed)
  model = SASRec(config)
  inputs, targets = _training_pairs(train_histories, config.max_len)
  if not len(inputs):
    raise ValueError("train_histories: no history has >= 2 items")
  model(tf.constant(inputs[:1]))
  optimizer = tf.keras.optimizers.Adam(config.learning_rate, beta_2=0.98)

  @tf.function(reduce_retracing=True)
  def train_step(x, y):
    with tf.GradientTape() as tape:
      hidden = model(x, training=True)
      # Logits only where there is a target: most positions are padding.
      where = tf.where(y > 0)
      logits = model.item_logits(tf.gather_nd(hidden, where))
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.gather_nd(y, where) - 1, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  stopper, history = ValidationEarlyStopping(select_metric, config.patience), []
  progress = tqdm(range(config.max_epochs), desc="sasrec", unit="epoch")
  for epoch in progress:
    order = rng.permutation(len(inputs))
    losses = []
    for start in range(0, len(inputs), config.batch_size):
      rows = order[start:start + config.batch_size]
      losses.append(float(train_step(tf.constant(inputs[rows]),
                                     tf.constant(targets[rows]))))
    record = {"epoch": epoch, "loss": float(np.mean(losses))}
    history.append(record)
    if valid_histories is None:
      progress.set_postfix(loss=f"{record['loss']:.3f}")
    elif (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.max_epochs:
      metrics = evaluate_scorer(model.score, valid_histories, valid_targets)
      record["valid"] = metrics
      logging.info("epoch %d loss %.4f valid %s", epoch, record["loss"],
                   metrics)
      progress.set_postfix(loss=f"{record['loss']:.3f}",
                           **{select_metric: f"{metrics[select_metric]:.4f}"})
      if stopper.update(epoch, metrics, model):
        break
  stopper.restore_best(model)
  return model, history


def best_epochs(history, select_metric: str = "ndcg@10") -> int:
  """Epochs up to the best validation pass of a train_sasrec history."""
  passes = [r for r in history if "valid" in r]
  if not passes:
    raise ValueError("history has no validation pass")
  best = max(passes, key=lambda r: r["valid"][select_metric])
  return best["epoch"] + 1


def fit_sasrec(split, config: SASRecConfig, refit: bool = False):
  """SASRec as every leave-one-out protocol fits it.

  Always early-stops on validation first (split.train -> validation
  targets). With refit it then trains a fresh model on h[:-1]
  (split.fit_histories(refit=True)) for exactly the epochs that validation
  chose, the test-time model of the refit protocol. Returns (model, info):
  info has "epochs_run" (the validation run) and, with refit, "refit_epochs".
  """
  model, history = train_sasrec(split.train,
                                *split.inputs_and_targets("valid"), config)
  info = {"epochs_run": len(history)}
  if refit:
    info["refit_epochs"] = best_epochs(history)
    model, _ = train_sasrec(
        split.fit_histories(refit=True), None, None,
        dataclasses.replace(config, max_epochs=info["refit_epochs"]))
  return model, info
