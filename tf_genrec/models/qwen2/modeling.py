"""Qwen2-architecture decoder in TensorFlow (float32).

Module and variable names mirror Hugging Face's modeling_qwen2.py
(`model.layers.{i}.self_attn.q_proj`, ...), so checkpoint tensors map onto
variables by name (see checkpoint.py). Every class is a `tf.Module` holding
trainable `tf.Variable`s; `__call__`s work eagerly, inside `tf.function` and
under `tf.GradientTape`.

Batches are LEFT-padded (the prompt contract): positions are derived from the
attention mask, so a padded row produces exactly the hidden states of the same
row without padding.

`dropout` (a call argument, training only, 0 by default) drops embeddings,
attention probabilities and both residual branches, GPT-2 style. It is a
training choice, not architecture, so it is not part of Qwen2Config or the
checkpoint; small recommendation datasets overfit without it.
"""
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tf_genrec.models.qwen2.config import Qwen2Config

# HF's initializer_range: std of freshly initialised weights.
_INIT_STD = 0.02
# Additive bias for masked scores; finite so that fully masked rows (pad
# queries) give a uniform softmax instead of NaN.
MASKED_BIAS = -1e9


class _Init:
  """Initial values: N(0, 0.02) from one seed, a fresh stream per variable, so
  the same seed always builds the same model. seed=None gives zeros, for
  weights about to be overwritten (drawing ~0.5B normals takes tens of seconds
  on a small CPU)."""

  def __init__(self, seed):
    self._seed = seed
    self._count = 0

  def normal(self, shape):
    if self._seed is None:
      return tf.zeros(shape)
    self._count += 1
    return tf.random.stateless_normal(shape, seed=[self._seed, self._count],
                                      stddev=_INIT_STD)


class Linear(tf.Module):
  """y = x @ kernel (+ bias). kernel is [in, out]; HF's weight is [out, in]."""

  def __init__(self, in_features, out_features, bias, init: _Init, name=None):
    super().__init__(name=name)
    self.kernel = tf.Variable(init.normal([in_features, out_features]),
                              name="kernel")
    self.bias = (tf.Variable(tf.zeros([out_features]), name="bias")
                 if bias else None)

  def __call__(self, x):
    y = tf.matmul(x, self.kernel)
    return y if self.bias is None else y + self.bias


class Embedding(tf.Module):
  """Token embedding table, weight [vocab_size, hidden_size]."""

  def __init__(self, vocab_size, hidden_size, init: _Init, name=None):
    super().__init__(name=name)
    self.weight = tf.Variable(init.normal([vocab_size, hidden_size]),
                              name="weight")

  def __call__(self, input_ids):
    return tf.gather(self.weight, input_ids)


def rms_normalize(x, eps):
  """x / RMS(x) over the last axis: RMSNorm before its weight (the fused
  inference path folds the weight into the next kernel)."""
  variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
  return x * tf.math.rsqrt(variance + eps)


class Qwen2RMSNorm(tf.Module):

  def __init__(self, hidden_size, eps, name=None):
    super().__init__(name=name)
    self.weight = tf.Variable(tf.ones([hidden_size]), name="weight")
    self.eps = eps

  def __call__(self, x):
    return self.weight * rms_normalize(x, self.eps)


def _dropout(x, rate):
  """Inverted dropout; a Python rate of 0 adds no op to inference graphs."""
  return tf.nn.dropout(x, rate) if rate else x


def rotary_cos_sin(position_ids, head_dim, rope_theta):
  """RoPE tables: position_ids [..., S] int -> (cos, sin) [..., S, head_dim].

  Frequency i (of head_dim/2) is rope_theta^(-2i/head_dim); the two halves of
  the last axis repeat the same frequencies (HF rotate_half convention).
  """
  inv_freq = 1.0 / (rope_theta**(np.arange(0, head_dim, 2) / head_dim))
  freqs = (tf.cast(position_ids, tf.float32)[..., None] *
           tf.constant(inv_freq, tf.float32))
  emb = tf.concat([freqs, freqs], axis=-1)
  return tf.cos(emb), tf.sin(emb)


def _rotate_half(x):
  x1, x2 = tf.split(x, 2, axis=-1)
  return tf.concat([-x2, x1], axis=-1)


def apply_rotary_pos_emb(x, cos, sin):
  """Rotates x [B, n_heads, S, D] by cos/sin [B, S, D] (shared by heads)."""
  cos, sin = cos[:, None], sin[:, None]
  return x * cos + _rotate_half(x) * sin


def position_ids_from_mask(attention_mask):
  """[B, S] 0/1 mask -> [B, S] int32 positions; pads (left) get position 0."""
  mask = tf.cast(attention_mask, tf.int32)
  return tf.maximum(tf.cumsum(mask, axis=1) - 1, 0)


def causal_attention_bias(attention_mask):
  """[B, S] 0/1 mask -> additive bias [B, 1, S, S]: query i sees key j iff
  j <= i and key j is not padding."""
  mask = tf.cast(attention_mask, tf.bool)
  s = tf.shape(mask)[1]
  causal = tf.linalg.band_part(tf.ones([s, s], tf.bool), -1, 0)
  allowed = tf.logical_and(causal[None, None], mask[:, None, None, :])
  return tf.where(allowed, 0.0, MASKED_BIAS)


class Qwen2Attention(tf.Module):
  """Grouped-query self-attention with rotary positions."""

  def __init__(self, config: Qwen2Config, init: _Init, name=None):
    super().__init__(name=name)
    h, d = config.hidden_size, config.head_dim
    self.num_heads = config.num_attention_heads
    self.num_kv_heads = config.num_key_value_heads
    self.head_dim = d
    self.q_proj = Linear(h, self.num_heads * d, True, init, name="q_proj")
    self.k_proj = Linear(h, self.num_kv_heads * d, True, init, name="k_proj")
    self.v_proj = Linear(h, self.num_kv_heads * d, True, init, name="v_proj")
    self.o_proj = Linear(self.num_heads * d, h, False, init, name="o_proj")

  def _split_heads(self, x, num_heads):
    """[B, S, n*D] -> [B, n, S, D]."""
    shape = tf.shape(x)
    x = tf.reshape(x, [shape[0], shape[1], num_heads, self.head_dim])
    return tf.transpose(x, [0, 2, 1, 3])

  def project_qkv(self, hidden, cos, sin):
    """hidden [B, S, H] -> q [B, nH, S, D], k and v [B, nKV, S, D]; q and k
    are already rotated, so k/v can be cached as they are."""
    q = self._split_heads(self.q_proj(hidden), self.num_heads)
    k = self._split_heads(self.k_proj(hidden), self.num_kv_heads)
    v = self._split_heads(self.v_proj(hidden), self.num_kv_heads)
    return (apply_rotary_pos_emb(q, cos, sin), apply_rotary_pos_emb(k, cos, sin),
            v)

  def attend(self, q, k, v, attention_bias, dropout=0.0):
    """Attention output [B, Sq, H] (after o_proj).

    q [B, nH, Sq, D]; k, v [B, nKV, Sk, D] (e.g. a KV cache); attention_bias
    additive, rank 4, broadcastable to [B, 1, Sq, Sk]. Query head h uses kv head
    h // (nH / nKV), as HF's repeat_kv; the grouping is done by reshaping q
    instead of copying k and v nH/nKV times.
    """
    groups = self.num_heads // self.num_kv_heads
    shape = tf.shape(q)
    b, sq = shape[0], shape[2]
    q = tf.reshape(q, [b, self.num_kv_heads, groups, sq, self.head_dim])
    scores = tf.einsum("bkgqd,bksd->bkgqs", q, k) * (self.head_dim**-0.5)
    scores += attention_bias[:, :, None]  # [B, 1, 1, Sq, Sk]
    probs = _dropout(tf.nn.softmax(scores, axis=-1), dropout)
    out = tf.einsum("bkgqs,bksd->bqkgd", probs, v)
    return self.o_proj(
        tf.reshape(out, [b, sq, self.num_heads * self.head_dim]))

  def __call__(self, hidden, cos, sin, attention_bias, dropout=0.0):
    q, k, v = self.project_qkv(hidden, cos, sin)
    return self.attend(q, k, v, attention_bias, dropout)


class Qwen2MLP(tf.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, config: Qwen2Config, init: _Init, name=None):
    super().__init__(name=name)
    h, i = config.hidden_size, config.intermediate_size
    self.gate_proj = Linear(h, i, False, init, name="gate_proj")
    self.up_proj = Linear(h, i, False, init, name="up_proj")
    self.down_proj = Linear(i, h, False, init, name="down_proj")

  def __call__(self, x):
    return self.down_proj(tf.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(tf.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, config: Qwen2Config, init: _Init, name=None):
    super().__init__(name=name)
    self.input_layernorm = Qwen2RMSNorm(config.hidden_size,
                                        config.rms_norm_eps,
                                        name="input_layernorm")
    self.self_attn = Qwen2Attention(config, init, name="self_attn")
    self.post_attention_layernorm = Qwen2RMSNorm(
        config.hidden_size, config.rms_norm_eps,
        name="post_attention_layernorm")
    self.mlp = Qwen2MLP(config, init, name="mlp")

  def __call__(self, hidden, cos, sin, attention_bias, dropout=0.0):
    hidden += _dropout(self.self_attn(self.input_layernorm(hidden), cos, sin,
                                      attention_bias, dropout), dropout)
    return hidden + _dropout(self.mlp(self.post_attention_layernorm(hidden)),
                             dropout)


class Qwen2Model(tf.Module):
  """Embeddings + decoder layers + final norm."""

  def __init__(self, config: Qwen2Config, init: _Init, name=None):
    super().__init__(name=name)
    self.config = config
    self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, init,
                                  name="embed_tokens")
    self.layers = [Qwen2DecoderLayer(config, init, name=f"layers_{i}")
                   for i in range(config.num_hidden_layers)]
    self.norm = Qwen2RMSNorm(config.hidden_size, config.rms_norm_eps,
                             name="norm")

  def __call__(self, input_ids, attention_mask, dropout=0.0):
    """input_ids [B, S] int, attention_mask [B, S] 0/1 (left padding) ->
    last hidden states [B, S, H] after the final norm; dropout: training
    only (module doc)."""
    tf.debugging.assert_equal(
        tf.shape(input_ids), tf.shape(attention_mask),
        message="attention_mask must have the shape of input_ids [B, S]")
    positions = position_ids_from_mask(attention_mask)
    cos, sin = rotary_cos_sin(positions, self.config.head_dim,
                              self.config.rope_theta)
    bias = causal_attention_bias(attention_mask)
    hidden = _dropout(self.embed_tokens(input_ids), dropout)
    for layer in self.layers:
      hidden = layer(hidden, cos, sin, bias, dropout)
    return self.norm(hidden)


class Qwen2ForCausalLM(tf.Module):
  """Qwen2Model + LM head. With tie_word_embeddings the head reuses the
  embedding table and `lm_head` is None.

  seed: initial weights are N(0, 0.02) (norms 1, biases 0) drawn from it;
  None leaves them zero, for a model whose weights are loaded next.
  """

  def __init__(self, config: Qwen2Config, seed: Optional[int] = 0,
               name=None):
    super().__init__(name=name)
    init = _Init(seed)
    self.config = config
    self.model = Qwen2Model(config, init, name="model")
    self.lm_head = (None if config.tie_word_embeddings else
                    Linear(config.hidden_size, config.vocab_size, False, init,
                           name="lm_head"))

  def lm_head_weight(self):
    """Output embedding [V, H] (the input embedding when tied)."""
    if self.lm_head is None:
      return self.model.embed_tokens.weight
    return tf.transpose(self.lm_head.kernel)

  def lm_head_rows(self, start: int, end: int):
    """Output-embedding rows [end - start, H] of tokens [start, end), sliced
    without transposing (or materialising) the whole [V, H] head."""
    if self.lm_head is None:
      return self.model.embed_tokens.weight[start:end]
    return tf.transpose(self.lm_head.kernel[:, start:end])

  def lm_logits(self, hidden):
    """hidden [..., H] -> logits [..., V]."""
    if self.lm_head is None:
      return tf.matmul(hidden, self.model.embed_tokens.weight, transpose_b=True)
    return self.lm_head(hidden)

  def __call__(self, input_ids, attention_mask):
    """input_ids [B, S], attention_mask [B, S] -> logits [B, S, V]."""
    return self.lm_logits(self.model(input_ids, attention_mask))

  def resize_token_embeddings(self, new_vocab_size: int, seed: int = 0):
    """Grows the vocabulary to new_vocab_size, e.g. to add semantic-ID tokens.

    Existing rows are kept; appended rows of the embedding (and of the untied
    LM head) are drawn from N(0, 0.02) as HF initialises new tokens. The
    variables are replaced, so build optimizers / tf.functions afterwards.
    """
    old = self.config.vocab_size
    if new_vocab_size < old:
      raise ValueError(f"new_vocab_size ({new_vocab_size}) must be >= the "
                       f"current vocab_size ({old}); shrinking drops tokens")
    if new_vocab_size == old:
      return
    init = _Init(seed)
    extra = new_vocab_size - old
    h = self.config.hidden_size
    emb = self.model.embed_tokens
    emb.weight = tf.Variable(
        tf.concat([emb.weight, init.normal([extra, h])], axis=0),
        name="weight")
    if self.lm_head is not None:
      self.lm_head.kernel = tf.Variable(
          tf.concat([self.lm_head.kernel, init.normal([h, extra])], axis=1),
          name="kernel")
    self.config = dataclasses.replace(self.config, vocab_size=new_vocab_size)
    self.model.config = self.config
