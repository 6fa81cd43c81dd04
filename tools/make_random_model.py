"""tf-genrec make_random_model: a random-weight generator + item table.

For benchmarks at a production shape without training: writes
<output_dir>/item_table.tsv (random distinct semantic IDs) and
<output_dir>/hf/ (a Hugging Face Qwen2 checkpoint sized for the scene's
vocabulary), ready for `tf-genrec export`.

  tf-genrec make_random_model --output_dir=/tmp/bench_model   # the generator
    issue's small model: 4 layers, hidden 256, 4/2 heads, 10,000 items, L=4
"""
import json
import os

import numpy as np
from absl import flags

from tf_genrec import graphs
from tf_genrec.generation.generation_config import save_prompt_spec
from tf_genrec.models.qwen2.checkpoint import save_hf_checkpoint
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import write_item_table

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where item_table.tsv and hf/ go.")
flags.DEFINE_enum("graph", "ad_recall", graphs.SCENES, "Scene (vocabulary).")
flags.DEFINE_integer("num_items", 10_000, "Items in the table.")
flags.DEFINE_integer("num_levels", 4, "L, semantic-ID length.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("hidden_size", 256, "Qwen2 hidden_size.")
flags.DEFINE_integer("num_hidden_layers", 4, "Qwen2 num_hidden_layers.")
flags.DEFINE_integer("num_attention_heads", 4, "Qwen2 num_attention_heads.")
flags.DEFINE_integer("num_key_value_heads", 2, "Qwen2 num_key_value_heads.")
flags.DEFINE_integer("intermediate_size", 688, "Qwen2 intermediate_size.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.mark_flag_as_required("output_dir")


def random_codes(rng, num_items, num_levels, codebook_size):
  """Distinct random semantic IDs (rejection of duplicates)."""
  codes = np.zeros([0, num_levels], np.int64)
  while len(codes) < num_items:
    extra = rng.integers(0, codebook_size, (num_items, num_levels))
    codes = np.unique(np.concatenate([codes, extra]), axis=0)
  return rng.permutation(codes)[:num_items]


def main(argv):
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  table_path = os.path.join(FLAGS.output_dir, "item_table.tsv")
  write_item_table(table_path, np.arange(FLAGS.num_items),
                   random_codes(rng, FLAGS.num_items, FLAGS.num_levels,
                                FLAGS.codebook_size),
                   rng.random(FLAGS.num_items))
  graph = graphs.get(FLAGS.graph).graph_config(
      num_levels=FLAGS.num_levels, codebook_size=FLAGS.codebook_size)
  template = graph.template
  model = Qwen2ForCausalLM(Qwen2Config(
      vocab_size=template.vocab_size, hidden_size=FLAGS.hidden_size,
      intermediate_size=FLAGS.intermediate_size,
      num_hidden_layers=FLAGS.num_hidden_layers,
      num_attention_heads=FLAGS.num_attention_heads,
      num_key_value_heads=FLAGS.num_key_value_heads), seed=FLAGS.seed)
  hf_dir = os.path.join(FLAGS.output_dir, "hf")
  save_hf_checkpoint(model, hf_dir)
  save_prompt_spec(hf_dir, graphs.prompt_scene(FLAGS.graph), FLAGS.num_levels,
                   FLAGS.codebook_size, graph.behavior.max_len)
  print(json.dumps({"item_table": table_path, "checkpoint_dir": hf_dir}))


if __name__ == "__main__":
  from absl import app
  app.run(main)
