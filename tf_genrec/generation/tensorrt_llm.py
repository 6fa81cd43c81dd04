"""The TensorRT-LLM generation engine, Python side: what the export checks.

The engine itself is C++ (custom_ops/engine/tensorrt_llm/, docs/tensorrt_llm.md)
in its own op library, built only on machines with TensorRT-LLM 1.2.x: the
last line with the C++ Executor (upstream deleted it afterwards).
"""
import json
import os

TENSORRT_LLM_VERSION = "1.2"  # Releases 1.2.x.
# TensorRT-LLM's largest beam width (kTensorRtLlmMaxBeamWidth in C++).
MAX_BEAM_WIDTH = 256
LIBRARY_NAME = "_tf_genrec_tensorrt_llm_ops.so"
# The settings tools/build_engine.py records beside the engine.
SETTINGS_NAME = "tf_genrec_engine.json"

_OPS_DIR = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "ops")


def library_path() -> str:
  return os.path.join(_OPS_DIR, LIBRARY_NAME)


def missing_library_message() -> str:
  return (f"the tensorrt_llm engine needs the op library {library_path()}, "
          "which this installation lacks: on a machine with a GPU install "
          f"TensorRT-LLM {TENSORRT_LLM_VERSION}.x (pip install "
          f"'tensorrt_llm=={TENSORRT_LLM_VERSION}.*') and rebuild the ops "
          "with TENSORRT_LLM_ROOT=<its site-packages/tensorrt_llm> python "
          "setup.py build_ext --inplace "
          "(docs/tensorrt_llm.md)")


def require_library() -> str:
  """The library's path; RuntimeError saying what to install if missing."""
  path = library_path()
  if not os.path.exists(path):
    raise RuntimeError(missing_library_message())
  return path


def check_export(max_beam_width: int, sid_softmax: str):
  """What `tf-genrec export --engine=tensorrt_llm` checks before building.

  ValueError for what the engine cannot serve exactly, RuntimeError (saying
  what to install) when the op library is missing.
  """
  if max_beam_width > MAX_BEAM_WIDTH:
    raise ValueError(
        f"max_beam_width={max_beam_width} exceeds TensorRT-LLM's limit of "
        f"{MAX_BEAM_WIDTH} beams: export with --max_beam_width<="
        f"{MAX_BEAM_WIDTH} or another --engine")
  if sid_softmax != "trie":
    raise ValueError(
        f"sid_softmax={sid_softmax!r}: the tensorrt_llm engine can only "
        "reproduce sid_softmax='trie' (its beam search renormalises over the "
        "trie children); use --engine=cpu or --engine=tf for this model")
  require_library()


def check_engine_settings(settings: dict, max_beam_width: int,
                          max_prompt_len: int, num_levels: int):
  """ValueError if the engine was built too small for the export."""
  needs = {"max_beam_width": max_beam_width, "max_input_len": max_prompt_len,
           "max_output_len": num_levels}
  for key, need in needs.items():
    if settings[key] < need:
      raise ValueError(
          f"the TensorRT-LLM engine has {key}={settings[key]} < {need} the "
          "export needs: rebuild it with `tf-genrec build_engine`")


def load_engine_settings(engine_dir, max_beam_width: int, max_prompt_len: int,
                         num_levels: int) -> dict:
  """The settings build_engine recorded in engine_dir, checked for the export
  (which copies the directory into the SavedModel's assets)."""
  path = os.path.join(engine_dir, SETTINGS_NAME)
  if not os.path.exists(path):
    raise ValueError(f"{path} is missing: build the engine with "
                     "`tf-genrec build_engine`")
  with open(path) as f:
    settings = json.load(f)
  check_engine_settings(settings, max_beam_width, max_prompt_len, num_levels)
  return settings
