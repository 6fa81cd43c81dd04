"""HSTU layer and encoder against an independent numpy reference of the
paper's equations (loops over query and key tokens, no shared code)."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.encoder import HSTUEncoder


def _silu(x):
  return x / (1.0 + np.exp(-x))


def _layer_norm(x, gamma, beta, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * gamma + beta


def _reference_layer(c, w, x, valid, times):
  """One HSTU layer for one sequence x [T, D] with numpy loops."""
  t_len = x.shape[0]
  h = _silu(_layer_norm(x, w["in_g"], w["in_b"], c.epsilon) @ w["w1"]
            + w["b1"])
  hv, ha = c.num_heads * c.linear_dim, c.num_heads * c.attention_dim
  u, v = h[:, :hv], h[:, hv:2 * hv]
  q, k = h[:, 2 * hv:2 * hv + ha], h[:, 2 * hv + ha:]
  av = np.zeros((t_len, hv))
  for head in range(c.num_heads):
    qh = q[:, head * c.attention_dim:(head + 1) * c.attention_dim]
    kh = k[:, head * c.attention_dim:(head + 1) * c.attention_dim]
    vh = v[:, head * c.linear_dim:(head + 1) * c.linear_dim]
    for i in range(t_len):
      for j in range(i + 1):  # causal
        if not valid[j]:
          continue
        rab = w["pos"][min(i - j, c.max_len - 1)]
        if c.time_bias:
          gap = abs(int(times[i]) - int(times[j]))
          bucket = int(math.floor(math.log(1 + gap) /
                                  math.log(c.time_bucket_base)))
          rab += w["time"][min(bucket, c.num_time_buckets - 1)]
        a = _silu(qh[i] @ kh[j] + rab) / c.max_len
        av[i, head * c.linear_dim:(head + 1) * c.linear_dim] += a * vh[j]
  gated = _layer_norm(av, w["out_g"], w["out_b"], c.epsilon) * u
  return x + gated @ w["w2"] + w["b2"]


def _weights(layer):
  return {"in_g": layer.input_norm.gamma.numpy(),
          "in_b": layer.input_norm.beta.numpy(),
          "w1": layer.f1.kernel.numpy(), "b1": layer.f1.bias.numpy(),
          "pos": layer.rab.position_weights.numpy(),
          "time": (layer.rab.time_weights.numpy()
                   if layer.rab.time_weights is not None else None),
          "out_g": layer.attention_norm.gamma.numpy(),
          "out_b": layer.attention_norm.beta.numpy(),
          "w2": layer.f2.kernel.numpy(), "b2": layer.f2.bias.numpy()}


def _randomise(encoder, seed):
  """Non-trivial values everywhere (biases and norms start at 0/1)."""
  rng = np.random.default_rng(seed)
  for var in encoder.weights:
    var.assign(rng.normal(0, 0.5, var.shape).astype(np.float32))


@pytest.mark.parametrize("time_bias", [False, True])
def test_encoder_matches_numpy_reference(time_bias):
  c = HSTUConfig(max_len=8, hidden_dim=12, num_layers=2, num_heads=2,
                 attention_dim=4, linear_dim=3, dropout=0.3,
                 time_bias=time_bias, num_time_buckets=6)
  rng = np.random.default_rng(0)
  lengths = np.array([7, 4, 1])
  x = rng.normal(size=(3, 7, 12)).astype(np.float32)
  valid = np.arange(7)[None] < lengths[:, None]
  times = np.cumsum(rng.integers(0, 400, (3, 7)), axis=1).astype(np.int64)
  encoder = HSTUEncoder(c)
  encoder(x, valid, times if time_bias else None)
  _randomise(encoder, 1)
  got = encoder(x, valid, times if time_bias else None,
                training=False).numpy()
  for row in range(3):
    expected = x[row].astype(np.float64)
    for layer in encoder.hstu_layers:
      expected = _reference_layer(c, _weights(layer), expected, valid[row],
                                  times[row])
    n = lengths[row]  # Padded positions are never attended; skip them.
    np.testing.assert_allclose(got[row, :n], expected[:n], rtol=1e-4,
                               atol=1e-4)


def test_output_independent_of_padding_width():
  c = HSTUConfig(max_len=10, hidden_dim=8, num_layers=1, num_heads=1,
                 attention_dim=4, linear_dim=4, dropout=0.0)
  x = np.random.default_rng(2).normal(size=(1, 5, 8)).astype(np.float32)
  encoder = HSTUEncoder(c)
  short = encoder(x, np.ones([1, 5], bool)).numpy()
  padded_x = np.concatenate([x, np.full([1, 4, 8], 9.0, np.float32)], 1)
  valid = np.arange(9)[None] < 5
  long = encoder(padded_x, valid).numpy()
  np.testing.assert_allclose(long[:, :5], short, rtol=1e-6, atol=1e-6)


def test_dropout_only_in_training():
  c = HSTUConfig(max_len=6, hidden_dim=8, num_layers=1, dropout=0.5)
  x = tf.random.normal([2, 6, 8], seed=3)
  valid = tf.ones([2, 6], tf.bool)
  encoder = HSTUEncoder(c)
  np.testing.assert_array_equal(encoder(x, valid).numpy(),
                                encoder(x, valid).numpy())
  assert not np.allclose(encoder(x, valid, training=True).numpy(),
                         encoder(x, valid).numpy())


def test_time_bias_needs_timestamps():
  encoder = HSTUEncoder(HSTUConfig(max_len=4, hidden_dim=8, time_bias=True))
  with pytest.raises(ValueError, match="time_bias"):
    encoder(tf.zeros([1, 4, 8]), tf.ones([1, 4], tf.bool))


def test_config_names_the_bad_field():
  with pytest.raises(ValueError, match="num_heads must be >= 1, got 0"):
    HSTUConfig(num_heads=0)
