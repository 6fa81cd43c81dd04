"""A stack of HSTU layers over a right-padded token sequence, and M-FALCON.

M-FALCON (Zhai et al. 2024, sec. 3.4): to rank C candidates for one user,
the history is encoded once and each layer's keys and values are cached;
candidates then go through the layers in micro-batches of m. Each candidate
attends to the cached history and to itself, never to another candidate, and
sits at the position (and time) right after the history, so its score equals
the score of the history with that candidate alone appended, while the cost
grows linearly in C instead of C full passes.
"""
from typing import List, NamedTuple, Optional

import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.layer import HSTULayer
from tf_genrec.models.hstu.relative_bias import bias_indices


class HistoryCache(NamedTuple):
  """Per layer K, V [B, T, H, d] of an encoded history, and its tokens'
  positions [B, T], times [B, T] (None without time bias), valid [B, T]."""
  keys: List[tf.Tensor]
  values: List[tf.Tensor]
  positions: tf.Tensor
  times: Optional[tf.Tensor]
  valid: tf.Tensor


class HSTUEncoder(tf.keras.layers.Layer):

  def __init__(self, config: HSTUConfig, **kwargs):
    super().__init__(**kwargs)
    self.config = config
    self.hstu_layers = [HSTULayer(config, name=f"layer_{i}")
                        for i in range(config.num_layers)]

  def call(self, x, valid, times=None, training=False):
    """x [B, T, D], valid [B, T] bool (right-padded), times [B, T] int64 or
    None -> [B, T, D]; position t attends to valid positions <= t."""
    return self.encode_history(x, valid, times, training)[0]

  def encode_history(self, x, valid, times=None, training=False):
    """Like call, and also returns the HistoryCache of every layer."""
    t = tf.shape(x)[1]
    positions = tf.broadcast_to(tf.range(t)[tf.newaxis], tf.shape(valid))
    position_index, time_bucket = bias_indices(self.config, positions,
                                               positions, times, times)
    causal = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0)
    mask = causal[tf.newaxis] & valid[:, tf.newaxis, :]
    keys, values = [], []
    for layer in self.hstu_layers:
      x, k, v = layer(x, position_index, time_bucket, mask, training=training,
                      return_kv=True)
      keys.append(k)
      values.append(v)
    return x, HistoryCache(keys, values, positions, times, valid)

  def score_candidates(self, cache: HistoryCache, x, position, time=None):
    """Candidate tokens x [B, M, D] at sequence position [B] (and time [B])
    through the layers over the cached history -> [B, M, D]."""
    position_index, time_bucket = bias_indices(
        self.config, position[:, tf.newaxis], cache.positions,
        None if time is None else time[:, tf.newaxis], cache.times)
    history_mask = cache.valid[:, tf.newaxis, :]
    # A candidate's bias to itself: distance 0, time gap 0.
    zero = tf.zeros_like(position)[:, tf.newaxis, tf.newaxis]
    self_mask = tf.ones_like(zero, tf.bool)
    for layer, k_h, v_h in zip(self.hstu_layers, cache.keys, cache.values):
      u, v, q, k = layer.project(x)
      rab = layer.rab
      a_h = layer.weights_of(tf.einsum("bmhd,bjhd->bhmj", q, k_h),
                             rab(position_index, time_bucket), history_mask)
      self_scores = tf.einsum("bmhd,bmhd->bhm", q, k)[..., tf.newaxis]
      a_self = layer.weights_of(
          self_scores, rab(zero, zero if self.config.time_bias else None),
          self_mask)[..., 0]
      attended = (tf.einsum("bhmj,bjhd->bmhd", a_h, v_h) +
                  tf.einsum("bhm,bmhd->bmhd", a_self, v))
      x = layer.output(x, attended, u)
    return x

  def m_falcon(self, cache: HistoryCache, x, position, time=None,
               micro_batch=64):
    """score_candidates over C candidates x [B, C, D] in micro-batches of m
    (one tf.map_fn step each, so peak memory follows m, not C)."""
    b, c, d = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    chunks = (c + micro_batch - 1) // micro_batch
    padded = tf.pad(x, [[0, 0], [0, chunks * micro_batch - c], [0, 0]])
    steps = tf.transpose(tf.reshape(padded, [b, chunks, micro_batch, d]),
                         [1, 0, 2, 3])
    out = tf.map_fn(
        lambda chunk: self.score_candidates(cache, chunk, position, time),
        steps, fn_output_signature=tf.TensorSpec([None, None, None], x.dtype))
    out = tf.reshape(tf.transpose(out, [1, 0, 2, 3]), [b, -1, d])
    return out[:, :c]
