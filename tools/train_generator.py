"""tf-genrec train: a Qwen2 generator on semantic-ID user histories.

Trains on the leave-one-out training split (validation loss is logged on the
validation targets; the test split is never read; --refit adds the
validation items for the final test-time model), saves a Hugging Face Qwen2
checkpoint (config.json + model.safetensors) that `tf-genrec export` and
transformers both open. Re-running with the same --output_dir resumes.

  tf-genrec train --item_table=runs/demo/sids/item_table.tsv \
    --output_dir=runs/demo/generator
"""
import json
import os

import numpy as np
from absl import flags, logging

from tf_genrec import graphs
from tf_genrec.data.amazon import leave_one_out, load_amazon_scientific
from tf_genrec.evaluation.baselines import load_sasrec
from tf_genrec.generation.beam_search import SID_SOFTMAXES
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.training.augment import drop_items
from tf_genrec.training.examples import build_sequences
from tf_genrec.training.optimizer import OptimizerConfig
from tf_genrec.training.trainer import TrainConfig, Trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_string("item_table", None, "item_table.tsv from build_semantic_ids.")
flags.DEFINE_enum("graph", "ad_recall", graphs.SCENES, "Scene whose prompt "
                  "template the generator learns.")
flags.DEFINE_string("output_dir", None, "Checkpoints + the final HF checkpoint.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("max_history", 50, "Most recent items in a prompt.")
flags.DEFINE_integer("hidden_size", 128, "Qwen2 hidden_size.")
flags.DEFINE_integer("num_hidden_layers", 4, "Qwen2 num_hidden_layers.")
flags.DEFINE_integer("num_attention_heads", 4, "Qwen2 num_attention_heads.")
flags.DEFINE_integer("num_key_value_heads", 2, "Qwen2 num_key_value_heads.")
flags.DEFINE_integer("intermediate_size", 344, "Qwen2 intermediate_size.")
flags.DEFINE_integer("steps", 5000, "Training steps (5000 ~ 38 epochs of "
                     "amazon-scientific; with --dropout=0.2 the best "
                     "validation Recall@10 in docs/quality.md).")
flags.DEFINE_integer("batch_size", 64, "Sequences per step.")
flags.DEFINE_float("learning_rate", 2e-3, "Peak learning rate.")
flags.DEFINE_float("weight_decay", 0.05, "AdamW decoupled weight decay.")
flags.DEFINE_float("dropout", 0.2, "Training-only dropout of embeddings, "
                   "attention probabilities and residual branches.")
flags.DEFINE_enum("sid_softmax", "level", list(SID_SOFTMAXES),
                  "Each SID target against its level's K codes, or only "
                  "against its trie siblings (recorded in the checkpoint's "
                  "generation_config.json for the export).")
flags.DEFINE_float("item_drop_rate", 0.15, "Per-epoch augmentation: each "
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
                  "validation beforehand); no validation loss is logged.")
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
  table = read_item_table(FLAGS.item_table)
  item_codes = dict(zip(table.item_ids.tolist(), table.codes.tolist()))
  graph = graphs.get(FLAGS.graph).graph_config(
      num_levels=table.num_levels, codebook_size=FLAGS.codebook_size,
      max_history=FLAGS.max_history)
  template = graph.template

  dataset = load_amazon_scientific(FLAGS.data_dir)
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
  config = TrainConfig(
      batch_size=FLAGS.batch_size, seed=FLAGS.seed, dropout=FLAGS.dropout,
      sid_softmax=FLAGS.sid_softmax, item_loss_weight=FLAGS.item_loss_weight,
      distill_weight=FLAGS.distill_weight,
      distill_temperature=FLAGS.distill_temperature,
      optimizer=OptimizerConfig(learning_rate=FLAGS.learning_rate,
                                weight_decay=FLAGS.weight_decay,
                                warmup_steps=FLAGS.warmup_steps,
                                total_steps=FLAGS.steps))
  trie = (SemanticIdTrie(table.codes, FLAGS.codebook_size)
          if FLAGS.sid_softmax == "trie" else None)
  teacher = load_sasrec(FLAGS.teacher_dir) if FLAGS.teacher_dir else None
  needs_items = FLAGS.item_loss_weight > 0 or FLAGS.distill_weight > 0
  trainer = Trainer(model, template, config, FLAGS.output_dir, trie,
                    codes_by_item_id(table, dataset.num_items)
                    if needs_items else None, teacher)
  train_loss = trainer.fit(train, valid)
  valid_loss = trainer.evaluate_loss(valid) if valid else None
  hf_dir = trainer.save_hf(os.path.join(FLAGS.output_dir, "hf"))
  report = {"train_loss": train_loss, "valid_loss": valid_loss,
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
