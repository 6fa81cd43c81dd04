"""tf-genrec train: a Qwen2 generator on semantic-ID user histories.

Trains on the leave-one-out training split of any dataset directory in the
shared layout (--data_dir), with the recipe of a named preset
(--preset, tf_genrec/training/presets.py; flags override it): a schedule in
epochs, a validation Recall@10 through the constrained beam search every few
epochs on a fixed sample of validation users, early stopping, and the best
validated model kept. The test split is never read; --refit adds the
validation items for the final test-time model (then nothing validates, so
it trains --steps or the epochs given). Writes a Hugging Face Qwen2
checkpoint (config.json + model.safetensors) to <output_dir>/hf that
`tf-genrec export` and transformers both open. Re-running with the same
--output_dir resumes.

  tf-genrec train --item_table=runs/demo/sids/item_table.tsv \
    --output_dir=runs/demo/generator --preset=recall_default
"""
import json
import math
import os
import shutil

import numpy as np
from absl import flags, logging

from tf_genrec import graphs
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import load_sasrec
from tf_genrec.generation.beam_search import SID_SOFTMAXES
from tf_genrec.generation.generation_config import save_prompt_spec
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.training.augment import drop_items
from tf_genrec.training.examples import build_sequences
from tf_genrec.training.optimizer import OptimizerConfig
from tf_genrec.training.presets import PRESETS, RECALL_DEFAULT, apply_preset
from tf_genrec.training.trainer import TrainConfig, Trainer
from tf_genrec.training.validation import BeamRecallValidator, ValidationConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_string("item_table", None, "item_table.tsv from build_semantic_ids.")
flags.DEFINE_enum("preset", "recall_default", sorted(PRESETS), "Named recipe "
                  "(tf_genrec/training/presets.py); flags given override it.")
flags.DEFINE_enum("graph", "ad_recall", graphs.SCENES, "Scene whose prompt "
                  "template the generator learns.")
flags.DEFINE_string("output_dir", None, "Checkpoints + the final HF checkpoint.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("max_history", 50, "Most recent items in a prompt.")
flags.DEFINE_integer("hidden_size", RECALL_DEFAULT["hidden_size"],
                     "Qwen2 hidden_size.")
flags.DEFINE_integer("num_hidden_layers", RECALL_DEFAULT["num_hidden_layers"],
                     "Qwen2 num_hidden_layers.")
flags.DEFINE_integer("num_attention_heads",
                     RECALL_DEFAULT["num_attention_heads"],
                     "Qwen2 num_attention_heads.")
flags.DEFINE_integer("num_key_value_heads",
                     RECALL_DEFAULT["num_key_value_heads"],
                     "Qwen2 num_key_value_heads.")
flags.DEFINE_integer("intermediate_size", RECALL_DEFAULT["intermediate_size"],
                     "Qwen2 intermediate_size.")
flags.DEFINE_integer("epochs", RECALL_DEFAULT["epochs"], "Schedule length "
                     "in epochs over the training histories (the cosine "
                     "decay's end); early stopping may end sooner.")
flags.DEFINE_integer("steps", 0, "Schedule length in steps instead of "
                     "--epochs (0: from --epochs).")
flags.DEFINE_float("eval_every_epochs", RECALL_DEFAULT["eval_every_epochs"],
                   "Epochs between validation Recall@10 passes (beam search "
                   "on --valid_users users); 0: no validation, the final "
                   "model is kept.")
flags.DEFINE_integer("patience", RECALL_DEFAULT["patience"], "Validation "
                     "passes without a better Recall@10 before stopping "
                     "(0: never stop early).")
flags.DEFINE_integer("valid_users", ValidationConfig.num_users, "Fixed "
                     "sample of validation users (0: all).")
flags.DEFINE_integer("valid_beam_width", ValidationConfig.beam_width,
                     "Beam width of the validation passes.")
flags.DEFINE_integer("batch_size", RECALL_DEFAULT["batch_size"],
                     "Sequences per step.")
flags.DEFINE_float("learning_rate", RECALL_DEFAULT["learning_rate"],
                   "Peak learning rate.")
flags.DEFINE_float("weight_decay", RECALL_DEFAULT["weight_decay"],
                   "AdamW decoupled weight decay.")
flags.DEFINE_float("dropout", RECALL_DEFAULT["dropout"],
                   "Training-only dropout of embeddings, "
                   "attention probabilities and residual branches.")
flags.DEFINE_enum("sid_softmax", RECALL_DEFAULT["sid_softmax"],
                  list(SID_SOFTMAXES),
                  "Each SID target against its level's K codes, or only "
                  "against its trie siblings (recorded in the checkpoint's "
                  "generation_config.json for the export).")
flags.DEFINE_float("item_drop_rate", RECALL_DEFAULT["item_drop_rate"],
                   "Per-epoch augmentation: each "
                   "training-history item dropped with this probability "
                   "(0.15: the best validation Recall@10 in docs/quality.md).")
flags.DEFINE_float("item_loss_weight", 0.0, "Weight of the training-only "
                   "item-ID softmax at each item's first SID position "
                   "(needs one item per SID); 0 disables it.")
flags.DEFINE_string("teacher_dir", None, "A SASRec saved by `tf-genrec "
                    "train_sasrec --model_output`, trained on the same "
                    "training split: its next-item distributions become soft "
                    "SID targets (needs one item per SID).")
flags.DEFINE_float("distill_weight", 0.0, "Share of each SID target's loss "
                   "taken by the teacher's soft target (0: no teacher).")
flags.DEFINE_float("distill_temperature", 1.0, "Temperature of the teacher's "
                   "item softmax.")
flags.DEFINE_integer("warmup_steps", 200, "Linear warm-up steps.")
flags.DEFINE_bool("refit", False, "Final test-time model: also train on each "
                  "user's validation item (hyper-parameters chosen on "
                  "validation beforehand); nothing validates, so it trains "
                  "the whole schedule: pass --steps=<best_validation step "
                  "of the validation run> to refit for the validated "
                  "length.")
flags.DEFINE_integer("max_users", 0, "Use only the first N users (0: all).")
flags.DEFINE_integer("seed", 0, "Initialisation and shuffling seed.")
flags.mark_flags_as_required(["item_table", "output_dir"])


def codes_by_item_id(table, num_items):
  """[num_items, L] codes, row = item id (the teacher's output columns)."""
  if sorted(table.item_ids.tolist()) != list(range(num_items)):
    raise ValueError(f"the item table must list item ids 0..{num_items - 1} "
                     f"once each, got {len(table.item_ids)} rows")
  codes = np.empty_like(table.codes)
  codes[table.item_ids] = table.codes
  return codes


def main(argv):
  del argv
  recipe = apply_preset(FLAGS.preset, FLAGS)  # preset + flags given
  table = read_item_table(FLAGS.item_table)
  item_codes = dict(zip(table.item_ids.tolist(), table.codes.tolist()))
  graph = graphs.get(FLAGS.graph).graph_config(
      num_levels=table.num_levels, codebook_size=FLAGS.codebook_size,
      max_history=FLAGS.max_history)
  template = graph.template

  dataset = load_dataset(FLAGS.data_dir)
  histories = dataset.histories[:FLAGS.max_users or None]
  split = leave_one_out(histories)
  fit_histories = [h for h in split.fit_histories(FLAGS.refit) if len(h)]

  def epoch_sequences(step):
    rng = np.random.default_rng([FLAGS.seed, step])
    return build_sequences(drop_items(fit_histories, FLAGS.item_drop_rate, rng),
                           item_codes, template, FLAGS.max_history)

  # Without augmentation every epoch sees the same sequences: build them once.
  train = (epoch_sequences if FLAGS.item_drop_rate else build_sequences(
      fit_histories, item_codes, template, FLAGS.max_history))
  valid = [] if FLAGS.refit else build_sequences(
      [list(h) + [t] for h, t in zip(split.valid_inputs, split.valid_targets)],
      item_codes, template, FLAGS.max_history)
  logging.info("%d training / %d validation sequences", len(fit_histories),
               len(valid))

  model = Qwen2ForCausalLM(Qwen2Config(
      vocab_size=template.vocab_size, hidden_size=FLAGS.hidden_size,
      intermediate_size=FLAGS.intermediate_size,
      num_hidden_layers=FLAGS.num_hidden_layers,
      num_attention_heads=FLAGS.num_attention_heads,
      num_key_value_heads=FLAGS.num_key_value_heads,
      max_position_embeddings=max(1024, template.max_prompt_len + 16),
      tie_word_embeddings=True), seed=FLAGS.seed)
  steps_per_epoch = math.ceil(len(fit_histories) / FLAGS.batch_size)
  total_steps = FLAGS.steps or FLAGS.epochs * steps_per_epoch
  eval_every = (0 if FLAGS.refit else
                round(FLAGS.eval_every_epochs * steps_per_epoch))
  logging.info("%d steps per epoch, %d steps, validation every %d steps",
               steps_per_epoch, total_steps, eval_every)
  config = TrainConfig(
      batch_size=FLAGS.batch_size, seed=FLAGS.seed, dropout=FLAGS.dropout,
      sid_softmax=FLAGS.sid_softmax, item_loss_weight=FLAGS.item_loss_weight,
      distill_weight=FLAGS.distill_weight,
      distill_temperature=FLAGS.distill_temperature,
      eval_every=eval_every, patience=FLAGS.patience,
      optimizer=OptimizerConfig(learning_rate=FLAGS.learning_rate,
                                weight_decay=FLAGS.weight_decay,
                                warmup_steps=FLAGS.warmup_steps,
                                total_steps=total_steps))
  trie = (SemanticIdTrie(table.codes, FLAGS.codebook_size)
          if FLAGS.sid_softmax == "trie" else None)
  teacher = load_sasrec(FLAGS.teacher_dir) if FLAGS.teacher_dir else None
  needs_items = FLAGS.item_loss_weight > 0 or FLAGS.distill_weight > 0
  trainer = Trainer(model, template, config, FLAGS.output_dir, trie,
                    codes_by_item_id(table, dataset.num_items)
                    if needs_items else None, teacher)
  validator = BeamRecallValidator(
      split.valid_inputs, split.valid_targets, table, template,
      FLAGS.max_history, FLAGS.sid_softmax,
      ValidationConfig(num_users=FLAGS.valid_users,
                       beam_width=FLAGS.valid_beam_width)
  ) if eval_every else None
  train_loss = trainer.fit(train, valid, validator)
  valid_loss = trainer.evaluate_loss(valid) if valid else None
  hf_dir = os.path.join(FLAGS.output_dir, "hf")
  best = trainer.best_state() if validator else None
  if best:  # The best validated model is the result, not the last one.
    shutil.rmtree(hf_dir, ignore_errors=True)
    shutil.copytree(trainer.best_dir, hf_dir)
  else:
    trainer.save_hf(hf_dir)
  save_prompt_spec(hf_dir, FLAGS.graph, table.num_levels, FLAGS.codebook_size,
                   FLAGS.max_history)
  report = {"preset": FLAGS.preset, "recipe_in_effect": recipe,
            "train_loss": train_loss, "valid_loss": valid_loss,
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "steps_run": int(trainer.optimizer.step),
            "best_validation": best,
            "checkpoint_dir": hf_dir, "train_sequences": len(fit_histories),
            "refit": FLAGS.refit, "sid_softmax": FLAGS.sid_softmax,
            "item_drop_rate": FLAGS.item_drop_rate,
            "item_loss_weight": FLAGS.item_loss_weight,
            "teacher_dir": FLAGS.teacher_dir,
            "distill_weight": FLAGS.distill_weight,
            "distill_temperature": FLAGS.distill_temperature}
  with open(os.path.join(FLAGS.output_dir, "train_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  print(json.dumps(report))


if __name__ == "__main__":
  from absl import app
  app.run(main)
