"""Generator training: prompts identical to serving, loss, optimizer, resume."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import graphs
from tf_genrec.builders.stages import (BehaviorFeatures, PromptBuilder,
                                       SemanticIdEncoder)
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.models.sasrec.model import SASRec, SASRecConfig, save_sasrec
from tf_genrec.tables.item_table import write_item_table
from tf_genrec.tables.item_table_resource import ItemTable
from tf_genrec.training.augment import drop_items
from tf_genrec.training.examples import build_sequences, pad_batch
from tf_genrec.training.optimizer import OptimizerConfig, learning_rate
from tf_genrec.generation.generation_config import load_sid_softmax
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.training.item_loss import (ItemTargets, item_embedding_table,
                                          item_loss)
from tf_genrec.training.distill import DistillTargets
from tf_genrec.training.trainer import (TrainConfig, Trainer, sid_logits,
                                        sid_loss)
from tf_genrec.training.trie_softmax import TrieSoftmaxTargets

L, K = 3, 16


def _tiny_model(vocab_size, seed=0):
  return Qwen2ForCausalLM(Qwen2Config(
      vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
      tie_word_embeddings=True), seed=seed)


@pytest.mark.parametrize("full_items", [0, 3])
def test_training_prompts_are_serving_prompts(tmp_path, full_items):
  """Real histories: training sequence = serving graph prompt + target SID,
  compressed or not."""
  dataset = load_dataset()
  rng = np.random.default_rng(0)
  codes = rng.integers(0, K, (dataset.num_items, L))
  table_path = str(tmp_path / "item_table.tsv")
  write_item_table(table_path, np.arange(dataset.num_items), codes)
  config = graphs.get("ad_recall").graph_config(
      num_levels=L, codebook_size=K, max_history=8, full_items=full_items)
  histories = [h for h in leave_one_out(dataset.histories).train[:200]
               if len(h) >= 2]
  sequences = build_sequences(histories, dict(enumerate(codes.tolist())),
                              config.template, config.behavior.max_len)

  # The serving graph's own stages on the same users' raw events.
  behavior = BehaviorFeatures(config.behavior)
  encoder = SemanticIdEncoder(ItemTable(table_path, L, K), "drop")
  prompt = PromptBuilder(config.template)
  checked = shorter = 0
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
    kept = min(n, config.behavior.max_len)  # prefix 7, ",", SIDs, ","s
    shorter += len(seq) < 7 + kept * (L + 1) + L
  assert checked > 100
  assert (shorter > 0) == (full_items > 0)  # compression took effect


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
  hidden = model.model(tf.constant(ids), tf.constant(mask))
  loss = float(sid_loss(model, t, hidden, tf.constant(ids), tf.constant(mask)))
  last = float(sid_loss(model, t, hidden, tf.constant(ids), tf.constant(mask),
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


def _trie_batch(t, seed):
  """A trie over few SIDs (so fan-outs < K) and a padded batch of them."""
  rng = np.random.default_rng(seed)
  sids = np.unique(rng.integers(0, K, (40, L)), axis=0)
  pick = lambda: sids[rng.integers(len(sids))]
  seqs = [np.array(list(t.prefix_ids) + t.sid_tokens(pick()) +
                   list(t.separator_ids) + t.sid_tokens(pick()))
          for _ in range(3)]
  seqs[1] = seqs[1][2:]
  return SemanticIdTrie(sids, K), seqs


def test_trie_softmax_rows_are_the_prefix_children():
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  trie, seqs = _trie_batch(t, 3)
  targets = TrieSoftmaxTargets(trie, t)
  ids, _ = pad_batch(seqs, t.pad_token_id)
  rows = targets.rows(ids)
  bias = targets.bias.numpy()
  checked = 0
  for b in range(ids.shape[0]):
    for s in range(ids.shape[1]):
      sid = ids[b, s] - t.sid_offset
      if not 0 <= sid < L * K:
        assert rows[b, s] == 0
        continue
      level = sid // K
      prefix = [(ids[b, s - back] - t.sid_offset) % K
                for back in range(level, 0, -1)]
      allowed = np.flatnonzero(bias[rows[b, s]] == 0)
      np.testing.assert_array_equal(allowed, trie.next_codes_np(prefix))
      assert sid % K in allowed
      checked += 1
  assert checked == 3 * 2 * L
  # A SID token whose prefix no item has is refused, not silently scored.
  missing = next(c for c in range(K) if c not in trie.next_codes_np([]))
  bad = np.array([t.sid_tokens([missing, 0, 0])])
  with pytest.raises(ValueError, match="level-1"):
    targets.rows(bad)


def test_sid_loss_with_trie_bias_matches_reference():
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  model = _tiny_model(t.vocab_size, seed=2)
  trie, seqs = _trie_batch(t, 4)
  ids, mask = pad_batch(seqs, t.pad_token_id)
  targets = TrieSoftmaxTargets(trie, t)
  hidden = model.model(tf.constant(ids), tf.constant(mask))
  loss = float(sid_loss(model, t, hidden, tf.constant(ids), tf.constant(mask),
                        trie_bias=(targets.bias,
                                   tf.constant(targets.rows(ids)))))

  logits = model(tf.constant(ids), tf.constant(mask)).numpy()
  terms = []
  for b in range(ids.shape[0]):
    for s in range(ids.shape[1] - 1):
      target = ids[b, s + 1] - t.sid_offset
      if mask[b, s + 1] and 0 <= target < L * K:
        level, code = divmod(target, K)
        prefix = [(ids[b, s + 1 - back] - t.sid_offset) % K
                  for back in range(level, 0, -1)]
        children = trie.next_codes_np(prefix)
        rows = logits[b, s, t.sid_offset + level * K +
                      children].astype(np.float64)
        terms.append(np.log(np.exp(rows).sum()) -
                     logits[b, s, t.sid_offset + level * K + code])
  assert len(terms) == 3 * 2 * L
  assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_trainer_with_trie_softmax_learns(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t)
  trie = SemanticIdTrie(list(_PATTERN_CODES.values()), K)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100)
  train_config = TrainConfig(batch_size=32, optimizer=opt,
                             sid_softmax="trie")
  with pytest.raises(ValueError, match="trie"):
    Trainer(_tiny_model(t.vocab_size), t, train_config, str(tmp_path / "x"))
  trainer = Trainer(_tiny_model(t.vocab_size), t, train_config,
                    str(tmp_path / "run"), trie)
  before = trainer.evaluate_loss(sequences)
  trainer.fit(sequences)
  assert trainer.evaluate_loss(sequences) < 0.6 * before
  # The export finds out how to decode the checkpoint.
  hf = trainer.save_hf(str(tmp_path / "hf"))
  assert load_sid_softmax(hf) == "trie"
  assert load_sid_softmax(str(tmp_path)) == "level"  # no file: trained so


def test_drop_items_keeps_order_and_rate():
  rng = np.random.default_rng(0)
  histories = [np.arange(100 * u, 100 * u + 50) for u in range(40)]
  dropped = drop_items(histories, 0.2, rng)
  kept = sum(len(d) for d in dropped) / sum(len(h) for h in histories)
  assert 0.75 < kept < 0.85
  for h, d in zip(histories, dropped):
    assert set(d) <= set(h) and np.all(np.diff(d) > 0)  # order kept
  # Nothing dropped at rate 0; too-short results fall back to the history.
  assert all(np.array_equal(h, d) for h, d in
             zip(histories, drop_items(histories, 0.0, rng)))
  assert [list(d) for d in drop_items([[7, 8]] * 20, 0.9, rng)] == [[7, 8]] * 20
  with pytest.raises(ValueError, match=r"\[0, 1\), got 1.0"):
    drop_items(histories, 1.0, rng)


def test_trainer_redraws_sequences_every_epoch(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t, n=64)  # 2 batches of 32 per epoch
  epoch_starts = []

  def epoch_sequences(step):
    epoch_starts.append(step)
    return sequences[:32 + step % 64]  # lengths differ: batches rebuilt

  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=1, total_steps=5)
  trainer = Trainer(_tiny_model(t.vocab_size), t,
                    TrainConfig(batch_size=32, optimizer=opt),
                    str(tmp_path / "run"))
  trainer.fit(epoch_sequences)
  # Epochs of 1 batch (32 sequences), then 2 and 2 (33, 35 sequences).
  assert epoch_starts == [0, 1, 3]
  assert int(trainer.optimizer.step) == 5


def test_learning_rate_schedule():
  c = OptimizerConfig(learning_rate=1.0, warmup_steps=10, total_steps=110,
                      min_lr_ratio=0.1)
  lr = [float(learning_rate(c, s)) for s in (0, 9, 10, 60, 110)]
  assert lr[0] == pytest.approx(0.1) and lr[1] == pytest.approx(1.0)
  assert lr[2] == pytest.approx(1.0) and lr[3] == pytest.approx(0.55)
  assert lr[4] == pytest.approx(0.1)


_PATTERN_CODES = {i: [i % K, (i // K) % K, (3 * i) % K] for i in range(40)}


def _pattern_sequences(t, n=256):
  """Synthetic histories where item i is always followed by item i+1."""
  rng = np.random.default_rng(0)
  histories = []
  for _ in range(n):
    start = int(rng.integers(0, 30))
    histories.append(list(range(start, start + int(rng.integers(2, 8)))))
  return build_sequences(histories, _PATTERN_CODES, t, max_history=8)


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


def _pattern_codes():
  return np.array([_PATTERN_CODES[i] for i in range(len(_PATTERN_CODES))])


def test_item_targets_name_every_item_of_a_sequence():
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  targets = ItemTargets(_pattern_codes(), t)
  histories = [[3, 4, 5], [10, 11], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
  ids, _ = pad_batch(build_sequences(histories, _PATTERN_CODES, t,
                                     max_history=8), t.pad_token_id)
  rows = targets.rows(ids)
  # Row r of the table is item r here: each sequence names its (last 9)
  # items in order, once each, and nothing else.
  for b, h in enumerate(histories):
    assert rows[b][rows[b] >= 0].tolist() == h[-9:]
  for b, s in np.argwhere(rows >= 0):
    assert ids[b, s:s + L].tolist() == t.sid_tokens(_PATTERN_CODES[rows[b, s]])

  with pytest.raises(ValueError, match="ends inside"):
    targets.rows(ids[:, :-1])
  unknown = ids.copy()
  unknown[0, -1] = t.sid_offset + 2 * K + (unknown[0, -1] - t.sid_offset + 1) % K
  with pytest.raises(ValueError, match="no item"):
    targets.rows(unknown)
  with pytest.raises(ValueError, match="one item per semantic ID"):
    ItemTargets(np.array([[1, 2, 3], [1, 2, 3]]), t)


def test_item_loss_matches_reference():
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  model = _tiny_model(t.vocab_size, seed=3)
  targets = ItemTargets(_pattern_codes(), t)
  embeddings = item_embedding_table(len(_pattern_codes()), 32, seed=1)
  ids, mask = pad_batch(_pattern_sequences(t, n=5), t.pad_token_id)
  hidden = model.model(tf.constant(ids), tf.constant(mask))
  rows = targets.rows(ids)
  loss = float(item_loss(hidden[:, :-1], tf.constant(rows), embeddings))

  h, emb = hidden.numpy().astype(np.float64), embeddings.numpy()
  terms = []
  for b, s in np.argwhere(rows[:, 1:] >= 0):
    logits = emb @ h[b, s]
    terms.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max() -
                 logits[rows[b, s + 1]])
  assert len(terms) == (rows >= 0).sum() > 5
  assert loss == pytest.approx(np.mean(terms), rel=1e-5)


def test_trainer_with_item_loss_learns_and_resumes(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100)
  train_config = TrainConfig(batch_size=32, optimizer=opt,
                             item_loss_weight=0.5)
  with pytest.raises(ValueError, match="item_loss_weight"):
    Trainer(_tiny_model(t.vocab_size), t, train_config, str(tmp_path / "x"))
  work = str(tmp_path / "run")
  trainer = Trainer(_tiny_model(t.vocab_size), t, train_config, work,
                    item_codes=_pattern_codes())
  batch = trainer._train_batch(sequences)
  ids, mask, item_rows = batch["input_ids"], batch["mask"], batch["item_rows"]

  def losses(tr):
    hidden = tr.model.model(tf.constant(ids), tf.constant(mask))
    return (tr.evaluate_loss(sequences),
            float(item_loss(hidden[:, :-1], tf.constant(item_rows),
                            tr._item_embeddings)))

  sid_before, item_before = losses(trainer)
  trainer.fit(sequences)
  sid_after, item_after = losses(trainer)
  # Item i is always followed by item i+1: both heads learn it.
  assert sid_after < 0.6 * sid_before and item_after < 0.5 * item_before

  resumed = Trainer(_tiny_model(t.vocab_size, seed=9), t,
                    dataclasses.replace(train_config, seed=5), work,
                    item_codes=_pattern_codes())
  resumed._ckpt.restore(resumed._manager.latest_checkpoint)
  assert losses(resumed) == pytest.approx((sid_after, item_after), rel=1e-6)


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


def test_train_tool_refit_and_variants(tmp_path):
  import json
  import subprocess
  import sys
  from pathlib import Path

  num_items = load_dataset().num_items
  codes = np.random.default_rng(0).integers(0, K, size=(num_items, L))
  write_item_table(tmp_path / "table.tsv", np.arange(num_items), codes)
  repo = Path(__file__).resolve().parents[1]

  def train(name, *flags, table="table.tsv", check=True):
    out = tmp_path / name
    run = subprocess.run(
        [sys.executable, "-m", "tools.train_generator",
         f"--item_table={tmp_path / table}", f"--output_dir={out}",
         f"--codebook_size={K}", "--max_users=40", "--steps=2",
         "--batch_size=8", "--warmup_steps=1", "--hidden_size=32",
         "--num_hidden_layers=1", "--intermediate_size=64", *flags],
        cwd=repo, check=check, capture_output=True, text=True)
    if not check:
      return None, run.stderr
    return json.loads((out / "train_report.json").read_text()), run.stderr

  report, log = train("tune")
  assert not report["refit"] and report["valid_loss"] is not None
  # The preset's schedule: a validation pass at the end (2 < 2 epochs of
  # 5 steps), whose model is the written checkpoint.
  assert report["preset"] == "recall_default"
  assert report["steps_per_epoch"] == 5 and report["steps_run"] == 2
  best = report["best_validation"]
  assert best["step"] == 2 and 0 <= best["metrics"]["recall@10"] <= 1
  assert ((tmp_path / "tune" / "hf" / "model.safetensors").read_bytes() ==
          (tmp_path / "tune" / "best" / "model.safetensors").read_bytes())
  assert "40 training / 40 validation sequences" in log
  assert load_sid_softmax(tmp_path / "tune" / "hf") == "level"
  # The regularised variants run through the tool and tell the export.
  report, _ = train("trie", "--sid_softmax=trie", "--item_drop_rate=0.2")
  assert report["sid_softmax"] == "trie" and report["item_drop_rate"] == 0.2
  assert load_sid_softmax(tmp_path / "trie" / "hf") == "trie"
  # The item loss needs one item per SID: the random 3-level table collides.
  _, log = train("item_collide", "--item_loss_weight=0.5", check=False)
  assert "one item per semantic ID" in log
  unique = np.arange(num_items)[:, None] // K**np.arange(3, -1, -1) % K
  write_item_table(tmp_path / "unique.tsv", np.arange(num_items), unique)
  report, log = train("item", "--item_loss_weight=0.5", table="unique.tsv")
  assert report["item_loss_weight"] == 0.5 and np.isfinite(report["train_loss"])
  # Distillation needs a teacher over the same catalogue.
  _, log = train("no_teacher", "--distill_weight=0.5", table="unique.tsv",
                 check=False)
  assert "pass a teacher" in log
  save_sasrec(_tiny_teacher(num_items, max_len=50), str(tmp_path / "teacher"))
  report, log = train("distill", f"--teacher_dir={tmp_path / 'teacher'}",
                      "--distill_weight=0.5", table="unique.tsv")
  assert report["distill_weight"] == 0.5 and np.isfinite(report["train_loss"])
  assert report["teacher_dir"] == str(tmp_path / "teacher")
  refit, log = train("refit", "--refit")
  # The validation item is now trained on, so it can no longer score it.
  assert refit["refit"] and refit["valid_loss"] is None
  assert refit["best_validation"] is None
  assert "40 training / 0 validation sequences" in log


def _tiny_teacher(num_items, max_len, seed=0):
  tf.keras.utils.set_random_seed(seed)
  teacher = SASRec(SASRecConfig(num_items=num_items, max_len=max_len,
                                hidden_dim=16, num_blocks=1, num_heads=2))
  teacher(tf.zeros([1, max_len], tf.int32))
  return teacher


def test_distill_targets_match_reference():
  """Soft SID targets = the teacher's next-item distribution in SASRec's own
  training layout, marginalised onto each level given the true prefix."""
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  codes = _pattern_codes()
  max_len = 4  # shorter than some histories: their oldest items get no state
  teacher = _tiny_teacher(len(codes), max_len, seed=2)
  distill = DistillTargets(teacher, codes, t, temperature=2.0)
  histories = [[3, 4, 5], [10, 11], [0, 1, 2, 3, 4, 5, 6, 7, 8]]
  ids, _ = pad_batch(build_sequences(histories, _PATTERN_CODES, t,
                                     max_history=8), t.pad_token_id)
  teacher_tokens, sid_rows, states = distill.inputs(
      ItemTargets(codes, t).rows(ids))
  sid = ids[:, 1:] - t.sid_offset
  positions = np.argwhere((sid >= 0) & (sid < L * K))
  soft, has = distill.soft_targets(
      tf.constant(teacher_tokens), tf.constant(states[:, 1:][tuple(positions.T)]),
      tf.constant(sid_rows[:, 1:][tuple(positions.T)]),
      tf.constant(sid[tuple(positions.T)] // K))
  soft, has = soft.numpy(), has.numpy()

  # Reference from the raw histories: SASRec reads h[:-1], left-padded.
  expected_soft, expected_has = [], []
  for h in histories:
    inputs = h[:-1][-max_len:]
    tokens = np.zeros((1, max_len), np.int32)
    tokens[0, max_len - len(inputs):] = np.array(inputs) + 1
    hidden = teacher(tf.constant(tokens)).numpy()[0].astype(np.float64)
    emb = teacher.item_emb.embeddings.numpy()[1:].astype(np.float64)
    for j, item in enumerate(h):
      column = max_len - (len(h) - 1) + j - 1  # where item j - 1 sits
      for level in range(L):
        if j == 0 or column < 0:
          expected_has.append(False)
          expected_soft.append(np.zeros(K))
          continue
        logits = emb @ hidden[column] / 2.0
        p = np.exp(logits - logits.max())
        p /= p.sum()
        dist = np.zeros(K)
        for other in range(len(codes)):
          if list(codes[other, :level]) == list(codes[item, :level]):
            dist[codes[other, level]] += p[other]
        expected_has.append(True)
        expected_soft.append(dist / dist.sum())
  assert has.tolist() == expected_has
  assert 0 < has.sum() < len(has)
  np.testing.assert_allclose(soft, np.array(expected_soft), atol=1e-6)


def test_trainer_distills_teacher(tmp_path):
  """With distill_weight 1 the SID head learns the teacher's soft targets."""
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t)
  teacher = _tiny_teacher(len(_pattern_codes()), max_len=8, seed=4)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=5, total_steps=100)
  train_config = TrainConfig(batch_size=32, optimizer=opt, distill_weight=1.0)
  with pytest.raises(ValueError, match="teacher"):
    Trainer(_tiny_model(t.vocab_size), t, train_config, str(tmp_path / "x"),
            item_codes=_pattern_codes())
  trainer = Trainer(_tiny_model(t.vocab_size), t, train_config,
                    str(tmp_path / "run"), item_codes=_pattern_codes(),
                    teacher=teacher)
  batch = trainer._train_batch(sequences)

  def kl_to_teacher():
    """Mean KL(teacher || generator) over SID targets with a teacher state."""
    ids, mask = batch["input_ids"], batch["mask"]
    hidden = trainer.model.model(tf.constant(ids), tf.constant(mask))
    positions, sid, logits = sid_logits(trainer.model, t, hidden, ids, mask)
    soft, has = trainer.teacher_targets(batch, positions, sid)
    q = tf.nn.log_softmax(logits).numpy()[has.numpy()]
    p = soft.numpy()[has.numpy()]
    return np.mean(np.sum(np.where(p > 0, p * (np.log(np.maximum(p, 1e-30)) - q),
                                   0), -1))

  before = kl_to_teacher()
  trainer.fit(sequences)
  assert kl_to_teacher() < 0.3 * before


class _ScriptedValidator:
  """Returns scripted Recall@10 values and snapshots the weights it saw."""

  def __init__(self, scores):
    self.scores = list(scores)
    self.weights = []

  def __call__(self, model):
    self.weights.append([v.numpy() for v in model.trainable_variables])
    return {"recall@10": self.scores[len(self.weights) - 1], "ndcg@10": 0.0}


def test_early_stopping_keeps_the_best_checkpoint(tmp_path):
  from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t, n=64)  # 2 steps per epoch
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=2, total_steps=40)
  train_config = TrainConfig(batch_size=32, optimizer=opt, eval_every=4,
                             patience=2)
  work = str(tmp_path / "run")
  with pytest.raises(ValueError, match="eval_every"):
    Trainer(_tiny_model(t.vocab_size), t,
            dataclasses.replace(train_config, eval_every=0),
            str(tmp_path / "x")).fit(sequences,
                                     validator=_ScriptedValidator([0.0]))
  trainer = Trainer(_tiny_model(t.vocab_size), t, train_config, work)
  # Best at the 2nd validation (step 8); the 3rd and 4th are worse.
  validator = _ScriptedValidator([0.1, 0.3, 0.2, 0.29, 0.9])
  trainer.fit(sequences, validator=validator)
  assert int(trainer.optimizer.step) == 16  # stopped 24 steps early
  assert len(validator.weights) == 4
  state = trainer.best_state()
  assert state["step"] == 8 and state["score"] == 0.3 and state["stopped"]
  assert [h["step"] for h in state["history"]] == [4, 8, 12, 16]
  best = load_hf_checkpoint(trainer.best_dir).trainable_variables
  assert len(best) == len(validator.weights[1])
  for variable, seen in zip(best, validator.weights[1]):
    np.testing.assert_allclose(variable.numpy(), seen, rtol=1e-6, atol=1e-7)
  assert not np.allclose(validator.weights[1][0], validator.weights[3][0])

  # A finished (early-stopped) run is not trained further when re-run.
  again = Trainer(_tiny_model(t.vocab_size, seed=5), t, train_config, work)
  again.fit(sequences, validator=_ScriptedValidator([]))
  assert int(again.optimizer.step) == 16


def test_without_patience_training_runs_out_and_validates_the_end(tmp_path):
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  sequences = _pattern_sequences(t, n=64)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=2, total_steps=10)
  trainer = Trainer(_tiny_model(t.vocab_size), t,
                    TrainConfig(batch_size=32, optimizer=opt, eval_every=4),
                    str(tmp_path / "run"))
  validator = _ScriptedValidator([0.5, 0.1, 0.2])
  trainer.fit(sequences, validator=validator)
  state = trainer.best_state()
  # Validations at 4, 8 and the final step 10; the first stays the best.
  assert [h["step"] for h in state["history"]] == [4, 8, 10]
  assert state["step"] == 4 and not state["stopped"]


def test_beam_recall_validator_matches_exhaustive_scoring():
  """Beam search as wide as the catalogue = every item scored exactly."""
  from tf_genrec.tables.item_table import ItemTableData
  from tf_genrec.training.validation import (BeamRecallValidator,
                                             ValidationConfig)
  config = graphs.get("ad_recall").graph_config(num_levels=L, codebook_size=K)
  t = config.template
  model = _tiny_model(t.vocab_size, seed=3)
  items = sorted(_PATTERN_CODES)
  codes = np.array([_PATTERN_CODES[i] for i in items], np.int32)
  table = ItemTableData(np.array(items, np.int64), codes,
                        np.zeros(len(items), np.float32))
  rng = np.random.default_rng(4)
  histories = [list(rng.integers(0, len(items), int(rng.integers(1, 6))))
               for _ in range(12)]
  targets = rng.integers(0, len(items), len(histories))
  validator = BeamRecallValidator(
      histories, targets, table, t, max_history=8, sid_softmax="level",
      config=ValidationConfig(num_users=10, beam_width=64, k=10,
                              batch_size=4))
  assert validator.num_users == 10
  ranked = validator.rank(model)

  # Reference: teacher-forced log-softmax over each level's K codes, summed.
  users = np.sort(np.random.default_rng(0).choice(12, 10, replace=False))
  for row, u in enumerate(users):
    prompt = build_sequences([histories[u] + [0]], _PATTERN_CODES, t, 8)[0][:-L]
    scores = []
    for item in items:
      seq = np.concatenate([prompt, t.sid_tokens(_PATTERN_CODES[item])])
      logits = model(tf.constant(seq[None]), tf.ones([1, len(seq)],
                                                      tf.int32)).numpy()[0]
      total = 0.0
      for level in range(L):
        head = logits[len(prompt) - 1 + level,
                      t.sid_offset + level * K:t.sid_offset + (level + 1) * K]
        head = head.astype(np.float64)
        total += head[_PATTERN_CODES[item][level]] - (
            np.log(np.exp(head - head.max()).sum()) + head.max())
      scores.append(total)
    expected = np.array(items)[np.argsort(-np.array(scores),
                                          kind="stable")[:10]]
    np.testing.assert_array_equal(ranked[row], expected)
  metrics = validator(model)
  hits = [targets[u] in ranked[row] for row, u in enumerate(users)]
  assert metrics["recall@10"] == pytest.approx(np.mean(hits))
