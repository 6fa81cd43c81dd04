"""The `tf-genrec train` step: a Qwen2 generator on semantic-ID histories.

train_generator(TrainOptions) trains on the leave-one-out training split of
a dataset directory with a Recipe (presets.py): a schedule in epochs, a
validation Recall@10 through the constrained beam search every few epochs on
a fixed sample of validation users, early stopping, and the best validated
model kept. The test split is never read; `refit` adds the validation items
for the final test-time model (then nothing validates, so it trains `steps`
or the epochs given). Writes a Hugging Face Qwen2 checkpoint (config.json +
model.safetensors + generation_config.json with the prompt it learned) to
<output_dir>/hf and returns the report also written to
<output_dir>/train_report.json. Re-running with the same output_dir resumes.

With TF_CONFIG naming several workers (training/distribute.py), every worker
runs this with the same options and a shared output_dir: batch_size is the
global batch, split across them; only the chief writes checkpoints, the HF
checkpoint and the report. A checkpoint resumes under any worker count.
"""
import dataclasses
import json
import math
import os
import shutil
from typing import Optional

import numpy as np
from absl import logging

import graphs
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.generation.generation_config import save_prompt_spec
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.models.sasrec.model import load_sasrec
from tf_genrec.options import OptionsError, option, refused_as
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.training import distribute
from tf_genrec.training.augment import drop_items
from tf_genrec.training.examples import build_sequences
from tf_genrec.training.optimizer import OptimizerConfig
from tf_genrec.training.presets import PRESETS, Recipe
from tf_genrec.training.trainer import TrainConfig, Trainer
from tf_genrec.training.validation import (BeamRecallValidator,
                                           ValidationConfig)

_DEFAULT_CODEBOOK_SIZE = 256  # for item tables that record no K


@dataclasses.dataclass(frozen=True)
class TrainOptions(Recipe):
  """A Recipe plus the data, the prompt and the run's bookkeeping."""
  item_table: str = option(None, "item_table.tsv from build_semantic_ids.",
                           required=True)
  output_dir: str = option(None, "Checkpoints + the final HF checkpoint.",
                           required=True)
  data_dir: Optional[str] = option(
      None, "Dataset directory (default: ../shared/datasets/"
      "amazon-scientific from the repo).")
  preset: str = option("recall_default", "Named recipe "
                       "(tf_genrec/training/presets.py); flags given "
                       "override it.", choices=sorted(PRESETS))
  graph: str = option("ad_recall", "Scene whose prompt template the "
                      "generator learns.", choices=graphs.SCENES)
  codebook_size: Optional[int] = option(
      None, "K, codes per level (default: the one the item table records, "
      "else 256; a different value is an error).")
  max_history: int = option(50, "Most recent items in a prompt.")
  full_items: int = option(0, "Prompt compression: only the most recent "
                           "full_items items keep every SID level (0: no "
                           "compression; docs/quality.md).")
  old_item_levels: int = option(1, "Prompt compression: SID levels kept of "
                                "the items before the last full_items.")
  steps: int = option(0, "Schedule length in steps instead of --epochs (0: "
                      "from --epochs).")
  valid_users: int = option(ValidationConfig.num_users, "Fixed sample of "
                            "validation users (0: all).")
  valid_beam_width: int = option(ValidationConfig.beam_width,
                                 "Beam width of the validation passes.")
  item_loss_weight: float = option(
      0.0, "Weight of the training-only item-ID softmax at each item's first "
      "SID position (needs one item per SID); 0 disables it.")
  teacher_dir: Optional[str] = option(
      None, "A SASRec saved by `tf-genrec train_sasrec --model_output`, "
      "trained on the same training split: its next-item distributions "
      "become soft SID targets (needs one item per SID).")
  distill_temperature: float = option(1.0, "Temperature of the teacher's "
                                      "item softmax.")
  warmup_steps: int = option(200, "Linear warm-up steps.")
  refit: bool = option(
      False, "Final test-time model: also train on each user's validation "
      "item (hyper-parameters chosen on validation beforehand); nothing "
      "validates, so it trains the whole schedule: pass --steps=<best_"
      "validation step of the validation run> to refit for the validated "
      "length.")
  max_users: int = option(0, "Use only the first N users (0: all).")
  seed: int = option(0, "Initialisation and shuffling seed.")
  log_every: int = option(TrainConfig.log_every, "Steps between training "
                          "loss logs (the report's loss_curve points).")

  @classmethod
  def from_preset(cls, preset="recall_default", **overrides):
    """The named preset's Recipe with `overrides` on top."""
    if preset not in PRESETS:
      raise OptionsError(f"preset must be one of {sorted(PRESETS)}, got "
                         f"{preset!r}")
    return cls(**dict(dataclasses.asdict(PRESETS[preset]), preset=preset,
                      **overrides))

  def recipe(self) -> dict:
    """The Recipe fields in effect (the preset's, or overridden)."""
    return {f.name: getattr(self, f.name)
            for f in dataclasses.fields(Recipe)}


def codes_by_item_id(table, num_items):
  """[num_items, L] codes, row = item id (the teacher's output columns)."""
  if sorted(table.item_ids.tolist()) != list(range(num_items)):
    raise ValueError(f"the item table must list item ids 0..{num_items - 1} "
                     f"once each, got {len(table.item_ids)} rows")
  codes = np.empty_like(table.codes)
  codes[table.item_ids] = table.codes
  return codes


def train_generator(options: TrainOptions) -> dict:
  """Trains, writes <output_dir>/hf and train_report.json; the report."""
  o = options
  if not o.item_table or not o.output_dir:
    raise OptionsError("item_table and output_dir are required, got "
                       f"{o.item_table!r} and {o.output_dir!r}")
  if o.log_every < 1:
    raise OptionsError(f"log_every must be >= 1, got {o.log_every}")
  # First: a multi-worker strategy must start before any TensorFlow op.
  with refused_as("TF_CONFIG"):
    strategy = distribute.strategy_from_env()
  chief = distribute.is_chief(strategy)
  with refused_as("item_table/codebook_size"):
    table = read_item_table(o.item_table, o.codebook_size)
  codebook_size = table.codebook_size or _DEFAULT_CODEBOOK_SIZE
  item_codes = dict(zip(table.item_ids.tolist(), table.codes.tolist()))
  with refused_as("full_items/old_item_levels"):
    graph = graphs.get(o.graph).graph_config(
        num_levels=table.num_levels, codebook_size=codebook_size,
        max_history=o.max_history, full_items=o.full_items,
        old_item_levels=o.old_item_levels)
  template = graph.template

  dataset = load_dataset(o.data_dir)
  histories = dataset.histories[:o.max_users or None]
  split = leave_one_out(histories)
  fit_histories = split.fit_histories(o.refit)
  fit_histories = fit_histories.select(fit_histories.lengths > 0)

  def epoch_sequences(step):
    rng = np.random.default_rng([o.seed, step])
    return build_sequences(drop_items(fit_histories, o.item_drop_rate, rng),
                           item_codes, template, o.max_history)

  # Without augmentation every epoch sees the same sequences: build them once.
  train = (epoch_sequences if o.item_drop_rate else build_sequences(
      fit_histories, item_codes, template, o.max_history))
  # A validation sequence is the validation inputs + their target: h[:-1].
  valid = [] if o.refit else build_sequences(
      split.test_inputs, item_codes, template, o.max_history)
  logging.info("%d training / %d validation sequences", len(fit_histories),
               len(valid))

  with strategy.scope():
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=template.vocab_size, hidden_size=o.hidden_size,
        intermediate_size=o.intermediate_size,
        num_hidden_layers=o.num_hidden_layers,
        num_attention_heads=o.num_attention_heads,
        num_key_value_heads=o.num_key_value_heads,
        max_position_embeddings=max(1024, template.max_prompt_len + 16),
        tie_word_embeddings=True), seed=o.seed)
  steps_per_epoch = math.ceil(len(fit_histories) / o.batch_size)
  total_steps = o.steps or o.epochs * steps_per_epoch
  eval_every = 0 if o.refit else round(o.eval_every_epochs * steps_per_epoch)
  logging.info("%d steps per epoch, %d steps, validation every %d steps",
               steps_per_epoch, total_steps, eval_every)
  config = TrainConfig(
      batch_size=o.batch_size, seed=o.seed, dropout=o.dropout,
      sid_softmax=o.sid_softmax, item_loss_weight=o.item_loss_weight,
      distill_weight=o.distill_weight,
      distill_temperature=o.distill_temperature,
      eval_every=eval_every, patience=o.patience, log_every=o.log_every,
      optimizer=OptimizerConfig(learning_rate=o.learning_rate,
                                weight_decay=o.weight_decay,
                                warmup_steps=o.warmup_steps,
                                total_steps=total_steps))
  trie = (SemanticIdTrie(table.codes, codebook_size)
          if o.sid_softmax == "trie" else None)
  teacher = load_sasrec(o.teacher_dir) if o.teacher_dir else None
  needs_items = o.item_loss_weight > 0 or o.distill_weight > 0
  trainer = Trainer(model, template, config, o.output_dir, trie,
                    codes_by_item_id(table, dataset.num_items)
                    if needs_items else None, teacher, strategy)
  validator = BeamRecallValidator(
      split.valid_inputs, split.valid_targets, table, template,
      o.max_history, o.sid_softmax,
      ValidationConfig(num_users=o.valid_users,
                       beam_width=o.valid_beam_width)
  ) if eval_every else None
  train_loss = trainer.fit(train, valid, validator)
  valid_loss = trainer.evaluate_loss(valid) if valid else None
  hf_dir = os.path.join(o.output_dir, "hf")
  best = trainer.best_state() if validator else None
  if chief:
    if best:  # The best validated model is the result, not the last one.
      shutil.rmtree(hf_dir, ignore_errors=True)
      shutil.copytree(trainer.best_dir, hf_dir)
    else:
      trainer.save_hf(hf_dir)
    save_prompt_spec(hf_dir, o.graph, table.num_levels, codebook_size,
                     o.max_history, template.full_items,
                     template.old_item_levels)
  report = {"preset": o.preset, "recipe_in_effect": o.recipe(),
            "train_loss": train_loss, "valid_loss": valid_loss,
            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            "steps_run": trainer.step,
            "loss_curve": trainer.loss_curve,
            "replicas": strategy.num_replicas_in_sync,
            "best_validation": best,
            "checkpoint_dir": hf_dir, "train_sequences": len(fit_histories),
            "refit": o.refit, "sid_softmax": o.sid_softmax,
            "item_drop_rate": o.item_drop_rate,
            "item_loss_weight": o.item_loss_weight,
            "teacher_dir": o.teacher_dir,
            "distill_weight": o.distill_weight,
            "distill_temperature": o.distill_temperature}
  if chief:
    with open(os.path.join(o.output_dir, "train_report.json"), "w") as f:
      json.dump(report, f, indent=1)
  return report
