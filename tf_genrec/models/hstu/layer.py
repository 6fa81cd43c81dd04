"""The HSTU layer (Zhai et al. 2024, eqs. 1-3).

  U, V, Q, K = Split(SiLU(f1(Norm(X))))
  A = SiLU(Q K^T + rab) / N          pointwise, no softmax; causal mask
  Y = X + Dropout(f2(Norm(A V) * U))

Norm(X) before f1 is the usual pre-norm that keeps a residual stack stable;
N is the config's max_len (see HSTUConfig). The layer's pieces (project,
aggregate, output) are public so M-FALCON (encoder.py) can run the same
weights over cached history keys and values.
"""
import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.relative_bias import RelativeAttentionBias


class HSTULayer(tf.keras.layers.Layer):

  def __init__(self, config: HSTUConfig, **kwargs):
    super().__init__(**kwargs)
    c = self._config = config
    self._sizes = [c.num_heads * c.linear_dim] * 2 + [
        c.num_heads * c.attention_dim] * 2
    self.input_norm = tf.keras.layers.LayerNormalization(epsilon=c.epsilon)
    self.f1 = tf.keras.layers.Dense(sum(self._sizes), name="f1")
    self.rab = RelativeAttentionBias(c, name="rab")
    self.attention_norm = tf.keras.layers.LayerNormalization(
        epsilon=c.epsilon)
    self.dropout = tf.keras.layers.Dropout(c.dropout)
    self.f2 = tf.keras.layers.Dense(c.hidden_dim, name="f2")

  def project(self, x):
    """x [..., D] -> U, V [..., H, dv] and Q, K [..., H, dqk]."""
    c = self._config
    h = tf.nn.silu(self.f1(self.input_norm(x)))
    u, v, q, k = tf.split(h, self._sizes, axis=-1)
    heads = lambda t, d: tf.reshape(
        t, tf.concat([tf.shape(t)[:-1], [c.num_heads, d]], 0))
    return (heads(u, c.linear_dim), heads(v, c.linear_dim),
            heads(q, c.attention_dim), heads(k, c.attention_dim))

  def weights_of(self, scores, bias, mask):
    """SiLU(scores + rab) / N where mask holds, else 0.

    scores [B, H, Tq, Tk]; bias, mask [B, Tq, Tk].
    """
    a = tf.nn.silu(scores + bias[:, tf.newaxis]) / float(self._config.max_len)
    return a * tf.cast(mask, a.dtype)[:, tf.newaxis]

  def output(self, x, attended, u, training=False):
    """x [..., D], attended (A V) and u [..., H, dv] -> Y [..., D]."""
    width = self._config.num_heads * self._config.linear_dim
    merge = lambda t: tf.reshape(t, tf.concat([tf.shape(t)[:-2], [width]], 0))
    gated = self.attention_norm(merge(attended)) * merge(u)
    return x + self.f2(self.dropout(gated, training=training))

  def call(self, x, position_index, time_bucket, mask, training=False,
           return_kv=False):
    """x [B, T, D]; bias indices and mask [B, T, T] -> Y [B, T, D] (and with
    return_kv the layer's K, V [B, T, H, d], what M-FALCON caches)."""
    u, v, q, k = self.project(x)
    scores = tf.einsum("bihd,bjhd->bhij", q, k)
    a = self.weights_of(scores, self.rab(position_index, time_bucket), mask)
    attended = tf.einsum("bhij,bjhd->bihd", a, v)
    y = self.output(x, attended, u, training)
    return (y, k, v) if return_kv else y
