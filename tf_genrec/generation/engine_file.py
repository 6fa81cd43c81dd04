"""Writes the engine file the CPU engine loads (format: the comment at the
top of custom_ops/engine/cpu_engine.h): the model's weights as they are (the
engine folds the norms itself), the SID rows of the LM head and the trie's
semantic IDs, so one asset initialises the engine."""
import struct

import numpy as np

MAGIC = b"TFGRENG1"


def write_engine_file(path, model, trie, sid_offset: int):
  """model: Qwen2ForCausalLM; trie: SemanticIdTrie; sid_offset as the
  generator's."""
  c = model.config
  num_levels, k = trie.num_levels, trie.codebook_size
  sid_end = sid_offset + num_levels * k
  if sid_offset < 0 or sid_end > c.vocab_size:
    raise ValueError(f"SID tokens [sid_offset={sid_offset}, {sid_end}) must "
                     f"lie in the model's vocabulary [0, {c.vocab_size})")

  def f32(x):
    return np.ascontiguousarray(np.asarray(x, np.float32)).tobytes()

  with open(path, "wb") as f:
    f.write(MAGIC)
    f.write(struct.pack("<11i", c.num_hidden_layers, c.hidden_size,
                        c.intermediate_size, c.num_attention_heads,
                        c.num_key_value_heads, c.head_dim, c.vocab_size,
                        num_levels, k, sid_offset, trie.num_sids))
    f.write(struct.pack("<2f", c.rope_theta, c.rms_norm_eps))
    f.write(f32(model.model.embed_tokens.weight))
    for layer in model.model.layers:
      attn, mlp = layer.self_attn, layer.mlp
      f.write(f32(layer.input_layernorm.weight))
      for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
        f.write(f32(proj.kernel) + f32(proj.bias))
      f.write(f32(attn.o_proj.kernel))
      f.write(f32(layer.post_attention_layernorm.weight))
      for proj in (mlp.gate_proj, mlp.up_proj, mlp.down_proj):
        f.write(f32(proj.kernel))
    f.write(f32(model.model.norm.weight))
    f.write(f32(model.lm_head_rows(sid_offset, sid_end)))
    f.write(np.ascontiguousarray(trie.sids_np, "<i4").tobytes())
