"""The fused Qwen2 inference path: prefill over a prompt, decode over a KV cache.

The training forward (modeling.py) and this path are one architecture: this
module snapshots a Qwen2ForCausalLM's weights into an inference layout and
reuses its parts that survive the fusion (RoPE tables, RMS normalisation,
positions and the causal mask from the padding), so a change to the
architecture is made in modeling.py and mirrored here, in one package
(tests/test_beam_search.py compares the two on every path).

The layout is chosen for cost (the hot path of recall):
  * the prompt is prefilled once per request and its KV cache is shared by
    all beams (the attention einsum broadcasts over beams instead of holding
    a W-fold copy); each beam only keeps KV for its generated tokens;
  * few ops (at batch 1 per-op dispatch is a large share of a call): q/k/v
    is one matmul (gate/up stay two: splitting a fused output copies it,
    which measured slower at batch 32), the RMSNorm weights and the
    attention scale are folded into the following kernels, dense layers are
    2-D MatMuls (oneDNN fuses the bias), RoPE tables are built once per
    call;
  * the LM head is only the requested blocks of rows (e.g. one per SID
    level), with the final norm's weight folded in, never the full
    vocabulary.

compute_dtype: "float32" (exact) or "bfloat16": the embedding, projection
and MLP kernels are stored in bfloat16 and those matmuls and the attention
einsums take bfloat16 inputs (oneDNN accumulates in fp32 and rounds the
outputs to bfloat16; the KV cache is bfloat16). The residual stream,
RMSNorms, softmaxes, head rows and log-probs stay float32.

The weights are the module's own variables, copied at construction, and no
reference to the model is kept, so an exported SavedModel holds one copy;
build it after the model's weights are final.
"""
import tensorflow as tf

from tf_genrec.models.qwen2.modeling import (MASKED_BIAS, causal_attention_bias,
                                             position_ids_from_mask,
                                             rms_normalize, rotary_cos_sin)

COMPUTE_DTYPES = ("float32", "bfloat16")


class Qwen2Inference(tf.Module):
  """prefill + decode_step over a snapshot of a Qwen2ForCausalLM.

  head_blocks: (start, width, count): the LM-head rows [start + i * width,
  start + (i + 1) * width) for i < count become head i (head_logits); the
  caller checks they lie in the vocabulary (it knows what they mean).
  """

  def __init__(self, model, head_blocks, compute_dtype: str = "float32",
               name="qwen2_inference"):
    super().__init__(name=name)
    if compute_dtype not in COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got "
                       f"{compute_dtype!r}")
    config = model.config
    self.compute_dtype = compute_dtype
    self._dtype = tf.as_dtype(compute_dtype)
    self._num_heads = config.num_attention_heads
    self._num_kv_heads = config.num_key_value_heads
    self._head_dim = config.head_dim
    self._rope_theta = config.rope_theta
    self._eps = config.rms_norm_eps
    self._build_weights(model, head_blocks)

  def _build_weights(self, model, head_blocks):
    """The inference weight set (see the module doc)."""
    def var(value, name, dtype=None):
      return tf.Variable(tf.cast(value, dtype or self._dtype),
                         trainable=False, name=name)

    d = self._head_dim
    self._embed = var(model.model.embed_tokens.weight, "embed")
    self._layers = []
    for i, layer in enumerate(model.model.layers):
      attn, mlp = layer.self_attn, layer.mlp
      # norm(x) @ W == (x * rsqrt(mean(x^2) + eps)) @ (diag(w) W); the
      # attention scale is folded into q (RoPE is linear, so it commutes).
      ln1 = layer.input_layernorm.weight[:, tf.newaxis]
      ln2 = layer.post_attention_layernorm.weight[:, tf.newaxis]
      q_scale = d ** -0.5
      qkv = tf.concat([attn.q_proj.kernel * q_scale, attn.k_proj.kernel,
                       attn.v_proj.kernel], axis=1)
      qkv_bias = tf.concat([attn.q_proj.bias * q_scale, attn.k_proj.bias,
                            attn.v_proj.bias], axis=0)
      self._layers.append(dict(
          qkv=var(ln1 * qkv, f"layer_{i}_qkv"),
          qkv_bias=var(qkv_bias, f"layer_{i}_qkv_bias"),
          o=var(attn.o_proj.kernel, f"layer_{i}_o"),
          gate=var(ln2 * mlp.gate_proj.kernel, f"layer_{i}_gate"),
          up=var(ln2 * mlp.up_proj.kernel, f"layer_{i}_up"),
          down=var(mlp.down_proj.kernel, f"layer_{i}_down")))
    # The heads take the final norm's weight; they stay float32: they are
    # small and set the scores.
    start, width, count = head_blocks
    heads = [tf.transpose(model.lm_head_rows(start + i * width,
                                             start + (i + 1) * width))
             for i in range(count)]
    self._heads = var(
        model.model.norm.weight[tf.newaxis, :, tf.newaxis] * tf.stack(heads),
        "level_heads", tf.float32)  # [count, H, width]

  def head_logits(self, hidden, head):
    """hidden [..., H] final-normed -> logits [..., width] of head `head`."""
    return tf.matmul(hidden, self._heads[head])

  def _normed(self, x):
    """RMSNorm without its weight (folded into the next kernel), cast to the
    compute dtype for the matmul that follows."""
    return tf.cast(rms_normalize(x, self._eps), self._dtype)

  def _rotary(self, positions):
    """RoPE tables for every q/k/v head of the fused projection: positions
    [...] -> (cos, sin) [..., 1, heads, D]. rotate_half(x) * sin is written as
    roll(x, D/2) * [-sin, sin] (one op instead of split/negate/concat), and
    the v heads get cos 1 and sin 0, so the whole projection is rotated
    without splitting it first (exact: v * 1 + roll(v) * 0 == v)."""
    n_rot = self._num_heads + self._num_kv_heads
    cos, sin = rotary_cos_sin(positions[..., tf.newaxis], self._head_dim,
                              self._rope_theta)  # [..., 1, D]
    half = self._head_dim // 2
    sin = tf.concat([-sin[..., :half], sin[..., half:]], axis=-1)
    rotated = tf.constant([1.0] * n_rot + [0.0] * self._num_kv_heads)
    rotated = rotated[:, tf.newaxis]  # [heads, 1]
    return (cos[..., tf.newaxis, :] * rotated + (1.0 - rotated),
            sin[..., tf.newaxis, :] * rotated)

  def _qkv(self, x, weights, cos, sin, batch, seq, heads_first=False):
    """x [B * S, H] float32 -> rotated q, k, v in the compute dtype; cos/sin
    from _rotary. Token-major q [B, S, nKV, G, D], k/v [B, S, nKV, D]; with
    heads_first (the prefill: S is long, and head-major operands let the
    attention einsums run without internal transposes) q [B, nKV, G, S, D],
    k/v [B, nKV, S, D]."""
    n_h, n_kv, d = self._num_heads, self._num_kv_heads, self._head_dim
    qkv = tf.nn.bias_add(tf.matmul(self._normed(x), weights["qkv"]),
                         weights["qkv_bias"])
    qkv = tf.reshape(tf.cast(qkv, tf.float32),
                     [batch, seq, n_h + 2 * n_kv, d])
    qkv = tf.cast(qkv * cos + tf.roll(qkv, d // 2, axis=-1) * sin,
                  self._dtype)
    if heads_first:
      q, k, v = tf.split(tf.transpose(qkv, [0, 2, 1, 3]), [n_h, n_kv, n_kv],
                         axis=1)
      return tf.reshape(q, [batch, n_kv, n_h // n_kv, seq, d]), k, v
    q, k, v = tf.split(qkv, [n_h, n_kv, n_kv], axis=2)
    return tf.reshape(q, [batch, seq, n_kv, n_h // n_kv, d]), k, v

  def _attn_out_mlp(self, x, out, weights):
    """Residual adds of o_proj(out) [N, nH * D] and of the MLP to x [N, H]
    (2-D: plain MatMuls, cheaper than batched ones on 3-D operands)."""
    x = x + tf.cast(tf.matmul(out, weights["o"]), tf.float32)
    normed = self._normed(x)
    hidden = (tf.nn.silu(tf.matmul(normed, weights["gate"])) *
              tf.matmul(normed, weights["up"]))
    return x + tf.cast(tf.matmul(hidden, weights["down"]), tf.float32)

  def prefill(self, input_ids, lengths):
    """Runs the prompt once.

    Returns:
      prompt_kv: per layer (k, v), each [B, nKV, P, D] in the compute dtype.
      key_bias: [B, P] additive bias masking the left padding.
      last_hidden: [B, H] final-normed hidden state of the last prompt token.
    """
    prompt_len = tf.shape(input_ids)[1]
    is_token = (tf.range(prompt_len)[tf.newaxis, :] >=
                (prompt_len - lengths)[:, tf.newaxis])
    cos, sin = self._rotary(position_ids_from_mask(is_token))
    cos, sin = cos[:, :, 0], sin[:, :, 0]  # [B, P, heads, D]
    key_bias = tf.where(is_token, 0.0, MASKED_BIAS)
    bias = causal_attention_bias(is_token)[:, :, tf.newaxis]  # [B,1,1,P,P]
    batch = tf.shape(input_ids)[0]

    x = tf.cast(tf.gather(self._embed, tf.reshape(input_ids, [-1])),
                tf.float32)  # [B * P, H]
    prompt_kv = []
    for i, weights in enumerate(self._layers):
      q, k, v = self._qkv(x, weights, cos, sin, batch, prompt_len,
                          heads_first=True)
      prompt_kv.append((k, v))
      if i + 1 == len(self._layers):
        # Later steps only read the last token's output of the last layer.
        q, layer_bias = q[..., -1:, :], bias[..., -1:, :]
        x = tf.reshape(x, [batch, prompt_len, -1])[:, -1]
      else:
        layer_bias = bias
      logits = tf.cast(tf.einsum("bkgsd,bktd->bkgst", q, k),
                       tf.float32) + layer_bias
      probs = tf.cast(tf.nn.softmax(logits), self._dtype)
      out = tf.einsum("bkgst,bktd->bkgsd", probs, v)
      out = tf.reshape(out, [batch, self._num_heads, -1, self._head_dim])
      out = tf.reshape(tf.transpose(out, [0, 2, 1, 3]),
                       [-1, self._num_heads * self._head_dim])
      x = self._attn_out_mlp(x, out, weights)
    return prompt_kv, key_bias, rms_normalize(x, self._eps)

  def decode_step(self, tokens, positions, prompt_kv, key_bias, beam_kv):
    """One generated token per beam.

    Args:
      tokens: [B, W] int32 each beam's newest token.
      positions: [B] position of that token (the same for all beams of a row).
      prompt_kv: per layer (k, v) [B, nKV, P, D], shared by all beams.
      key_bias: [B, P] padding bias of the prompt keys.
      beam_kv: None, or [B, W, t, 2 * layers, nKV, D]: every layer's k and v
        of the beam's earlier generated tokens, reordered to current beams.
    Returns:
      hidden: [B, W, H] final-normed hidden states.
      beam_kv: as the input, with this token appended (t + 1).
    """
    cos, sin = self._rotary(positions[:, tf.newaxis])  # [B, 1, 1, heads, D]
    cos, sin = cos[:, :, 0], sin[:, :, 0]
    prompt_bias = key_bias[:, tf.newaxis, tf.newaxis, tf.newaxis, :]
    shape = tf.shape(tokens)
    x = tf.cast(tf.gather(self._embed, tf.reshape(tokens, [-1])),
                tf.float32)  # [B * W, H]
    past = None if beam_kv is None else tf.unstack(
        beam_kv, 2 * len(self._layers), axis=3)
    new_kv = []
    for i, weights in enumerate(self._layers):
      # q [B, W, nKV, G, D], k and v [B, W, nKV, D].
      q, k, v = self._qkv(x, weights, cos, sin, shape[0], shape[1])
      new_kv += [k, v]
      k, v = k[:, :, tf.newaxis], v[:, :, tf.newaxis]  # [B, W, 1, nKV, D]
      if past is not None:
        k = tf.concat([past[2 * i], k], axis=2)
        v = tf.concat([past[2 * i + 1], v], axis=2)
      prompt_k, prompt_v = prompt_kv[i]
      # The shared prompt cache is broadcast over beams inside the einsum.
      prompt_logits = tf.cast(tf.einsum("bwkgd,bkpd->bwkgp", q, prompt_k),
                              tf.float32) + prompt_bias
      beam_logits = tf.cast(tf.einsum("bwkgd,bwtkd->bwkgt", q, k), tf.float32)
      probs = tf.nn.softmax(tf.concat([prompt_logits, beam_logits], axis=-1))
      num_prompt = tf.shape(prompt_k)[2]
      prompt_probs, beam_probs = tf.split(
          tf.cast(probs, self._dtype), [num_prompt, -1], axis=-1)
      out = (tf.einsum("bwkgp,bkpd->bwkgd", prompt_probs, prompt_v) +
             tf.einsum("bwkgt,bwtkd->bwkgd", beam_probs, v))
      out = tf.reshape(out, [-1, self._num_heads * self._head_dim])
      x = self._attn_out_mlp(x, out, weights)
    new_kv = tf.stack(new_kv, axis=2)[:, :, tf.newaxis]  # [B, W, 1, 2n, ..]
    beam_kv = new_kv if beam_kv is None else tf.concat([beam_kv, new_kv], 2)
    hidden = rms_normalize(x, self._eps)
    return tf.reshape(hidden, [shape[0], shape[1], -1]), beam_kv
