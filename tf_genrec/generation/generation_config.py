"""How a checkpoint must be decoded, saved beside its weights.

The per-level normalisation (`sid_softmax`) is fixed by training, so the
trainer records it in the checkpoint directory's generation_config.json (the
file Hugging Face keeps generation settings in) and the export reads it
back; a mismatch would silently rank with scores the model never learned.
"""
import json
import os

from tf_genrec.generation.beam_search import SID_SOFTMAXES

GENERATION_CONFIG_NAME = "generation_config.json"
_DEFAULT_SID_SOFTMAX = "level"  # checkpoints without the file were trained so


def save_sid_softmax(model_dir, sid_softmax: str):
  if sid_softmax not in SID_SOFTMAXES:
    raise ValueError(f"sid_softmax must be one of {SID_SOFTMAXES}, got "
                     f"{sid_softmax!r}")
  with open(os.path.join(model_dir, GENERATION_CONFIG_NAME), "w") as f:
    json.dump({"sid_softmax": sid_softmax}, f, indent=2)


def load_sid_softmax(model_dir) -> str:
  path = os.path.join(model_dir, GENERATION_CONFIG_NAME)
  if not os.path.exists(path):
    return _DEFAULT_SID_SOFTMAX
  with open(path) as f:
    value = json.load(f).get("sid_softmax", _DEFAULT_SID_SOFTMAX)
  if value not in SID_SOFTMAXES:
    raise ValueError(f"{path}: sid_softmax must be one of {SID_SOFTMAXES}, "
                     f"got {value!r}")
  return value
