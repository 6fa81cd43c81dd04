"""Relative attention bias of HSTU: relative position + bucketed time gap."""
import math

import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig


def bias_indices(config: HSTUConfig, query_positions, key_positions,
                 query_times=None, key_times=None):
  """Table indices of the bias between every query and key token.

  Args:
    query_positions: [B, Tq] int32 sequence positions of the queries.
    key_positions: [B, Tk] int32.
    query_times, key_times: [B, Tq] / [B, Tk] int64 seconds, or None when the
      config has no time bias.
  Returns:
    (position index [B, Tq, Tk], time bucket [B, Tq, Tk] or None). Positions
    count back from the query (0 = itself) clipped to [0, max_len - 1]; time
    buckets grow with log(1 + |gap|), so recent gaps are told apart finely
    and old ones coarsely, clipped to num_time_buckets - 1.
  """
  distance = query_positions[:, :, None] - key_positions[:, None, :]
  position = tf.clip_by_value(distance, 0, config.max_len - 1)
  if not config.time_bias:
    return position, None
  if query_times is None or key_times is None:
    raise ValueError("HSTUConfig.time_bias needs query and key timestamps")
  gap = tf.abs(query_times[:, :, None] - key_times[:, None, :])
  log_gap = tf.math.log1p(tf.cast(gap, tf.float32)) / math.log(
      config.time_bucket_base)
  bucket = tf.minimum(tf.cast(tf.floor(log_gap), tf.int32),
                      config.num_time_buckets - 1)
  return position, bucket


class RelativeAttentionBias(tf.keras.layers.Layer):
  """rab(i, j) = w_pos[position index] (+ w_time[time bucket]): one learned
  scalar per index, shared by the heads of a layer."""

  def __init__(self, config: HSTUConfig, **kwargs):
    super().__init__(**kwargs)
    self._config = config
    self.position_weights = self.add_weight(
        name="position", shape=[config.max_len], initializer="zeros")
    self.time_weights = (self.add_weight(
        name="time", shape=[config.num_time_buckets], initializer="zeros")
                         if config.time_bias else None)

  def call(self, position_index, time_bucket=None):
    bias = tf.gather(self.position_weights, position_index)
    if self.time_weights is not None:
      bias += tf.gather(self.time_weights, time_bucket)
    return bias
