"""What a generator call costs in matmul FLOPs, for the benchmarks' floors
and bounds."""
from tf_genrec.models.qwen2 import Qwen2Config


def beam_search_flops(cfg: Qwen2Config, batch, width, prompt_len,
                      num_levels, k):
  """Matmul FLOPs of one generator call (2 per multiply-add): the prompt's
  prefill, num_levels - 1 decode steps of `width` beams, the level heads."""
  h, d = cfg.hidden_size, cfg.head_dim
  qkv = 2 * h * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * d
  rest = 2 * (cfg.num_attention_heads * d * h + 3 * h * cfg.intermediate_size)
  attn = 4 * cfg.num_attention_heads * d  # q.k and p.v per (query, key)
  layers = cfg.num_hidden_layers
  # The last prefill layer needs K/V of every prompt token but the output of
  # the last one only.
  prefill = ((layers - 1) * (prompt_len * (qkv + rest) + prompt_len**2 * attn)
             + prompt_len * qkv + rest + prompt_len * attn)
  decode = sum(layers * width * (qkv + rest + (prompt_len + t) * attn)
               for t in range(1, num_levels))
  head = 2 * h * k * (1 + width * (num_levels - 1))
  return batch * (prefill + decode + head)
