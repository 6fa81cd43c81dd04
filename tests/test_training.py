"""Generator training: prompts identical to serving, loss, optimizer, resume."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec import graphs
from tf_genrec.builders.stages import (BehaviorFeatures, PromptBuilder,
                                       SemanticIdEncoder)
from tf_genrec.data.amazon import leave_one_out, load_amazon_scientific
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import write_item_table
from tf_genrec.tables.item_table_resource import ItemTable
from tf_genrec.training.examples import build_sequences, pad_batch
from tf_genrec.training.optimizer import OptimizerConfig, learning_rate
from tf_genrec.training.trainer import TrainConfig, Trainer, sid_loss

L, K = 3, 16


def _tiny_model(vocab_size, seed=0):
  return Qwen2ForCausalLM(Qwen2Config(
      vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      tie_word_embeddings=True), seed=seed)


def test_training_prompts_are_serving_prompts(tmp_path):
  """Real histories: training sequence = serving graph prompt + target SID."""
  dataset = load_amazon_scientific()
  rng = np.random.default_rng(0)
  codes = rng.integers(0, K, (dataset.num_items, L))
  table_path = str(tmp_path / "item_table.tsv")
  write_item_table(table_path, np.arange(dataset.num_items), codes)
  config = graphs.get("ad_recall").graph_config(
      num_levels=L, codebook_size=K, max_history=8)
  histories = [h for h in leave_one_out(dataset.histories).train[:200]
               if len(h) >= 2]
  sequences = build_sequences(histories, dict(enumerate(codes.tolist())),
                              config.template, config.behavior.max_len)

  # The serving graph's own stages on the same users' raw events.
  behavior = BehaviorFeatures(config.behavior)
  encoder = SemanticIdEncoder(ItemTable(table_path, L, K), "drop")
  prompt = PromptBuilder(config.template)
  checked = 0
  for h, seq in zip(histories, sequences):
    context = h[:-1]
    n = len(context)
    history, lengths = behavior(
        tf.constant([context], tf.int64),
        tf.constant([np.arange(1, n + 1)], tf.int64),
        tf.zeros([1, n], tf.int32), tf.constant([n]),
        tf.constant([n + 1], tf.int64))
    ids, id_lengths = prompt(*encoder(history, lengths),
                             tf.zeros([1, 0], tf.int32), tf.zeros([1], tf.int32))
    serving_prompt = ids.numpy()[0, ids.shape[1] - int(id_lengths[0]):]
    np.testing.assert_array_equal(seq[:-L], serving_prompt)
    np.testing.assert_array_equal(seq[-L:],
                                  config.template.sid_tokens(codes[h[-1]]))
    checked += 1
  assert checked > 100


def test_sid_loss_matches_full_vocabulary_reference():
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  model = _tiny_model(t.vocab_size, seed=2)
  rng = np.random.default_rng(1)
  seqs = [np.array(list(t.prefix_ids) + t.sid_tokens(rng.integers(0, K, L)) +
                   list(t.separator_ids) + t.sid_tokens(rng.integers(0, K, L)))
          for _ in range(3)]
  seqs[1] = seqs[1][2:]  # a shorter row -> left padding
  ids, mask = pad_batch(seqs, t.pad_token_id)
  loss = float(sid_loss(model, t, tf.constant(ids), tf.constant(mask)))
  last = float(sid_loss(model, t, tf.constant(ids), tf.constant(mask),
                        last_item_only=True))

  logits = model(tf.constant(ids), tf.constant(mask)).numpy()
  terms, last_terms = [], []
  for b in range(ids.shape[0]):
    for s in range(ids.shape[1] - 1):
      target = ids[b, s + 1] - t.sid_offset
      if mask[b, s + 1] and 0 <= target < L * K:
        level, code = divmod(target, K)
        rows = logits[b, s, t.sid_offset + level * K:t.sid_offset +
                      (level + 1) * K].astype(np.float64)
        terms.append(np.log(np.exp(rows - rows.max()).sum()) + rows.max() -
                     rows[code])
    last_terms += terms[-L:]  # the row's final item
  assert len(terms) == 3 * 2 * L
  assert loss == pytest.approx(np.mean(terms), rel=1e-5)
  assert last == pytest.approx(np.mean(last_terms), rel=1e-5)


def test_learning_rate_schedule():
  c = OptimizerConfig(learning_rate=1.0, warmup_steps=10, total_steps=110,
                      min_lr_ratio=0.1)
  lr = [float(learning_rate(c, s)) for s in (0, 9, 10, 60, 110)]
  assert lr[0] == pytest.approx(0.1) and lr[1] == pytest.approx(1.0)
  assert lr[2] == pytest.approx(1.0) and lr[3] == pytest.approx(0.55)
  assert lr[4] == pytest.approx(0.1)


def _pattern_sequences(t, n=256):
  """Synthetic histories where item i is always followed by item i+1."""
  rng = np.random.default_rng(0)
  codes = {i: [i % K, (i // K) % K, (3 * i) % K] for i in range(40)}
  histories = []
  for _ in range(n):
    start = int(rng.integers(0, 30))
    histories.append(list(range(start, start + int(rng.integers(2, 8)))))
  return build_sequences(histories, codes, t, max_history=8)


def test_trainer_learns_with_dropout(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100)
  trainer = Trainer(_tiny_model(t.vocab_size), t,
                    TrainConfig(batch_size=32, optimizer=opt, dropout=0.1),
                    str(tmp_path / "run"))
  before = trainer.evaluate_loss(sequences)
  trainer.fit(sequences)
  assert trainer.evaluate_loss(sequences) < 0.6 * before


def test_trainer_learns_and_resumes(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100)
  work = str(tmp_path / "run")
  trainer = Trainer(_tiny_model(t.vocab_size), t,
                    TrainConfig(batch_size=32, optimizer=opt), work)
  before = trainer.evaluate_loss(sequences)
  trainer.fit(sequences)
  after = trainer.evaluate_loss(sequences)
  assert after < 0.6 * before, (before, after)

  # A new trainer on the same work_dir resumes at the saved step and weights.
  longer = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=110)
  resumed = Trainer(_tiny_model(t.vocab_size, seed=9), t,
                    TrainConfig(batch_size=32, optimizer=longer), work)
  resumed._ckpt.restore(resumed._manager.latest_checkpoint)
  assert int(resumed.optimizer.step) == 100
  assert resumed.evaluate_loss(sequences) == pytest.approx(after, rel=1e-6)
  resumed.fit(sequences)
  assert int(resumed.optimizer.step) == 110


def test_train_tool_refit_trains_on_the_validation_items(tmp_path):
  import json
  import subprocess
  import sys
  from pathlib import Path

  num_items = load_amazon_scientific().num_items
  codes = np.random.default_rng(0).integers(0, K, size=(num_items, L))
  write_item_table(tmp_path / "table.tsv", np.arange(num_items), codes)
  repo = Path(__file__).resolve().parents[1]

  def train(name, *flags):
    out = tmp_path / name
    run = subprocess.run(
        [sys.executable, "-m", "tools.train_generator",
         f"--item_table={tmp_path / 'table.tsv'}", f"--output_dir={out}",
         f"--codebook_size={K}", "--max_users=40", "--steps=2",
         "--batch_size=8", "--warmup_steps=1", "--hidden_size=32",
         "--num_hidden_layers=1", "--intermediate_size=64", *flags],
        cwd=repo, check=True, capture_output=True, text=True)
    return json.loads((out / "train_report.json").read_text()), run.stderr

  report, log = train("tune")
  assert not report["refit"] and report["valid_loss"] is not None
  assert "40 training / 40 validation sequences" in log
  refit, log = train("refit", "--refit")
  # The validation item is now trained on, so it can no longer score it.
  assert refit["refit"] and refit["valid_loss"] is None
  assert "40 training / 0 validation sequences" in log
