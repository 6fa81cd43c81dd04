"""Writes the engine file the CPU engine loads (format: the comment at the
top of custom_ops/engine/cpu_engine.h): the model's weights as they are (the
engine folds the norms itself), the SID rows of the LM head and the trie's
semantic IDs, so one asset initialises the engine."""
import struct

import ml_dtypes
import numpy as np

MAGIC = b"TFGRENG2"
WEIGHT_DTYPES = ("float32", "bfloat16")  # the file's weight_dtype codes 0, 1


def write_engine_file(path, model, trie, sid_offset: int,
                      dtype: str = "float32"):
  """model: Qwen2ForCausalLM; trie: SemanticIdTrie; sid_offset as the
  generator's; dtype: how the big matrices are stored (bfloat16: rounded to
  nearest even, half the bytes; the engine computes in float32 either way).
  Norms and biases stay float32."""
  if dtype not in WEIGHT_DTYPES:
    raise ValueError(f"dtype must be one of {WEIGHT_DTYPES}, got {dtype!r}")
  c = model.config
  num_levels, k = trie.num_levels, trie.codebook_size
  sid_end = sid_offset + num_levels * k
  if sid_offset < 0 or sid_end > c.vocab_size:
    raise ValueError(f"SID tokens [sid_offset={sid_offset}, {sid_end}) must "
                     f"lie in the model's vocabulary [0, {c.vocab_size})")

  def f32(x):
    return np.ascontiguousarray(np.asarray(x, np.float32)).tobytes()

  def matrix(x):
    if dtype == "float32":
      return f32(x)
    rounded = np.asarray(x, np.float32).astype(ml_dtypes.bfloat16)
    return np.ascontiguousarray(rounded).view("<u2").tobytes()

  with open(path, "wb") as f:
    f.write(MAGIC + struct.pack("<i", WEIGHT_DTYPES.index(dtype)))
    f.write(struct.pack("<11i", c.num_hidden_layers, c.hidden_size,
                        c.intermediate_size, c.num_attention_heads,
                        c.num_key_value_heads, c.head_dim, c.vocab_size,
                        num_levels, k, sid_offset, trie.num_sids))
    f.write(struct.pack("<2f", c.rope_theta, c.rms_norm_eps))
    f.write(matrix(model.model.embed_tokens.weight))
    for layer in model.model.layers:
      attn, mlp = layer.self_attn, layer.mlp
      f.write(f32(layer.input_layernorm.weight))
      for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        f.write(matrix(proj.kernel) + f32(proj.bias))
      f.write(matrix(attn.o_proj.kernel))
      f.write(f32(layer.post_attention_layernorm.weight))
      for proj in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        f.write(matrix(proj.kernel))
    f.write(f32(model.model.norm.weight))
    f.write(matrix(model.lm_head_rows(sid_offset, sid_end)))
    f.write(np.ascontiguousarray(trie.sids_np, "<i4").tobytes())
