"""The `tf-genrec make_random_model` step: a random-weight generator + table.

For benchmarks at a production shape without training:
make_random_model(RandomModelOptions) writes <output_dir>/item_table.tsv
(random distinct semantic IDs) and <output_dir>/hf/ (a Hugging Face Qwen2
checkpoint sized for the scene's vocabulary, with the prompt it is for in
generation_config.json), ready for `tf-genrec export`.
"""
import dataclasses
import os

import numpy as np

import graphs
from tf_genrec.generation.generation_config import save_prompt_spec
from tf_genrec.models.qwen2.checkpoint import save_hf_checkpoint
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.options import OptionsError, option
from tf_genrec.tables.item_table import write_item_table


@dataclasses.dataclass(frozen=True)
class RandomModelOptions:
  output_dir: str = option(None, "Where item_table.tsv and hf/ go.",
                           required=True)
  graph: str = option("ad_recall", "Scene (vocabulary).",
                      choices=graphs.SCENES)
  num_items: int = option(10_000, "Items in the table.")
  num_levels: int = option(4, "L, semantic-ID length.")
  codebook_size: int = option(256, "K, codes per level.")
  hidden_size: int = option(256, "Qwen2 hidden_size.")
  num_hidden_layers: int = option(4, "Qwen2 num_hidden_layers.")
  num_attention_heads: int = option(4, "Qwen2 num_attention_heads.")
  num_key_value_heads: int = option(2, "Qwen2 num_key_value_heads.")
  intermediate_size: int = option(688, "Qwen2 intermediate_size.")
  seed: int = option(0, "Random seed.")


def random_codes(rng, num_items, num_levels, codebook_size):
  """Distinct random semantic IDs (rejection of duplicates)."""
  if num_items > codebook_size ** num_levels:
    raise OptionsError(f"num_items={num_items} distinct IDs need at most "
                       f"codebook_size**num_levels={codebook_size}**"
                       f"{num_levels}")
  codes = np.zeros([0, num_levels], np.int64)
  while len(codes) < num_items:
    extra = rng.integers(0, codebook_size, (num_items, num_levels))
    codes = np.unique(np.concatenate([codes, extra]), axis=0)
  return rng.permutation(codes)[:num_items]


def make_random_model(options: RandomModelOptions) -> dict:
  """Writes the table and checkpoint; their paths."""
  o = options
  if not o.output_dir:
    raise OptionsError(f"output_dir is required, got {o.output_dir!r}")
  rng = np.random.default_rng(o.seed)
  os.makedirs(o.output_dir, exist_ok=True)
  table_path = os.path.join(o.output_dir, "item_table.tsv")
  write_item_table(table_path, np.arange(o.num_items),
                   random_codes(rng, o.num_items, o.num_levels,
                                o.codebook_size),
                   rng.random(o.num_items), o.codebook_size)
  graph = graphs.get(o.graph).graph_config(
      num_levels=o.num_levels, codebook_size=o.codebook_size)
  model = Qwen2ForCausalLM(Qwen2Config(
      vocab_size=graph.template.vocab_size, hidden_size=o.hidden_size,
      intermediate_size=o.intermediate_size,
      num_hidden_layers=o.num_hidden_layers,
      num_attention_heads=o.num_attention_heads,
      num_key_value_heads=o.num_key_value_heads), seed=o.seed)
  hf_dir = os.path.join(o.output_dir, "hf")
  save_hf_checkpoint(model, hf_dir)
  save_prompt_spec(hf_dir, graphs.prompt_scene(o.graph), o.num_levels,
                   o.codebook_size, graph.behavior.max_len)
  return {"item_table": table_path, "checkpoint_dir": hf_dir}
