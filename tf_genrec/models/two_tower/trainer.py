"""Trains a TwoTower on next-item examples with in-batch softmax.

Every prefix of a training history predicts its next item (the user tower
sees the last max_len items of the prefix); validation Recall@50 over the
full catalogue picks the epoch, as SASRec's early stopping does.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.data.amazon import item_popularity
from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.evaluation.early_stopping import ValidationEarlyStopping
from tf_genrec.models.two_tower.model import (TwoTower, TwoTowerConfig, build,
                                              right_pad)


@dataclasses.dataclass(frozen=True)
class TwoTowerTrainConfig:
  learning_rate: float = 2e-3
  batch_size: int = 512
  max_epochs: int = 40
  patience: int = 3  # Epochs without validation improvement.
  select_metric: str = "recall@50"
  seed: int = 0

  def __post_init__(self):
    for name in ("batch_size", "max_epochs", "patience"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TwoTowerTrainConfig.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.learning_rate <= 0:
      raise ValueError(f"TwoTowerTrainConfig.learning_rate must be > 0, got "
                       f"{self.learning_rate}")


def next_item_examples(histories, max_len):
  """(history [E, max_len] right-padded, lengths [E], targets [E])."""
  prefixes, targets = [], []
  for h in histories:
    for t in range(1, len(h)):
      prefixes.append(h[max(0, t - max_len):t])
      targets.append(h[t])
  history, lengths = right_pad(prefixes, max_len)
  return history, lengths, np.asarray(targets, np.int64)


def train_two_tower(train_histories, valid_histories, valid_targets,
                    config: TwoTowerConfig, train: TwoTowerTrainConfig):
  """Returns (model with the best validation weights, per-epoch records)."""
  tf.keras.utils.set_random_seed(train.seed)
  rng = np.random.default_rng(train.seed)
  history, lengths, targets = next_item_examples(train_histories,
                                                 config.max_len)
  if not len(targets):
    raise ValueError("train_histories: no history has >= 2 items")
  counts = item_popularity(train_histories, config.num_items)
  log_q = np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)
  model = TwoTower(config)
  build(model)
  optimizer = tf.keras.optimizers.Adam(train.learning_rate)

  @tf.function(reduce_retracing=True)
  def step(h, n, y):
    with tf.GradientTape() as tape:
      loss = model.in_batch_loss(h, n, y, tf.gather(log_q, y))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  stopper = ValidationEarlyStopping(train.select_metric, train.patience)
  records = []
  progress = tqdm(range(train.max_epochs), desc="two_tower", unit="epoch")
  for epoch in progress:
    order = rng.permutation(len(targets))
    losses = []
    for start in range(0, len(order), train.batch_size):
      rows = order[start:start + train.batch_size]
      losses.append(float(step(tf.constant(history[rows]),
                               tf.constant(lengths[rows]),
                               tf.constant(targets[rows]))))
    metrics = evaluate_scorer(model.score, valid_histories, valid_targets)
    records.append({"epoch": epoch, "loss": float(np.mean(losses)),
                    "valid": metrics})
    logging.info("epoch %d loss %.4f valid %s", epoch, records[-1]["loss"],
                 metrics)
    progress.set_postfix(loss=f"{records[-1]['loss']:.3f}",
                         **{train.select_metric:
                            f"{metrics[train.select_metric]:.4f}"})
    if stopper.update(epoch, metrics, model):
      break
  stopper.restore_best(model)
  return model, records
