"""tf-genrec export: checkpoint + item table + scene -> versioned SavedModel.

  tf-genrec export --graph=ad_recall --checkpoint_dir=runs/demo/generator \
    --item_table=runs/demo/sids/item_table.tsv \
    --export_base_path=runs/demo/models/ad_recall --version=1
  tf-genrec export --graph=hstu_retrieval --checkpoint_dir=runs/hstu/model \
    --export_base_path=runs/hstu/models/hstu_retrieval --version=1

--graph=ad_recall_multi also needs --branches=<branches.json> (classic
branches beside the generative one, their quotas; docs/integration.md).
"""
import json

import numpy as np
from absl import app, flags, logging

from tf_genrec import graphs
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.hstu_export import export_hstu_scene
from tf_genrec.generation.beam_search import SID_SOFTMAXES
from tf_genrec.generation.generation_config import resolve_prompt_spec
from tf_genrec.generation.generator import ENGINES
from tf_genrec.tables.item_table import read_item_table

FLAGS = flags.FLAGS
flags.DEFINE_enum("graph", None, graphs.SCENES + graphs.HSTU_SCENES,
                  "Scene in graphs/ (default: the one the checkpoint was "
                  "trained for, else ad_recall; required for HSTU scenes).")
flags.DEFINE_string("checkpoint_dir", None, "HF Qwen2 checkpoint directory; "
                    "for an HSTU scene, the HSTU model directory.")
flags.DEFINE_string("item_table", None, "item_table.tsv (item -> codes); "
                    "not used by HSTU scenes (model row r is item id r).")
flags.DEFINE_string("export_base_path", None, "Model base path; the "
                    "SavedModel goes to <export_base_path>/<version>.")
flags.DEFINE_integer("version", 1, "Model version (positive integer).")
flags.DEFINE_string("model_name", "tf_genrec", "Name in the warmup requests.")
flags.DEFINE_integer("codebook_size", None, "K, codes per level (default: "
                     "the checkpoint's, else 256; a different value is an "
                     "error).")
flags.DEFINE_integer("max_history", None, "Most recent behaviours kept "
                     "(default: the checkpoint's, else 50; a different value "
                     "is an error).")
flags.DEFINE_integer("max_beam_width", 256, "W_max, fixed at export.")
flags.DEFINE_integer("default_beam_width", 64, "W when a request omits it.")
flags.DEFINE_integer("default_top_n", 300, "N when a request omits it.")
flags.DEFINE_enum("generator_dtype", "float32", ["float32", "bfloat16"],
                  "Beam-search matmul dtype (bfloat16: faster, approximate).")
flags.DEFINE_enum("engine", "tf", list(ENGINES),
                  "Generator: tf = TF-native beam search (portable "
                  "reference), cpu = the GenrecGenerate op over the C++ CPU "
                  "engine (float32), tensorrt_llm = the same op over the "
                  "TensorRT-LLM engine in --engine_dir (GPU; "
                  "docs/tensorrt_llm.md).")
flags.DEFINE_string("engine_dir", None, "--engine=tensorrt_llm: the engine "
                    "directory `tf-genrec build_engine` wrote; its files are "
                    "copied into the SavedModel's assets.")
flags.DEFINE_integer("prefix_cache_bytes", 0, "--engine=cpu: the engine's "
                     "prefix K/V cache across requests, in bytes (0: off).")
flags.DEFINE_enum("sid_softmax", None, list(SID_SOFTMAXES),
                  "Override the per-level normalisation the checkpoint was "
                  "trained with (default: its generation_config.json).")
flags.DEFINE_bool("exclude_history", False, "Leave the user's clicked items "
                  "out of the results (the next-ranked items move up).")
flags.DEFINE_bool("with_profile", False, "ad_recall: profile tokens as a "
                  "context input (context_ids/context_lengths).")
flags.DEFINE_string("branches", None, "ad_recall_multi: the branches file "
                    "(tf_genrec/builders/branch_config.py).")
flags.mark_flags_as_required(["checkpoint_dir", "export_base_path"])


# For checkpoints that recorded no prompt (generation_config.py).
_PROMPT_DEFAULTS = {"scene": "ad_recall", "codebook_size": 256,
                    "max_history": 50}


def prompt_spec_from_flags(num_levels):
  """The trained prompt (scene, L, K, max_history) from the checkpoint; a
  flag or item table that disagrees with it is a UsageError naming both."""
  graph = FLAGS.graph
  given = {"scene": graph and graphs.prompt_scene(graph),
           "num_levels": num_levels, "codebook_size": FLAGS.codebook_size,
           "max_history": FLAGS.max_history}
  try:
    spec = resolve_prompt_spec(FLAGS.checkpoint_dir, given, _PROMPT_DEFAULTS)
  except ValueError as e:
    raise app.UsageError(f"--checkpoint_dir/--item_table/flags: {e}") from e
  spec["graph"] = graph or spec["scene"]
  return spec


def graph_config_from_flags(spec):
  scene = {"with_profile": True} if FLAGS.with_profile else {}
  if FLAGS.with_profile and spec["graph"] != "ad_recall":
    raise flags.ValidationError("--with_profile applies to ad_recall only")
  return graphs.get(spec["graph"]).graph_config(
      num_levels=spec["num_levels"], codebook_size=spec["codebook_size"],
      max_history=spec["max_history"], max_beam_width=FLAGS.max_beam_width,
      default_beam_width=FLAGS.default_beam_width,
      default_top_n=FLAGS.default_top_n,
      exclude_history=FLAGS.exclude_history, **scene)


def warmup_inputs(config, item_ids):
  """One small realistic request per scene, replayed at model load."""
  history = np.asarray(item_ids[:5], np.int64)[np.newaxis]
  inputs = {
      "item_ids": history,
      "timestamps": np.arange(1, history.shape[1] + 1, dtype=np.int64)[None],
      "action_types": np.zeros_like(history, np.int32),
      "lengths": np.array([history.shape[1]], np.int32),
      "request_time": np.array([history.shape[1] + 1], np.int64),
  }
  if config.context_input:
    inputs["context_ids"] = np.zeros([1, 1], np.int32)
    inputs["context_lengths"] = np.zeros([1], np.int32)
  return [inputs]


def main(argv):
  del argv
  if FLAGS.graph in graphs.HSTU_SCENES:
    path = export_hstu_scene(FLAGS.graph, FLAGS.checkpoint_dir,
                             FLAGS.export_base_path, FLAGS.version,
                             FLAGS.max_history or
                             _PROMPT_DEFAULTS["max_history"],
                             FLAGS.default_top_n,
                             FLAGS.model_name)
    print(json.dumps({"export_dir": path}))
    return
  if not FLAGS.item_table:
    raise app.UsageError("--item_table is required for semantic-ID scenes")
  table = read_item_table(FLAGS.item_table)
  spec = prompt_spec_from_flags(table.num_levels)
  config = graph_config_from_flags(spec)
  model = build_generative_recall(config, FLAGS.checkpoint_dir,
                                  FLAGS.item_table, FLAGS.generator_dtype,
                                  FLAGS.sid_softmax, FLAGS.engine,
                                  FLAGS.engine_dir, FLAGS.prefix_cache_bytes)
  if spec["graph"] == "ad_recall_multi":
    if not FLAGS.branches:
      raise flags.ValidationError("--graph=ad_recall_multi needs --branches")
    model = graphs.get(spec["graph"]).build(config, FLAGS.branches, model)
  path = export_saved_model(model, FLAGS.export_base_path, FLAGS.version,
                            warmup_inputs(config, table.item_ids),
                            FLAGS.model_name)
  logging.info("signature serving_default of %s", path)
  print(json.dumps({"export_dir": path}))


if __name__ == "__main__":
  app.run(main)
