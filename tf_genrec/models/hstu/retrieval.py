"""HSTU retrieval: next-item prediction over L2-normalised item embeddings.

Item id i is token i + 1 (0 pads); sequences are right-padded, oldest first,
so a row's last valid position is lengths - 1. The user vector is the
L2-normalised encoder state there; an item's score is the cosine with its
L2-normalised embedding (the same table embeds the input items), so serving
is maximum inner-product search over the catalogue (tf_genrec/models/top_k.py).
"""
import dataclasses
import numpy as np
import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.encoder import HSTUEncoder
from tf_genrec.models.hstu.io import read_config, restore_weights, save_model


def pad_right(sequences, max_len: int, offset: int = 0,
              dtype=np.int32) -> np.ndarray:
  """The last max_len entries (+ offset) of each sequence, right-padded 0."""
  out = np.zeros((len(sequences), max_len), dtype)
  for row, seq in enumerate(sequences):
    seq = np.asarray(seq)[-max_len:]
    out[row, :len(seq)] = seq + offset
  return out


class HSTURetrieval(tf.keras.Model):

  def __init__(self, config: HSTUConfig, num_items: int):
    super().__init__(name="hstu_retrieval")
    if num_items < 1:
      raise ValueError(f"num_items must be >= 1, got {num_items}")
    self.config, self.num_items = config, num_items
    self.item_emb = tf.keras.layers.Embedding(num_items + 1, config.hidden_dim)
    self.input_dropout = tf.keras.layers.Dropout(config.dropout)
    self.encoder = HSTUEncoder(config, name="encoder")
    self._catalogue_scores = tf.function(
        lambda tokens, times: tf.matmul(self.user_vectors(tokens, times),
                                        self.item_vectors(), transpose_b=True),
        reduce_retracing=True)

  def call(self, tokens, times=None, training=False):
    """tokens [B, T] (0 = pad, right-padded), times [B, T] int64 seconds
    (needed with config.time_bias, else ignored) -> unit states [B, T, D]."""
    x = self.item_emb(tokens) * (self.config.hidden_dim ** 0.5)
    x = self.input_dropout(x, training=training)
    states = self.encoder(x, tokens > 0, times, training=training)
    return tf.math.l2_normalize(states, axis=-1)

  def user_vectors(self, tokens, times=None):
    """[B, T] right-padded tokens -> [B, D] unit states at the last item
    (zeros for an empty row)."""
    lengths = tf.reduce_sum(tf.cast(tokens > 0, tf.int32), axis=1)
    states = self(tokens, times)
    last = tf.gather(states, tf.maximum(lengths - 1, 0), batch_dims=1)
    return last * tf.cast(lengths > 0, last.dtype)[:, tf.newaxis]

  def item_vectors(self, rows=None):
    """Unit embeddings of item rows (item ids), all items when rows is None."""
    table = self.item_emb.embeddings[1:]
    if rows is not None:
      table = tf.gather(table, rows)
    return tf.math.l2_normalize(table, axis=-1)

  def score(self, histories, times=None):
    """Histories (item ids, oldest first) and, with config.time_bias, their
    timestamps (parallel) -> [len, num_items] cosines."""
    tokens = pad_right(histories, self.config.max_len, offset=1)
    if self.config.time_bias:
      if times is None:
        raise ValueError("HSTUConfig.time_bias: score needs the histories' "
                         "timestamps")
      times = tf.constant(pad_right(times, self.config.max_len,
                                    dtype=np.int64))
    else:
      times = None  # No time bias: the times would only cost a retrace.
    return self._catalogue_scores(tf.constant(tokens), times).numpy()

  def build_weights(self):
    """Creates the weights (one tiny forward pass)."""
    self.score([[0]], [[0]])


def sampled_softmax_loss(users, targets, negatives, item_vectors,
                         temperature):
  """Softmax over the target, the batch's other targets and shared uniform
  negatives, scaled by 1 / temperature; a negative equal to the row's target
  (an accidental hit) is masked out.

  Args:
    users: [P, D] unit user states, one per target.
    targets: [P] int item ids.
    negatives: [R] int item ids sampled uniformly, or every item.
    item_vectors: callable, item ids -> unit vectors.
  """
  in_batch = tf.matmul(users, item_vectors(targets), transpose_b=True)
  hit = targets[:, tf.newaxis] == targets[tf.newaxis, :]
  in_batch = tf.where(hit & ~tf.eye(tf.size(targets), dtype=tf.bool),
                      float("-inf"), in_batch)
  uniform = tf.matmul(users, item_vectors(negatives), transpose_b=True)
  uniform = tf.where(targets[:, tf.newaxis] == negatives[tf.newaxis, :],
                     float("-inf"), uniform)
  logits = tf.concat([in_batch, uniform], axis=1) / temperature
  labels = tf.range(tf.size(targets))
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=labels, logits=logits))


def save_hstu_retrieval(model: HSTURetrieval, model_dir: str):
  save_model(model, model_dir, {"num_items": model.num_items,
                                "hstu": dataclasses.asdict(model.config)})


def load_hstu_retrieval(model_dir: str) -> HSTURetrieval:
  saved = read_config(model_dir)
  model = HSTURetrieval(HSTUConfig(**saved["hstu"]), saved["num_items"])
  model.build_weights()
  return restore_weights(model, model_dir)
