"""TF-native beam search over semantic IDs, constrained by a SemanticIdTrie.

The hot path of recall, so the layout is chosen for cost:
  * the prompt is prefilled once per request and its KV cache is shared by all
    W beams (the attention einsum broadcasts over beams instead of holding a
    W-fold copy); each beam only keeps KV for its <= L-1 generated tokens;
  * a level scores only its K LM-head rows (tokens sid_offset + l*K + [0, K)),
    never the full vocabulary, and candidates are just the trie children of
    each beam, padded to the level's static max fan-out;
  * the L levels are unrolled in one tf.function, so a request is one graph
    run with no Python per step;
  * few ops (at batch 1 per-op dispatch is a large share of a call): q/k/v
    is one matmul (gate/up stay two: splitting a fused output copies it,
    which measured slower at batch 32), the RMSNorm weights and the
    attention scale are folded into the following kernels, dense layers are
    2-D MatMuls (oneDNN fuses the bias), RoPE tables are built once per
    call and every layer's beam cache is reordered with one gather.

The generator snapshots the model's weights at construction into its own
inference weight set (fused, optionally bfloat16) and keeps no reference to
the model, so an exported SavedModel holds one copy of the weights; build the
generator after the model's weights are final.

Scores are sums over levels of a log_softmax that matches how the model was
trained (`sid_softmax`): "level" normalises over the level's K codes and then
excludes codes not in the trie; "trie" normalises over the trie children of
the beam's prefix only, so the scores are log-probabilities over existing
SIDs and sum to one over the whole catalogue.
"""
import tensorflow as tf

from tf_genrec.models.qwen2.modeling import rotary_cos_sin

# Additive bias for masked attention keys: finite so a fully masked padding row
# in the prefill gives no NaN, and exp(-1e9) is exactly 0 against real keys.
_MASKED = -1e9
_COMPUTE_DTYPES = ("float32", "bfloat16")
SID_SOFTMAXES = ("level", "trie")


def check_sid_softmax(value, where="sid_softmax"):
  """Raises ValueError naming `where` unless value is in SID_SOFTMAXES."""
  if value not in SID_SOFTMAXES:
    raise ValueError(f"{where} must be one of {SID_SOFTMAXES}, got {value!r}")


class BeamSearchGenerator(tf.Module):
  """Generator contract of DEVELOPERS.md over a Qwen2ForCausalLM.

  compute_dtype: "float32" (exact) or "bfloat16": the embedding, projection
  and MLP kernels are stored in bfloat16 and those matmuls and the attention
  einsums take bfloat16 inputs (oneDNN accumulates in fp32 and rounds the
  outputs to bfloat16; the KV cache is bfloat16). The residual stream,
  RMSNorms, softmaxes, level LM-head rows and log-probs stay float32. Not
  exact: on peaked models the best SIDs agree with float32 and scores differ
  by up to ~10% (tests/test_beam_search.py).
  """

  def __init__(self, model, trie, sid_offset: int, max_beam_width: int,
               compute_dtype: str = "float32", sid_softmax: str = "level",
               name="beam_search_generator"):
    super().__init__(name=name)
    if not 1 <= max_beam_width <= 1024:
      raise ValueError(f"max_beam_width must be in [1, 1024], got "
                       f"{max_beam_width}")
    if compute_dtype not in _COMPUTE_DTYPES:
      raise ValueError(f"compute_dtype must be one of {_COMPUTE_DTYPES}, got "
                       f"{compute_dtype!r}")
    check_sid_softmax(sid_softmax)
    config = model.config
    vocab = config.vocab_size
    sid_end = sid_offset + trie.num_levels * trie.codebook_size
    if sid_offset < 0 or sid_end > vocab:
      raise ValueError(f"SID tokens [sid_offset={sid_offset}, {sid_end}) must "
                       f"lie in the model's vocabulary [0, {vocab})")
    self.trie = trie
    self.sid_offset = int(sid_offset)
    self.max_beam_width = int(max_beam_width)
    self.compute_dtype = compute_dtype
    self.sid_softmax = sid_softmax
    self._dtype = tf.as_dtype(compute_dtype)
    self._num_heads = config.num_attention_heads
    self._num_kv_heads = config.num_key_value_heads
    self._head_dim = config.head_dim
    self._rope_theta = config.rope_theta
    self._eps = config.rms_norm_eps
    self._build_weights(model)

  def _build_weights(self, model):
    """Inference weights as the generator's own variables (see module doc)."""
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
    # The level heads take the final norm's weight; they stay float32: they
    # are small and set the scores.
    k = self.trie.codebook_size
    heads = [tf.transpose(model.lm_head_rows(
        self.sid_offset + l * k, self.sid_offset + (l + 1) * k))
             for l in range(self.trie.num_levels)]
    self._level_heads = var(
        model.model.norm.weight[tf.newaxis, :, tf.newaxis] * tf.stack(heads),
        "level_heads", tf.float32)  # [L, H, K]

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int32, name="input_ids"),
      tf.TensorSpec([None], tf.int32, name="lengths"),
      tf.TensorSpec(None, tf.int32, name="beam_width"),
  ])
  def generate(self, input_ids, lengths, beam_width):
    """Top beam_width[b] semantic IDs of each prompt, best first.

    The batch decodes at its widest row, W = max(beam_width), and every row
    is pruned to its own width at every level, so row b's beams are exactly
    those of a beam_width[b]-wide search of that row alone, whatever its
    batch-mates ask for.

    Args:
      input_ids: [B, P] int32 prompts, left-padded; B >= 1.
      lengths: [B] int32 prompt lengths in [1, P].
      beam_width: [B] int32 widths in [1, max_beam_width], or a scalar for
        every row.
    Returns:
      codes: [B, W, L] int32; -1 for invalid beams (fewer than beam_width[b]
        SIDs reachable, or beams past beam_width[b]).
      scores: [B, W] float32 log-probabilities; -inf for invalid beams.
    """
    input_ids, lengths, beam_width = self._check_inputs(input_ids, lengths,
                                                        beam_width)
    batch = tf.shape(input_ids)[0]
    width = tf.reduce_max(beam_width)
    k, num_levels = self.trie.codebook_size, self.trie.num_levels
    prompt_kv, key_bias, last_hidden = self._prefill(input_ids, lengths)
    beam_pos = tf.range(width)[tf.newaxis, :]
    in_width = beam_pos < beam_width[:, tf.newaxis]  # [B, W]

    # Only beam 0 starts valid: top-W over W copies of the root then picks
    # the root's children without a special first step.
    scores = tf.where(beam_pos == 0, 0.0, float("-inf")) * tf.ones([batch, 1])
    nodes = tf.zeros([batch, width], tf.int32)
    codes = tf.zeros([batch, width, 0], tf.int32)
    hidden = last_hidden[:, tf.newaxis, :]  # [B, 1, H]: one root per row
    beam_kv = None
    for level in range(num_levels):
      logits = tf.matmul(hidden, self._level_heads[level])  # [B, W or 1, K]
      if self.sid_softmax == "level":
        logits = tf.nn.log_softmax(logits)
      if level == 0:
        logits = tf.broadcast_to(logits, [batch, width, k])
      child_codes, child_ids, valid = self.trie.children(level, nodes)
      child_scores = tf.where(
          valid, tf.gather(logits, child_codes, batch_dims=2), float("-inf"))
      if self.sid_softmax == "trie":  # where(): a childless row gives NaN.
        child_scores = tf.where(valid, tf.nn.log_softmax(child_scores),
                                float("-inf"))
      fanout = self.trie.max_children[level]
      candidates = tf.reshape(scores[..., tf.newaxis] + child_scores,
                              [batch, -1])
      scores, picked = tf.math.top_k(candidates, width)
      # A row's beams past its own width drop out here, so their children
      # (-inf) never compete at the next level: the row's first beam_width[b]
      # candidates are the top of exactly its own search's candidates, in the
      # same order (top_k is stable and a narrower search's candidate list is
      # a prefix of this one).
      scores = tf.where(in_width, scores, float("-inf"))
      parents = picked // fanout
      new_codes = tf.gather(tf.reshape(child_codes, [batch, -1]), picked,
                            batch_dims=1)
      nodes = tf.gather(tf.reshape(child_ids, [batch, -1]), picked,
                        batch_dims=1)
      codes = tf.concat([tf.gather(codes, parents, batch_dims=1),
                         new_codes[..., tf.newaxis]], axis=-1)
      if level + 1 == num_levels:
        break
      if beam_kv is not None:
        # One gather reorders every layer's beam cache.
        beam_kv = tf.gather(beam_kv, parents, batch_dims=1)
      tokens = self.sid_offset + level * k + new_codes
      hidden, beam_kv = self._decode_step(tokens, lengths + level, prompt_kv,
                                          key_bias, beam_kv)

    invalid = tf.math.is_inf(scores)
    codes = tf.where(invalid[..., tf.newaxis], -1, codes)
    return codes, scores

  def _check_inputs(self, input_ids, lengths, beam_width):
    prompt_len = tf.shape(input_ids)[1]
    width_shape = tf.debugging.assert_equal(
        tf.logical_or(tf.rank(beam_width) == 0,
                      tf.equal(tf.size(beam_width), tf.shape(input_ids)[0])),
        True, message="beam_width must have one entry per input_ids row "
        "(or be a scalar)")
    with tf.control_dependencies([width_shape]):
      beam_width = tf.broadcast_to(beam_width, tf.shape(input_ids)[:1])
    checks = [
        tf.debugging.assert_greater_equal(
            tf.shape(input_ids)[0], 1,
            message="input_ids must have at least one row"),
        tf.debugging.assert_greater_equal(
            beam_width, 1, message="beam_width must be >= 1"),
        tf.debugging.assert_less_equal(
            beam_width, self.max_beam_width,
            message=f"beam_width must be <= max_beam_width="
            f"{self.max_beam_width} (set at export)"),
        tf.debugging.assert_equal(
            tf.shape(lengths)[0], tf.shape(input_ids)[0],
            message="lengths must have one entry per input_ids row"),
        tf.debugging.assert_greater_equal(
            lengths, 1, message="lengths must be >= 1"),
        tf.debugging.assert_less_equal(
            lengths, prompt_len,
            message="lengths must be <= input_ids.shape[1]"),
    ]
    with tf.control_dependencies(checks):
      return (tf.identity(input_ids), tf.identity(lengths),
              tf.identity(beam_width))

  def _normed(self, x):
    """RMSNorm without its weight (folded into the next kernel), cast to the
    compute dtype for the matmul that follows."""
    variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
    return tf.cast(x * tf.math.rsqrt(variance + self._eps), self._dtype)

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

  def _norm(self, x):
    """Final RMSNorm without its weight (folded into the level heads)."""
    variance = tf.reduce_mean(tf.square(x), axis=-1, keepdims=True)
    return x * tf.math.rsqrt(variance + self._eps)

  def _prefill(self, input_ids, lengths):
    """Runs the prompt once.

    Returns:
      prompt_kv: per layer (k, v), each [B, nKV, P, D] in the compute dtype.
      key_bias: [B, P] additive bias masking the left padding.
      last_hidden: [B, H] final-normed hidden state of the last prompt token.
    """
    prompt_len = tf.shape(input_ids)[1]
    is_token = (tf.range(prompt_len)[tf.newaxis, :] >=
                (prompt_len - lengths)[:, tf.newaxis])
    positions = tf.maximum(tf.cumsum(tf.cast(is_token, tf.int32), axis=1) - 1,
                           0)
    cos, sin = self._rotary(positions)  # [B, P, 1, heads, D]
    cos, sin = cos[:, :, 0], sin[:, :, 0]
    key_bias = tf.where(is_token, 0.0, _MASKED)
    causal = tf.linalg.band_part(tf.ones([prompt_len, prompt_len]), -1, 0)
    bias = (tf.where(causal > 0, 0.0, _MASKED)[tf.newaxis] +
            key_bias[:, tf.newaxis, :])[:, tf.newaxis, tf.newaxis]
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
    return prompt_kv, key_bias, self._norm(x)

  def _decode_step(self, tokens, positions, prompt_kv, key_bias, beam_kv):
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
    return tf.reshape(self._norm(x), [shape[0], shape[1], -1]), beam_kv
