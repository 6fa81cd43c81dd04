"""Named training recipes of `tf-genrec train --preset=NAME`.

A preset is the set of `tf-genrec train` flag values of one recipe chosen on
amazon-scientific validation (docs/quality.md); flags given on the command
line override it. `recall_default` is also the tool's default. The schedule
is in epochs with early stopping on validation Recall@10 through the
constrained beam search, so it adapts to the size of the data.
"""
RECALL_DEFAULT = {
    # Model: 4 x 128 Qwen2 (6 layers and 2x width were no better on
    # validation, docs/quality.md).
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 344,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "weight_decay": 0.05,
    "dropout": 0.2,
    "item_drop_rate": 0.15,
    "sid_softmax": "level",
    # Schedule: cosine over `epochs`, a validation every 2 epochs, stop after
    # 5 validations without a better Recall@10, keep the best. 24 epochs:
    # on amazon-scientific validation 23 epochs (3000 steps, dropout 0.2)
    # came within 0.001 Recall@10 of 38 (one standard error is 0.0035) at
    # 60% of the cost (docs/quality.md).
    "epochs": 24,
    "eval_every_epochs": 2.0,
    "patience": 5,
}

PRESETS = {
    "recall_default": RECALL_DEFAULT,
    # The teacher recipe: SASRec distilled into the SID head (needs
    # --teacher_dir, a SASRec of `tf-genrec train_sasrec --model_output`).
    "recall_distill": dict(RECALL_DEFAULT, distill_weight=0.5, epochs=60),
}


def apply_preset(name: str, flag_values) -> dict:
  """Sets the preset's flags that the command line did not give.

  Returns the values in effect for the preset's flags (for the report).
  """
  if name not in PRESETS:
    raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got "
                     f"{name!r}")
  for flag, value in PRESETS[name].items():
    if not flag_values[flag].present:
      flag_values[flag].value = value
  return {flag: flag_values[flag].value for flag in PRESETS[name]}
