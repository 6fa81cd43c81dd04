"""HSTU ranking: M-FALCON equals each candidate scored alone after the
history (a full causal pass over history + that candidate)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.ranking import (HSTURanking, RankingTasks,
                                           load_hstu_ranking,
                                           save_hstu_ranking)

NUM_ITEMS = 30


def _model(time_bias, seed=0):
  config = HSTUConfig(max_len=13, hidden_dim=16, num_layers=2, num_heads=2,
                      attention_dim=4, linear_dim=4, dropout=0.1,
                      time_bias=time_bias, num_time_buckets=8)
  model = HSTURanking(config, NUM_ITEMS, RankingTasks())
  model(tf.ones([1, 1], tf.int32), tf.zeros([1, 1], tf.int32),
        tf.zeros([1, 1], tf.int64))
  rng = np.random.default_rng(seed)
  for var in model.weights:  # Nothing at its zero/one initial value.
    var.assign(rng.normal(0, 0.3, var.shape).astype(np.float32))
  return model


def _histories(rng, lengths, width):
  tokens = np.zeros([len(lengths), width], np.int32)
  actions = np.zeros([len(lengths), width], np.int32)
  times = np.zeros([len(lengths), width], np.int64)
  for row, n in enumerate(lengths):
    tokens[row, :n] = rng.integers(1, NUM_ITEMS + 1, n)
    actions[row, :n] = rng.integers(0, 3, n)
    times[row, :n] = np.cumsum(rng.integers(1, 5000, n))
  return tokens, actions, times


@pytest.mark.parametrize("time_bias", [False, True])
def test_m_falcon_equals_each_candidate_alone(time_bias):
  rng = np.random.default_rng(1)
  model = _model(time_bias)
  lengths = np.array([6, 2, 0])
  tokens, actions, times = _histories(rng, lengths, 6)
  request_time = times.max(axis=1) + 100
  candidates = rng.integers(1, NUM_ITEMS + 1, (3, 9)).astype(np.int32)
  # The reference: one sequence per (user, candidate), the history with that
  # one candidate appended, through the full causal model in one batch.
  seqs, acts, ts, where = [], [], [], []
  for row, n in enumerate(lengths):
    for cand in candidates[row]:
      seqs.append(np.append(tokens[row, :n], cand))
      acts.append(np.append(actions[row, :n], 0))
      ts.append(np.append(times[row, :n], request_time[row]))
      where.append(n)
  pad = lambda rows, dtype: np.array(
      [np.pad(r, (0, 7 - len(r))) for r in rows], dtype)
  alone = model(pad(seqs, np.int32), pad(acts, np.int32),
                pad(ts, np.int64)).numpy()
  alone = alone[np.arange(len(where)), where].reshape(3, 9, -1)
  cache = model.encode_history(tokens, actions, times)
  for micro_batch in (1, 4, 64):
    got = model.rank(cache, lengths, candidates, request_time,
                     micro_batch).numpy()
    np.testing.assert_allclose(got, alone, rtol=1e-5, atol=1e-5)


def test_rank_independent_of_other_candidates():
  rng = np.random.default_rng(2)
  model = _model(False)
  tokens, actions, times = _histories(rng, [5], 5)
  cache = model.encode_history(tokens, actions, times)
  cands = rng.integers(1, NUM_ITEMS + 1, (1, 7)).astype(np.int32)
  full = model.rank(cache, [5], cands, None, 3).numpy()
  first = model.rank(cache, [5], cands[:, :2], None, 3).numpy()
  np.testing.assert_allclose(full[:, :2], first, rtol=1e-6, atol=1e-6)


def test_training_lowers_the_multi_task_loss():
  rng = np.random.default_rng(3)
  model = _model(False)
  tokens, _, times = _histories(rng, [6] * 32, 6)
  actions = np.where(tokens % 3 == 0, 2, tokens % 2).astype(np.int32)
  optimizer = tf.keras.optimizers.Adam(1e-2)
  first = float(model.multitask_loss(tokens, actions, training=False))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = model.multitask_loss(tokens, actions)
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))

  for _ in range(30):
    step()
  assert float(model.multitask_loss(tokens, actions, training=False)) < 0.7 * first


def test_save_load_round_trip(tmp_path):
  rng = np.random.default_rng(4)
  model = _model(True)
  tokens, actions, times = _histories(rng, [4], 4)
  save_hstu_ranking(model, str(tmp_path))
  loaded = load_hstu_ranking(str(tmp_path))
  np.testing.assert_array_equal(model(tokens, actions, times).numpy(),
                                loaded(tokens, actions, times).numpy())


def test_ranking_config_errors():
  with pytest.raises(ValueError, match="odd"):
    HSTURanking(HSTUConfig(max_len=12), NUM_ITEMS, RankingTasks())
  with pytest.raises(ValueError, match=r"action_types \[5\]"):
    RankingTasks(names=("a",), action_types=(5,))
