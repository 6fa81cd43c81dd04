"""GenrecBehaviorSequence against a plain-Python reference."""
import itertools
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tf_genrec import ops


def reference(ids, ts, actions, lengths, now, *, allowed, max_age, mode,
              max_len):
  """The documented semantics, one row at a time, without shortcuts."""
  out = np.full((len(lengths), max_len), -1, np.int64)
  out_len = np.zeros(len(lengths), np.int32)
  dropped = np.zeros(len(lengths), np.int32)
  for b, n in enumerate(lengths):
    events = [(ts[b, t], ids[b, t]) for t in range(n)
              if ids[b, t] >= 0 and ts[b, t] <= now[b] and
              (not allowed or actions[b, t] in allowed) and
              # Python ints: exact ages, as the op promises.
              (max_age == 0 or int(now[b]) - int(ts[b, t]) <= max_age)]
    items = [item for _, item in sorted(events, key=lambda e: e[0])]
    if mode == "consecutive":
      items = [x for i, x in enumerate(items) if i == 0 or items[i - 1] != x]
    elif mode == "keep_last":
      items = [x for i, x in enumerate(items) if x not in items[i + 1:]]
    items = items[-max_len:]
    out[b, :len(items)] = items
    out_len[b] = len(items)
    dropped[b] = n - len(items)
  return out, out_len, dropped


def random_events(rng, batch, width):
  ids = rng.integers(-1, 12, (batch, width))  # small vocab: many repeats
  now = rng.integers(1000, 1100, batch)
  # Coarse times (many ties), some after request_time, half the rows sorted.
  ts = now[:, None] - rng.integers(-2, 20, (batch, width)) * 10
  sorted_rows = rng.random(batch) < 0.5
  ts[sorted_rows] = np.sort(ts[sorted_rows], axis=1)
  actions = rng.integers(0, 4, (batch, width)).astype(np.int32)
  lengths = rng.integers(0, width + 1, batch).astype(np.int32)
  return ids, ts, actions, lengths, now


@pytest.mark.parametrize(
    "mode,allowed,max_age,max_len",
    list(itertools.product(["none", "consecutive", "keep_last"],
                           [(), (1, 2)], [0, 120], [4, 60])))
def test_matches_reference_on_random_events(mode, allowed, max_age, max_len):
  rng = np.random.default_rng(zlib.crc32(repr((mode, allowed, max_age,
                                              max_len)).encode()))
  ids, ts, actions, lengths, now = random_events(rng, 48, 40)
  got = ops.behavior_sequence(ids, ts, actions, lengths, now, max_len=max_len,
                              allowed_action_types=allowed,
                              max_age_seconds=max_age, dedup_mode=mode)
  want = reference(ids, ts, actions, lengths, now, allowed=allowed,
                   max_age=max_age, mode=mode, max_len=max_len)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g.numpy(), w)


def run_one(ids, ts, now, actions=None, **attrs):
  ids = np.asarray([ids], np.int64)
  actions = (np.zeros_like(ids, np.int32) if actions is None else
             np.asarray([actions], np.int32))
  out = ops.behavior_sequence(ids, [ts], actions, [ids.shape[1]], [now],
                              **attrs)
  n = int(out.lengths[0])
  return list(out.item_ids[0, :n].numpy()), int(out.num_dropped[0])


def test_repeated_items_in_every_dedup_mode():
  ids, ts = [5, 5, 7, 5, 7, 7], [1, 2, 3, 4, 5, 6]
  assert run_one(ids, ts, 10, max_len=10, dedup_mode="none") == (ids, 0)
  assert run_one(ids, ts, 10, max_len=10,
                 dedup_mode="consecutive") == ([5, 7, 5, 7], 2)
  assert run_one(ids, ts, 10, max_len=10, dedup_mode="keep_last") == ([5, 7], 4)


def test_history_longer_than_max_len_keeps_most_recent():
  ids = list(range(100, 120))
  ts = list(range(20))
  assert run_one(ids, ts, 100, max_len=5, dedup_mode="none") == (
      list(range(115, 120)), 15)


def test_rollover_moves_the_history_start_every_rollover_events():
  """max_len=5, rollover=3: a history of c > 5 events starts at event
  3 * ceil((c - 5) / 3), so its oldest kept event stays put for 3 clicks."""
  for c in range(1, 15):
    start = 0 if c <= 5 else 3 * -(-(c - 5) // 3)
    ids = list(range(100, 100 + c))
    assert run_one(ids, list(range(c)), 100, max_len=5, dedup_mode="none",
                   rollover=3) == (ids[start:], start), c
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"rollover=6 must be <= max_len=5"):
    run_one([1], [0], 10, max_len=5, rollover=6)


def test_future_events_dropped_and_unsorted_events_ordered():
  got = run_one([1, 2, 3, 4], [30, 10, 99, 20], 50, max_len=8,
                dedup_mode="none")
  assert got == ([2, 4, 1], 1)


def test_equal_timestamps_keep_input_order():
  got = run_one([4, 3, 2, 1], [7, 5, 7, 5], 50, max_len=8, dedup_mode="none")
  assert got == ([3, 1, 4, 2], 0)


def test_action_and_age_filters_and_missing_ids():
  got = run_one([1, 2, 3, -1, 5], [1, 60, 70, 80, 90], 100,
                actions=[1, 2, 1, 1, 1], allowed_action_types=[1],
                max_age_seconds=50, max_len=8)
  assert got == ([3, 5], 3)


def test_every_event_filtered_out():
  out = ops.behavior_sequence([[1, 2], [3, 4]], [[5, 6], [7, 8]],
                              [[0, 0], [0, 0]], [2, 2], [1, 1], max_len=3)
  np.testing.assert_array_equal(out.item_ids.numpy(), -np.ones((2, 3)))
  np.testing.assert_array_equal(out.lengths.numpy(), [0, 0])
  np.testing.assert_array_equal(out.num_dropped.numpy(), [2, 2])


def test_empty_history_and_zero_width_batch():
  out = ops.behavior_sequence(np.zeros((2, 0), np.int64),
                              np.zeros((2, 0), np.int64),
                              np.zeros((2, 0), np.int32), [0, 0], [5, 5],
                              max_len=2)
  np.testing.assert_array_equal(out.item_ids.numpy(), -np.ones((2, 2)))
  np.testing.assert_array_equal(out.lengths.numpy(), [0, 0])
  out = ops.behavior_sequence(np.zeros((0, 3), np.int64),
                              np.zeros((0, 3), np.int64),
                              np.zeros((0, 3), np.int32),
                              np.zeros(0, np.int32), np.zeros(0, np.int64),
                              max_len=2)
  assert out.item_ids.shape == (0, 2)


INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


@pytest.mark.parametrize("max_age", [0, 1, 2**62, INT64_MAX])
def test_ages_are_exact_at_int64_extremes(max_age):
  """now - ts overflowed int64 (e.g. INT64_MAX - INT64_MIN wrapped to -1 and
  kept an event 2^64 - 1 seconds old); ages are now exact for any values."""
  extremes = [INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]
  pairs = list(itertools.product(extremes, extremes))  # (ts, now)
  ts = np.array([[t for t, _ in pairs]], np.int64).T
  now = np.array([n for _, n in pairs], np.int64)
  ids = np.arange(len(pairs), dtype=np.int64)[:, None]
  lengths = np.ones(len(pairs), np.int32)
  actions = np.zeros_like(ids, np.int32)
  got = ops.behavior_sequence(ids, ts, actions, lengths, now, max_len=1,
                              max_age_seconds=max_age)
  want = reference(ids, ts, actions, lengths, now, allowed=(),
                   max_age=max_age, mode="keep_last", max_len=1)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g.numpy(), w)
  if max_age == 1:  # the case that overflowed: an event 2^64 - 1 s old
    row = pairs.index((INT64_MIN, INT64_MAX))
    assert int(got.lengths[row]) == 0


def test_works_inside_tf_function_with_static_shapes():
  fn = tf.function(lambda *a: ops.behavior_sequence(*a, max_len=3))
  out = fn(tf.constant([[1, 2, 3, 4]], tf.int64), tf.constant([[1, 2, 3, 4]],
                                                              tf.int64),
           tf.zeros([1, 4], tf.int32), tf.constant([4]), tf.constant(
               [10], tf.int64))
  np.testing.assert_array_equal(out.item_ids.numpy(), [[2, 3, 4]])
  spec = fn.get_concrete_function(
      tf.TensorSpec([None, None], tf.int64), tf.TensorSpec([None, None],
                                                           tf.int64),
      tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
      tf.TensorSpec([None], tf.int64)).structured_outputs
  assert spec.item_ids.shape.as_list() == [None, 3]


GOOD = dict(item_ids=[[1, 2, 3]], timestamps=[[1, 2, 3]],
            action_types=[[0, 0, 0]], lengths=[3], request_time=[5])


@pytest.mark.parametrize("field,value,message", [
    ("lengths", [4], "lengths[0]=4 is outside [0, T=3]"),
    ("lengths", [-1], "lengths[0]=-1 is outside [0, T=3]"),
    ("lengths", [1, 1], "lengths must be [B=1]"),
    ("timestamps", [[1, 2]], "timestamps shape [1,2] != item_ids shape [1,3]"),
    ("action_types", [[0, 0]], "action_types shape"),
    ("request_time", [5, 6], "request_time must be [B=1]"),
    ("item_ids", [1, 2, 3], "item_ids must be [B, T]"),
    ("timestamps", [[1.5, 2.0, 3.0]], "timestamps must be int64"),
    ("action_types", tf.constant([[0, 0, 0]], tf.int64),
     "action_types must be int32, got int64"),
    ("item_ids", [[2**64 - 1, 0, 0]], "item_ids must be int64"),
])
def test_malformed_inputs_name_the_field(field, value, message):
  args = dict(GOOD, **{field: value})
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    ops.behavior_sequence(**args, max_len=2)
  assert message in e.value.message


@pytest.mark.parametrize("attrs,message", [
    (dict(max_len=0), "max_len must be >= 1"),
    (dict(max_len=2, dedup_mode="first"), "dedup_mode must be one of"),
    (dict(max_len=2, max_age_seconds=-5), "max_age_seconds must be >= 0"),
])
def test_bad_attrs_are_rejected(attrs, message):
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    ops.behavior_sequence(**GOOD, **attrs)
