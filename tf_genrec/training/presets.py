"""Named training recipes of `tf-genrec train --preset=NAME`.

A preset is a Recipe: the model and schedule of one recipe chosen on
amazon-scientific validation (docs/quality.md); options given (flags on the
command line) override it. `recall_default` is the Recipe's defaults and the
tool's default preset. The schedule is in epochs with early stopping on
validation Recall@10 through the constrained beam search, so it adapts to the
size of the data.
"""
import dataclasses

from tf_genrec.generation.generation_config import SID_SOFTMAXES
from tf_genrec.options import option


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The hyper-parameters a preset fixes (TrainOptions extends it)."""
  # Model: 4 x 128 Qwen2 (6 layers and 2x width were no better on
  # validation, docs/quality.md).
  hidden_size: int = option(128, "Qwen2 hidden_size.")
  num_hidden_layers: int = option(4, "Qwen2 num_hidden_layers.")
  num_attention_heads: int = option(4, "Qwen2 num_attention_heads.")
  num_key_value_heads: int = option(2, "Qwen2 num_key_value_heads.")
  intermediate_size: int = option(344, "Qwen2 intermediate_size.")
  batch_size: int = option(64, "Sequences per step.")
  learning_rate: float = option(2e-3, "Peak learning rate.")
  weight_decay: float = option(0.05, "AdamW decoupled weight decay.")
  dropout: float = option(0.2, "Training-only dropout of embeddings, "
                          "attention probabilities and residual branches.")
  item_drop_rate: float = option(
      0.15, "Per-epoch augmentation: each training-history item dropped with "
      "this probability (0.15: the best validation Recall@10 in "
      "docs/quality.md).")
  sid_softmax: str = option(
      "level", "Each SID target against its level's K codes, or only "
      "against its trie siblings (recorded in the checkpoint's "
      "generation_config.json for the export).", choices=SID_SOFTMAXES)
  # Schedule: cosine over `epochs`, a validation every 2 epochs, stop after
  # 5 validations without a better Recall@10, keep the best. 24 epochs:
  # on amazon-scientific validation 23 epochs (3000 steps, dropout 0.2)
  # came within 0.001 Recall@10 of 38 (one standard error is 0.0035) at
  # 60% of the cost (docs/quality.md).
  epochs: int = option(24, "Schedule length in epochs over the training "
                       "histories (the cosine decay's end); early stopping "
                       "may end sooner.")
  eval_every_epochs: float = option(
      2.0, "Epochs between validation Recall@10 passes (beam search on "
      "--valid_users users); 0: no validation, the final model is kept.")
  patience: int = option(5, "Validation passes without a better Recall@10 "
                         "before stopping (0: never stop early).")
  distill_weight: float = option(0.0, "Share of each SID target's loss "
                                 "taken by the teacher's soft target (0: no "
                                 "teacher).")


RECALL_DEFAULT = Recipe()

PRESETS = {
    "recall_default": RECALL_DEFAULT,
    # The teacher recipe: SASRec distilled into the SID head (needs
    # --teacher_dir, a SASRec of `tf-genrec train_sasrec --model_output`).
    "recall_distill": dataclasses.replace(RECALL_DEFAULT, distill_weight=0.5,
                                          epochs=60),
}
