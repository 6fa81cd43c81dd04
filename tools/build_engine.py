"""tf-genrec build_engine: a TensorRT-LLM engine of the generator, for export.

Converts the Hugging Face Qwen2 checkpoint `tf-genrec train` writes with
TensorRT-LLM's Qwen converter and builds it with `trtllm-build`, sized for
the recall path: beam search up to --max_beam_width, prompts up to the
scene template's max_prompt_len, exactly L new tokens, float32 logits for the
trie logits processor, paged KV cache with block reuse (requests share their
prompt prefix). The settings are recorded beside the engine
(tf_genrec_engine.json) for the export to check. Needs a GPU and TensorRT-LLM
1.2.x (docs/tensorrt_llm.md); --dry_run prints the commands only.

  tf-genrec build_engine --checkpoint_dir=runs/demo/generator \
    --item_table=runs/demo/sids/item_table.tsv --output_dir=runs/demo/trt_engine
"""
import json
import os
import shlex
import subprocess

from absl import flags, logging

import graphs
from tf_genrec.generation import tensorrt_llm
from tf_genrec.tables.item_table import read_item_table

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint_dir", None, "HF Qwen2 checkpoint directory.")
flags.DEFINE_string("item_table", None, "item_table.tsv (gives L).")
flags.DEFINE_string("output_dir", None, "Engine directory to write.")
flags.DEFINE_enum("graph", "ad_recall", graphs.SCENES, "Scene (prompt size).")
flags.DEFINE_bool("with_profile", False, "ad_recall: profile tokens.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("max_beam_width", tensorrt_llm.MAX_BEAM_WIDTH,
                     "Largest beam width the export may use (<= 256).")
flags.DEFINE_integer("max_batch_size", 64, "Requests per executor step.")
flags.DEFINE_enum("dtype", "float16", ["float16", "bfloat16", "float32"],
                  "Weight and activation dtype.")
flags.DEFINE_integer("tokens_per_block", 32, "KV cache block size (tokens); "
                     "blocks are the unit of prefix reuse.")
flags.DEFINE_bool("dry_run", False, "Print the commands, run nothing.")
flags.mark_flags_as_required(["checkpoint_dir", "item_table", "output_dir"])

def settings_from_flags() -> tensorrt_llm.EngineSettings:
  table = read_item_table(FLAGS.item_table)
  scene = {"with_profile": True} if FLAGS.with_profile else {}
  config = graphs.get(FLAGS.graph).graph_config(
      num_levels=table.num_levels, codebook_size=FLAGS.codebook_size,
      max_beam_width=FLAGS.max_beam_width,
      default_beam_width=min(64, FLAGS.max_beam_width), **scene)
  with open(os.path.join(FLAGS.checkpoint_dir, "config.json")) as f:
    hf_config = json.load(f)
  return tensorrt_llm.EngineSettings(
      max_beam_width=FLAGS.max_beam_width,
      max_input_len=config.template.max_prompt_len,
      max_output_len=config.template.num_levels,
      max_batch_size=FLAGS.max_batch_size, dtype=FLAGS.dtype,
      tokens_per_block=FLAGS.tokens_per_block,
      end_id=tensorrt_llm.end_id(hf_config, config.template.sid_offset))


def main(argv):
  del argv
  settings = settings_from_flags()
  trt_checkpoint = os.path.join(FLAGS.output_dir, "trtllm_checkpoint")
  commands = [tensorrt_llm.convert_command(FLAGS.checkpoint_dir, trt_checkpoint,
                              settings.dtype),
              tensorrt_llm.build_command(trt_checkpoint, FLAGS.output_dir, settings)]
  for command in commands:
    print(shlex.join(command))
    if not FLAGS.dry_run:
      subprocess.run(command, check=True)
  if FLAGS.dry_run:
    return
  path = tensorrt_llm.write_settings(FLAGS.output_dir, settings)
  logging.info("engine in %s, settings in %s", FLAGS.output_dir, path)


if __name__ == "__main__":
  from absl import app
  app.run(main)
