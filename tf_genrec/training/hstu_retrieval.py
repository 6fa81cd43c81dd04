"""Training HSTU retrieval on leave-one-out histories (sampled softmax).

Every position of a training history predicts the next item; validation
picks the epoch (early stopping on NDCG@10), the test split is never seen.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.evaluation.early_stopping import ValidationEarlyStopping
from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.retrieval import (HSTURetrieval, pad_right,
                                             sampled_softmax_loss)
from tf_genrec.models.hstu.stochastic_length import stochastic_length


@dataclasses.dataclass(frozen=True)
class HSTUTrainConfig:
  learning_rate: float = 1e-3
  batch_size: int = 128
  # Uniform negatives shared by a batch; 0: every item (full softmax, the
  # better on validation than 512 sampled ones, docs/quality.md).
  num_negatives: int = 0
  temperature: float = 0.05
  max_epochs: int = 100
  eval_every: int = 2  # Epochs between validation passes.
  patience: int = 5  # Validation passes without improvement.
  stochastic_length_alpha: float = 0.0  # 0: off; else in (0, 2].
  seed: int = 0

  def __post_init__(self):
    for name in ("batch_size", "max_epochs", "eval_every", "patience"):
      if getattr(self, name) < 1:
        raise ValueError(f"HSTUTrainConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}")
    if self.num_negatives < 0:
      raise ValueError("HSTUTrainConfig.num_negatives must be >= 0 (0: "
                       f"every item), got {self.num_negatives}")
    if self.temperature <= 0 or self.learning_rate <= 0:
      raise ValueError("HSTUTrainConfig.temperature and learning_rate must "
                       f"be > 0, got {self.temperature}, {self.learning_rate}")
    if not 0 <= self.stochastic_length_alpha <= 2:
      raise ValueError("HSTUTrainConfig.stochastic_length_alpha must be in "
                       f"[0, 2], got {self.stochastic_length_alpha}")


def training_pairs(histories, max_len, alpha=0.0, rng=None, times=None):
  """Inputs s[:-1] and next-item targets s[1:] as right-padded tokens, each
  history first through stochastic length when alpha > 0; with times
  (parallel to histories) also the inputs' right-padded int64 timestamps,
  else None."""
  rows = [i for i, h in enumerate(histories) if len(h) >= 2]
  seqs = [histories[i] for i in rows]
  stamps = None if times is None else [times[i] for i in rows]
  if alpha:
    for j, seq in enumerate(seqs):
      if stamps is None:
        seqs[j] = stochastic_length(seq, max_len, alpha, rng)
      else:
        seqs[j], stamps[j] = stochastic_length(seq, max_len, alpha, rng,
                                               stamps[j])
  seqs = [np.asarray(s)[-(max_len + 1):] for s in seqs]
  input_times = None if stamps is None else pad_right(
      [np.asarray(t)[-(max_len + 1):-1] for t in stamps], max_len,
      dtype=np.int64)
  return (pad_right([s[:-1] for s in seqs], max_len, offset=1),
          pad_right([s[1:] for s in seqs], max_len, offset=1), input_times)


def train_hstu_retrieval(train_histories, valid_histories, valid_targets,
                         num_items, config: HSTUConfig,
                         train_config: HSTUTrainConfig,
                         select_metric="ndcg@10", train_times=None,
                         valid_times=None):
  """-> (model with the best validation weights, per-epoch records).

  train_times / valid_times: timestamps parallel to the histories, which
  config.time_bias needs (and which are unused without it).
  """
  tc = train_config
  tf.keras.utils.set_random_seed(tc.seed)
  rng = np.random.default_rng(tc.seed)
  model = HSTURetrieval(config, num_items)
  if not any(len(h) >= 2 for h in train_histories):
    raise ValueError("train_histories: no history has >= 2 items")
  if not config.time_bias:
    train_times = valid_times = None
  elif train_times is None or valid_times is None:
    raise ValueError("HSTUConfig.time_bias needs train_times and "
                     "valid_times")
  model.build_weights()
  optimizer = tf.keras.optimizers.Adam(tc.learning_rate, beta_2=0.98)

  @tf.function(reduce_retracing=True)
  def train_step(x, y, times, negatives):
    with tf.GradientTape() as tape:
      states = model(x, times, training=True)
      where = tf.where(y > 0)
      loss = sampled_softmax_loss(
          tf.gather_nd(states, where), tf.gather_nd(y, where) - 1, negatives,
          model.item_vectors, tc.temperature)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  stopper, history = ValidationEarlyStopping(select_metric, tc.patience), []
  progress = tqdm(range(tc.max_epochs), desc="hstu", unit="epoch")
  every_item = np.arange(num_items)  # The negatives of a full softmax.
  for epoch in progress:
    # Stochastic length draws new subsamples every epoch.
    inputs, targets, times = training_pairs(
        train_histories, config.max_len, tc.stochastic_length_alpha, rng,
        train_times)
    order = rng.permutation(len(inputs))
    losses = []
    for start in range(0, len(inputs), tc.batch_size):
      rows = order[start:start + tc.batch_size]
      # Trim trailing all-pad columns: attention cost follows the batch's
      # longest sequence (what stochastic length shortens).
      width = max(int((inputs[rows] > 0).sum(1).max()), 1)
      negatives = (rng.integers(0, num_items, tc.num_negatives)
                   if tc.num_negatives else every_item)
      losses.append(float(train_step(
          tf.constant(inputs[rows, :width]), tf.constant(targets[rows, :width]),
          None if times is None else tf.constant(times[rows, :width]),
          tf.constant(negatives, tf.int32))))
    record = {"epoch": epoch, "loss": float(np.mean(losses))}
    history.append(record)
    if (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.max_epochs:
      record["valid"] = evaluate_scorer(model.score, valid_histories,
                                        valid_targets, times=valid_times)
      logging.info("epoch %d loss %.4f valid %s", epoch, record["loss"],
                   record["valid"])
      progress.set_postfix(
          loss=f"{record['loss']:.3f}",
          **{select_metric: f"{record['valid'][select_metric]:.4f}"})
      if stopper.update(epoch, record["valid"], model):
        break
  stopper.restore_best(model)
  return model, history
