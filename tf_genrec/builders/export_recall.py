"""The `tf-genrec export` step: checkpoint + item table + scene -> SavedModel.

export_recall_model(ExportOptions) composes a scene of graphs/ over a
trained checkpoint and writes <export_base_path>/<version> with warmup
requests. The prompt (scene, L, K, max_history) comes from the checkpoint's
generation_config.json; an option or item table that contradicts it is an
OptionsError naming both values. HSTU scenes export their model directory.
"""
import dataclasses
from typing import Optional

import numpy as np
from absl import logging

import graphs
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.hstu_export import export_hstu_scene
from tf_genrec.generation.generation_config import (SID_SOFTMAXES,
                                                    resolve_prompt_spec)
from tf_genrec.generation.generator import ENGINES
from tf_genrec.options import OptionsError, option, refused_as
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.tables.item_vocabulary import read_item_vocabulary

# For checkpoints that recorded no prompt (generation_config.py).
_PROMPT_DEFAULTS = {"scene": "ad_recall", "codebook_size": 256,
                    "max_history": 50, "full_items": 0,
                    "old_item_levels": 1}


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  checkpoint_dir: str = option(None, "HF Qwen2 checkpoint directory; for an "
                               "HSTU scene, the HSTU model directory.",
                               required=True)
  export_base_path: str = option(None, "Model base path; the SavedModel goes "
                                 "to <export_base_path>/<version>.",
                                 required=True)
  graph: Optional[str] = option(
      None, "Scene in graphs/ (default: the one the checkpoint was trained "
      "for, else ad_recall; required for HSTU scenes).",
      choices=graphs.SCENES + graphs.HSTU_SCENES)
  item_table: Optional[str] = option(
      None, "item_table.tsv (item -> codes); not used by HSTU scenes (model "
      "row r is item id r).")
  item_vocabulary: Optional[str] = option(
      None, "The catalogue's item ids, line n = item id n (tf-genrec "
      "convert --to=item_vocabulary): serving_default then takes and "
      "returns them (string or int64) instead of the item table's ids.")
  version: int = option(1, "Model version (positive integer).")
  model_name: str = option("tf_genrec", "Name in the warmup requests.")
  codebook_size: Optional[int] = option(
      None, "K, codes per level (default: the checkpoint's, else 256; a "
      "different value is an error).")
  max_history: Optional[int] = option(
      None, "Most recent behaviours kept (default: the checkpoint's, else "
      "50; a different value is an error).")
  max_beam_width: int = option(256, "W_max, fixed at export.")
  default_beam_width: int = option(64, "W when a request omits it.")
  default_top_n: int = option(300, "N when a request omits it.")
  generator_dtype: str = option(
      "float32", "engine=tf: the beam search's matmul dtype (bfloat16: "
      "faster on AVX512_BF16 CPUs, approximate); engine=cpu: the engine "
      "file's weight dtype (bfloat16: half the weight memory, float32 "
      "compute, approximate).", choices=("float32", "bfloat16"))
  engine: str = option("tf", "Generator: tf = TF-native beam search "
                       "(portable reference), cpu = the GenrecGenerate op "
                       "over the C++ CPU engine, tensorrt_llm = "
                       "the same op over the TensorRT-LLM engine in "
                       "engine_dir (GPU; docs/tensorrt_llm.md).",
                       choices=tuple(ENGINES))
  engine_dir: Optional[str] = option(
      None, "engine=tensorrt_llm: the engine directory `tf-genrec "
      "build_engine` wrote; its files are copied into the SavedModel's "
      "assets.")
  prefix_cache_bytes: int = option(0, "engine=cpu: the engine's prefix K/V "
                                   "cache across requests, in bytes (0: "
                                   "off).")
  sid_softmax: Optional[str] = option(
      None, "Override the per-level normalisation the checkpoint was "
      "trained with (default: its generation_config.json).",
      choices=SID_SOFTMAXES)
  exclude_history: bool = option(False, "Leave the user's clicked items out "
                                 "of the results (the next-ranked items "
                                 "move up).")
  with_profile: bool = option(False, "ad_recall: profile tokens as a "
                              "context input (context_ids/context_lengths).")
  branches: Optional[str] = option(None, "ad_recall_multi: the branches "
                                   "file (tf_genrec/builders/"
                                   "branch_config.py).")


def prompt_spec(options: ExportOptions, table) -> dict:
  """The trained prompt (PROMPT_KEYS) from the checkpoint; an
  option or item table that disagrees with it is an OptionsError naming
  both."""
  graph = options.graph
  given = {"scene": graph and graphs.prompt_scene(graph),
           "num_levels": table.num_levels,
           "codebook_size": table.codebook_size,  # the option's, or recorded
           "max_history": options.max_history}
  with refused_as("checkpoint_dir/item_table/options"):
    spec = resolve_prompt_spec(options.checkpoint_dir, given,
                               _PROMPT_DEFAULTS)
  spec["graph"] = graph or spec["scene"]
  return spec


def graph_config(options: ExportOptions, spec):
  scene = {"with_profile": True} if options.with_profile else {}
  if options.with_profile and spec["graph"] != "ad_recall":
    raise OptionsError(f"with_profile applies to ad_recall only, got graph="
                       f"{spec['graph']}")
  return graphs.get(spec["graph"]).graph_config(
      num_levels=spec["num_levels"], codebook_size=spec["codebook_size"],
      max_history=spec["max_history"], full_items=spec["full_items"],
      old_item_levels=spec["old_item_levels"],
      max_beam_width=options.max_beam_width,
      default_beam_width=options.default_beam_width,
      default_top_n=options.default_top_n,
      exclude_history=options.exclude_history, **scene)


def warmup_inputs(config, item_ids):
  """One small realistic request per scene, replayed at model load.

  item_ids: ids the signature takes (int64, or str with a vocabulary).
  """
  history = np.asarray(item_ids[:5])[np.newaxis]
  inputs = {
      "item_ids": history,
      "timestamps": np.arange(1, history.shape[1] + 1, dtype=np.int64)[None],
      "action_types": np.zeros(history.shape, np.int32),
      "lengths": np.array([history.shape[1]], np.int32),
      "request_time": np.array([history.shape[1] + 1], np.int64),
  }
  if config.context_input:
    inputs["context_ids"] = np.zeros([1, 1], np.int32)
    inputs["context_lengths"] = np.zeros([1], np.int32)
  return [inputs]


def export_recall_model(options: ExportOptions) -> str:
  """Writes the versioned SavedModel; returns its directory."""
  o = options
  if not o.checkpoint_dir or not o.export_base_path:
    raise OptionsError("checkpoint_dir and export_base_path are required, "
                       f"got {o.checkpoint_dir!r} and "
                       f"{o.export_base_path!r}")
  if o.graph in graphs.HSTU_SCENES:
    return export_hstu_scene(
        o.graph, o.checkpoint_dir, o.export_base_path, o.version,
        o.max_history or _PROMPT_DEFAULTS["max_history"], o.default_top_n,
        o.model_name)
  if not o.item_table:
    raise OptionsError("item_table is required for semantic-ID scenes, got "
                       f"graph={o.graph}")
  with refused_as("item_table/codebook_size"):
    table = read_item_table(o.item_table, o.codebook_size)
  spec = prompt_spec(o, table)
  config = graph_config(o, spec)
  if spec["graph"] == "ad_recall_multi" and not o.branches:
    raise OptionsError("graph=ad_recall_multi needs branches (a branches "
                       "file), got none")
  model = build_generative_recall(
      config, o.checkpoint_dir, o.item_table, o.generator_dtype,
      o.sid_softmax, o.engine, o.engine_dir, o.prefix_cache_bytes,
      o.item_vocabulary)
  signature_ids = table.item_ids
  if o.item_vocabulary:
    signature_ids = read_item_vocabulary(o.item_vocabulary)[table.item_ids]
  if spec["graph"] == "ad_recall_multi":
    model = graphs.get(spec["graph"]).build(config, o.branches, model)
  path = export_saved_model(model, o.export_base_path, o.version,
                            warmup_inputs(config, signature_ids),
                            o.model_name)
  logging.info("signature serving_default of %s", path)
  return path
