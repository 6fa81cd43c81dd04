"""TwoTower: user tower over the click history, item tower over item ids.

Both towers end in L2-normalised vectors; a user's score for an item is their
dot product over a temperature. Training is the in-batch softmax of TF
Recommenders' Retrieval task: each example's next item is the positive and
the other examples' items in the batch are the negatives, with the
log-frequency (logQ) correction for how often an item shows up as an in-batch
negative.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_genrec.models.keras_io import load_model, save_model


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
  num_items: int
  max_len: int = 50  # Most recent history items the user tower sees.
  embedding_dim: int = 64
  hidden_dim: int = 128
  temperature: float = 0.05
  dropout: float = 0.1

  def __post_init__(self):
    for name in ("num_items", "max_len", "embedding_dim", "hidden_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"TwoTowerConfig.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.temperature <= 0:
      raise ValueError(f"TwoTowerConfig.temperature must be > 0, got "
                       f"{self.temperature}")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"TwoTowerConfig.dropout must be in [0, 1), got "
                       f"{self.dropout}")


def recency(history, lengths, num_items):
  """Valid history slots and how many valid slots follow each (0 = latest).

  history [B, T] right-padded item ids, lengths [B]. Ids outside
  [0, num_items) (items the model never saw) are not valid.
  """
  t = tf.shape(history)[1]
  valid = (tf.sequence_mask(lengths, t) & (history >= 0) &
           (history < num_items))
  after = tf.cumsum(tf.cast(valid, tf.int32), axis=1, reverse=True,
                    exclusive=True)
  return valid, after


class TwoTower(tf.keras.Model):

  def __init__(self, config: TwoTowerConfig):
    super().__init__(name="two_tower")
    c = self.config = config
    # Row 0 is padding; item i is row i + 1.
    self.history_emb = tf.keras.layers.Embedding(c.num_items + 1,
                                                 c.embedding_dim)
    self.recency_emb = tf.keras.layers.Embedding(c.max_len, c.embedding_dim)
    self.user_mlp = tf.keras.Sequential([
        tf.keras.layers.Dense(c.hidden_dim, activation="gelu"),
        tf.keras.layers.Dropout(c.dropout),
        tf.keras.layers.Dense(c.embedding_dim)], name="user_mlp")
    self.item_emb = tf.keras.layers.Embedding(c.num_items, c.embedding_dim)
    self.item_mlp = tf.keras.Sequential([
        tf.keras.layers.Dense(c.hidden_dim, activation="gelu"),
        tf.keras.layers.Dense(c.embedding_dim)], name="item_mlp")

  def user_embeddings(self, history, lengths, training=False):
    """[B, T] right-padded history + [B] lengths -> [B, D] unit vectors."""
    c = self.config
    valid, after = recency(history, lengths, c.num_items)
    valid &= after < c.max_len
    tokens = tf.where(valid, history + 1, 0)
    x = self.history_emb(tokens) + self.recency_emb(
        tf.minimum(after, c.max_len - 1))
    mask = tf.cast(valid, x.dtype)[..., tf.newaxis]
    mean = tf.reduce_sum(x * mask, 1) / tf.maximum(tf.reduce_sum(mask, 1),
                                                   1.0)
    latest = tf.reduce_sum(
        x * tf.cast(valid & (after == 0), x.dtype)[..., tf.newaxis], 1)
    out = self.user_mlp(tf.concat([mean, latest], -1), training=training)
    return tf.math.l2_normalize(out, -1)

  def item_embeddings(self, item_ids=None):
    """[M] item ids (default: every item) -> [M, D] unit vectors."""
    if item_ids is None:
      item_ids = tf.range(self.config.num_items)
    out = self.item_mlp(self.item_emb(item_ids))
    return tf.math.l2_normalize(out, -1)

  def call(self, inputs, training=False):
    history, lengths = inputs
    return self.user_embeddings(history, lengths, training)

  def in_batch_loss(self, history, lengths, targets, log_q, training=True):
    """Softmax over the batch's target items; log_q [B] = log sampling
    probability of each target, subtracted from its column's logits."""
    users = self.user_embeddings(history, lengths, training)
    items = self.item_embeddings(targets)
    logits = tf.matmul(users, items, transpose_b=True)
    logits = logits / self.config.temperature - log_q[tf.newaxis, :]
    # The same item twice in a batch is not a negative of itself.
    same = targets[:, tf.newaxis] == targets[tf.newaxis, :]
    logits = tf.where(same & ~tf.eye(tf.shape(targets)[0], dtype=tf.bool),
                      -1e9, logits)
    labels = tf.range(tf.shape(targets)[0])
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))

  def score(self, histories):
    """Python histories -> [len, num_items] scores (evaluate_scorer)."""
    history, lengths = right_pad(histories, self.config.max_len)
    users = self.user_embeddings(tf.constant(history), tf.constant(lengths))
    return tf.matmul(users, self.item_embeddings(), transpose_b=True).numpy()


def right_pad(histories, max_len):
  """The last max_len items of each history, right-padded with -1."""
  out = np.full((len(histories), max_len), -1, np.int64)
  lengths = np.zeros(len(histories), np.int32)
  for row, h in enumerate(histories):
    h = np.asarray(h, np.int64)[-max_len:]
    out[row, :len(h)] = h
    lengths[row] = len(h)
  return out, lengths


def build(model: TwoTower):
  model((tf.zeros([1, 1], tf.int64), tf.ones([1], tf.int32)))
  model.item_embeddings(tf.zeros([1], tf.int32))


def save_two_tower(model: TwoTower, model_dir: str):
  """config.json + weights.npz (Keras weight order) in model_dir."""
  save_model(model, model_dir)


def load_two_tower(model_dir: str) -> TwoTower:
  return load_model(model_dir, TwoTower, TwoTowerConfig, build)
