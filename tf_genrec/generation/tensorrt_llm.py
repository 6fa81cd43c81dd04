"""The TensorRT-LLM generation engine, Python side: what the export checks.

Also the engine build settings and commands tools/build_engine.py runs.
The engine itself is C++ (custom_ops/engine/tensorrt_llm/, docs/tensorrt_llm.md)
in its own op library, built only on machines with TensorRT-LLM 1.2.x: the
last line with the C++ Executor (upstream deleted it afterwards).
"""
import dataclasses
import json
import os
import sys
from typing import List

TENSORRT_LLM_VERSION = "1.2"  # Releases 1.2.x.
# TensorRT-LLM's largest beam width (kTensorRtLlmMaxBeamWidth in C++).
MAX_BEAM_WIDTH = 256
LIBRARY_NAME = "_tf_genrec_tensorrt_llm_ops.so"
# The settings tools/build_engine.py records beside the engine.
SETTINGS_NAME = "tf_genrec_engine.json"
# The engine resource's init asset (format:
# custom_ops/engine/tensorrt_llm/engine_assets.h).
ASSETS_NAME = "tf_genrec_tensorrt_llm.txt"

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


def engine_files(engine_dir) -> List[str]:
  """The files of engine_dir the executor reads (trtllm-build's flat output:
  config.json, rank<i>.engine; plus the recorded settings); subdirectories
  such as build_engine's converted checkpoint are left out."""
  names = sorted(n for n in os.listdir(engine_dir)
                 if os.path.isfile(os.path.join(engine_dir, n)))
  if "config.json" not in names:
    raise ValueError(f"{engine_dir} has no config.json: not an engine "
                     "directory written by `tf-genrec build_engine`")
  if ASSETS_NAME in names:
    raise ValueError(f"{engine_dir} must not contain {ASSETS_NAME} (the "
                     "export writes it)")
  return [os.path.join(engine_dir, n) for n in names]


def write_assets(out_dir, engine_dir, trie, vocab_size: int,
                 max_beam_width: int, max_prompt_len: int):
  """The engine resource's assets: (init file written to out_dir, the engine
  files to copy beside it). Checks the engine's settings for the export."""
  settings = load_engine_settings(engine_dir, max_beam_width, max_prompt_len,
                                  trie.num_levels)
  files = engine_files(engine_dir)
  path = os.path.join(out_dir, ASSETS_NAME)
  with open(path, "w") as f:
    f.write(f"vocab_size {int(vocab_size)}\nend_id {int(settings['end_id'])}"
            f"\nmax_beam_width {int(settings['max_beam_width'])}\n"
            f"num_sids {trie.num_sids}\n")
    for row in trie.sids_np:
      f.write(" ".join(str(int(c)) for c in row) + "\n")
  return path, files


# TensorRT-LLM's Qwen converter, run in the TensorRT-LLM environment (the
# wheel has no examples/ directory, so its model API is called directly).
_CONVERT = ("import sys; from tensorrt_llm.models import QWenForCausalLM; "
            "QWenForCausalLM.from_hugging_face(sys.argv[1], dtype=sys.argv[3])"
            ".save_checkpoint(sys.argv[2])")


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  """What the recall path needs of the engine; recorded beside it."""
  max_beam_width: int
  max_input_len: int  # The scene template's max_prompt_len.
  max_output_len: int  # L: one semantic ID.
  max_batch_size: int
  dtype: str
  tokens_per_block: int
  end_id: int  # A non-SID token: the trie processor masks it.
  tensorrt_llm_version: str = TENSORRT_LLM_VERSION
  logits_dtype: str = "float32"  # What the trie logits processor reads.
  paged_kv_cache: bool = True
  enable_block_reuse: bool = True

  def __post_init__(self):
    if not 1 <= self.max_beam_width <= MAX_BEAM_WIDTH:
      raise ValueError(
          f"max_beam_width={self.max_beam_width} must be in [1, "
          f"{MAX_BEAM_WIDTH}] (TensorRT-LLM's limit)")
    for name in ("max_input_len", "max_output_len", "max_batch_size",
                 "tokens_per_block"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


def end_id(hf_config: dict, sid_offset: int) -> int:
  """The checkpoint's EOS if it is not a semantic-ID token, else its pad."""
  for key in ("eos_token_id", "pad_token_id"):
    token = hf_config.get(key)
    if isinstance(token, int) and 0 <= token < sid_offset:
      return token
  return 0  # Below sid_offset: the template's first special token.


def convert_command(checkpoint_dir, trt_checkpoint_dir, dtype) -> List[str]:
  return [sys.executable, "-c", _CONVERT, checkpoint_dir, trt_checkpoint_dir,
          dtype]


def build_command(trt_checkpoint_dir, output_dir,
                  s: EngineSettings) -> List[str]:
  return [
      "trtllm-build",
      f"--checkpoint_dir={trt_checkpoint_dir}",
      f"--output_dir={output_dir}",
      f"--max_beam_width={s.max_beam_width}",
      f"--max_batch_size={s.max_batch_size}",
      f"--max_input_len={s.max_input_len}",
      f"--max_seq_len={s.max_input_len + s.max_output_len}",
      # Prefill of a whole batch of the longest prompts in one step.
      f"--max_num_tokens={s.max_batch_size * s.max_input_len}",
      f"--logits_dtype={s.logits_dtype}",
      "--kv_cache_type=paged",
      f"--tokens_per_block={s.tokens_per_block}",
      # Block reuse needs context attention over the paged cache.
      "--use_paged_context_fmha=enable",
      "--gemm_plugin=auto",
  ]


def write_settings(output_dir, settings: EngineSettings) -> str:
  path = os.path.join(output_dir, SETTINGS_NAME)
  with open(path, "w") as f:
    json.dump(dataclasses.asdict(settings), f, indent=2, sort_keys=True)
  return path
