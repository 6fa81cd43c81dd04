"""How a checkpoint must be decoded, saved beside its weights.

Training fixes what the serving graph must reproduce: the per-level
normalisation (`sid_softmax`) and the prompt the model learned (its scene,
the semantic-ID shape L x K, how many recent items a prompt holds). The
trainer records them in the checkpoint directory's generation_config.json
(the file Hugging Face keeps generation settings in) and the export reads
them back, so a user re-types none of them; a mismatch would otherwise
silently build prompts, or rank with scores, the model never learned.
"""
import json
import os

GENERATION_CONFIG_NAME = "generation_config.json"
# How the scores of one level's K codes are normalised: against all K
# ("level"), or against the codes the trie allows after the prefix ("trie").
SID_SOFTMAXES = ("level", "trie")


def check_sid_softmax(value, where="sid_softmax"):
  """Raises ValueError naming `where` unless value is in SID_SOFTMAXES."""
  if value not in SID_SOFTMAXES:
    raise ValueError(f"{where} must be one of {SID_SOFTMAXES}, got {value!r}")


_DEFAULT_SID_SOFTMAX = "level"  # checkpoints without the file were trained so
# What the serving prompt depends on, recorded by `tf-genrec train`.
PROMPT_KEYS = ("scene", "num_levels", "codebook_size", "max_history",
               "full_items", "old_item_levels")


def _path(model_dir):
  return os.path.join(model_dir, GENERATION_CONFIG_NAME)


def _read(model_dir) -> dict:
  if not os.path.exists(_path(model_dir)):
    return {}
  with open(_path(model_dir)) as f:
    return json.load(f)


def _update(model_dir, values: dict):
  """Merges `values` into the file, keeping what other writers recorded."""
  config = dict(_read(model_dir), **values)
  with open(_path(model_dir), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)


def save_sid_softmax(model_dir, sid_softmax: str):
  check_sid_softmax(sid_softmax)
  _update(model_dir, {"sid_softmax": sid_softmax})


def load_sid_softmax(model_dir) -> str:
  value = _read(model_dir).get("sid_softmax", _DEFAULT_SID_SOFTMAX)
  check_sid_softmax(value, f"{_path(model_dir)}: sid_softmax")
  return value


def save_prompt_spec(model_dir, scene: str, num_levels: int,
                     codebook_size: int, max_history: int,
                     full_items: int = 0, old_item_levels: int = 1):
  """Records the prompt a checkpoint was trained on (PROMPT_KEYS)."""
  _update(model_dir, {"scene": scene, "num_levels": int(num_levels),
                      "codebook_size": int(codebook_size),
                      "max_history": int(max_history),
                      "full_items": int(full_items),
                      "old_item_levels": int(old_item_levels)})


def load_prompt_spec(model_dir) -> dict:
  """The PROMPT_KEYS a checkpoint recorded ({} for older checkpoints)."""
  config = _read(model_dir)
  return {k: config[k] for k in PROMPT_KEYS if k in config}


def resolve_prompt_spec(model_dir, given: dict, defaults: dict) -> dict:
  """PROMPT_KEYS for an export: the checkpoint's values, else `defaults`.

  given: values the user set explicitly (None = not set). One that differs
  from what the checkpoint recorded raises ValueError naming both values.
  """
  recorded = load_prompt_spec(model_dir)
  resolved = {}
  for key in PROMPT_KEYS:
    value, trained = given.get(key), recorded.get(key)
    if value is not None and trained is not None and value != trained:
      raise ValueError(
          f"{key}={value!r} conflicts with the checkpoint, trained with "
          f"{key}={trained!r} ({_path(model_dir)}); drop the flag to use the "
          f"checkpoint's value")
    if value is None:
      value = trained if trained is not None else defaults.get(key)
    resolved[key] = value
  return resolved
