"""How a checkpoint must be decoded, saved beside its weights.

The per-level normalisation (`sid_softmax`) is fixed by training, so the
trainer records it in the checkpoint directory's generation_config.json (the
file Hugging Face keeps generation settings in) and the export reads it
back; a mismatch would silently rank with scores the model never learned.
"""
import json
import os

from tf_genrec.generation.beam_search import check_sid_softmax

GENERATION_CONFIG_NAME = "generation_config.json"
_DEFAULT_SID_SOFTMAX = "level"  # checkpoints without the file were trained so


def save_sid_softmax(model_dir, sid_softmax: str):
  check_sid_softmax(sid_softmax)
  with open(os.path.join(model_dir, GENERATION_CONFIG_NAME), "w") as f:
    json.dump({"sid_softmax": sid_softmax}, f, indent=2)


def load_sid_softmax(model_dir) -> str:
  path = os.path.join(model_dir, GENERATION_CONFIG_NAME)
  if not os.path.exists(path):
    return _DEFAULT_SID_SOFTMAX
  with open(path) as f:
    value = json.load(f).get("sid_softmax", _DEFAULT_SID_SOFTMAX)
  check_sid_softmax(value, f"{path}: sid_softmax")
  return value
