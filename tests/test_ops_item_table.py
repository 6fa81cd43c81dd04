"""ItemTable resource: file parsing, SemanticIdLookup and CodesToItems against
numpy references built from tf_genrec.tables.item_table.read_item_table."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec import ops
from tf_genrec.tables.item_table import read_item_table, write_item_table
from tf_genrec.tables.item_table_resource import ItemTable

L, K = 3, 6  # K^L = 216 semantic IDs for 600 items: many shared IDs.


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
  rng = np.random.default_rng(0)
  path = tmp_path_factory.mktemp("table") / "items.tsv"
  item_ids = rng.choice(10**12, 600, replace=False)
  codes = rng.integers(0, K, (600, L))
  priority = rng.integers(0, 4, 600).astype(np.float32)  # ties -> by item id
  write_item_table(path, item_ids, codes, priority)
  return path


@pytest.fixture(scope="module")
def table(table_file):
  return ItemTable(str(table_file), L, K)


@pytest.fixture(scope="module")
def data(table_file):
  return read_item_table(table_file)


def reference_lookup(data, item_ids, lengths):
  codes_of = {int(i): c for i, c in zip(data.item_ids, data.codes)}
  codes = np.full(item_ids.shape + (data.num_levels,), -1, np.int32)
  out_len = np.zeros(len(lengths), np.int32)
  for b, n in enumerate(lengths):
    found = [codes_of[int(i)] for i in item_ids[b, :n] if int(i) in codes_of]
    codes[b, :len(found)] = np.reshape(found, (-1, data.num_levels))
    out_len[b] = len(found)
  return codes, out_len


def reference_codes_to_items(data, codes, scores, top_n):
  groups = {}
  for item, c, p in zip(data.item_ids, data.codes, data.priority):
    groups.setdefault(tuple(c), []).append((-p, int(item)))
  out_ids = np.full((len(codes), top_n), -1, np.int64)
  out_scores = np.full((len(codes), top_n), -np.inf, np.float32)
  for b in range(len(codes)):
    ranked, seen = [], set()
    valid = np.where(np.isnan(scores[b]), -np.inf, scores[b])
    for w in sorted(range(codes.shape[1]), key=lambda w: -valid[w]):
      sid = tuple(codes[b, w])
      if valid[w] == -np.inf or sid in seen:
        continue
      seen.add(sid)
      ranked += [(item, scores[b, w]) for _, item in sorted(groups.get(sid,
                                                                       []))]
    ranked = ranked[:top_n]
    out_ids[b, :len(ranked)] = [i for i, _ in ranked]
    out_scores[b, :len(ranked)] = [s for _, s in ranked]
  return out_ids, out_scores


def test_properties_and_size(table):
  assert (table.num_levels, table.codebook_size) == (L, K)
  assert int(table.size()) == 600


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lookup_drop_matches_reference(table, data, seed):
  rng = np.random.default_rng(seed)
  known = rng.choice(data.item_ids, (32, 25))
  unknown = rng.integers(10**12, 2 * 10**12, (32, 25))
  item_ids = np.where(rng.random((32, 25)) < 0.2, unknown, known)
  lengths = rng.integers(0, 26, 32).astype(np.int32)
  codes, out_len = table.lookup(item_ids, lengths, missing="drop")
  want_codes, want_len = reference_lookup(data, item_ids, lengths)
  np.testing.assert_array_equal(codes.numpy(), want_codes)
  np.testing.assert_array_equal(out_len.numpy(), want_len)


def test_lookup_error_mode(table, data):
  ids = np.array([[data.item_ids[0], data.item_ids[1]],
                  [data.item_ids[2], 7]], np.int64)
  codes, out_len = table.lookup(ids[:1], [2], missing="error")
  np.testing.assert_array_equal(codes.numpy()[0], data.codes[:2])
  np.testing.assert_array_equal(out_len.numpy(), [2])
  # Unknown ids past lengths are not read.
  table.lookup(ids, [2, 1], missing="error")
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"item_ids\[1,1\]=7 \(row 1\) is not in the item "
                     "table"):
    table.lookup(ids, [2, 2], missing="error")


@pytest.mark.parametrize("seed,top_n", [(4, 1), (5, 40), (6, 300)])
def test_codes_to_items_matches_reference(table, data, seed, top_n):
  rng = np.random.default_rng(seed)
  batch, width = 16, 24
  codes = data.codes[rng.integers(0, 600, (batch, width))]
  # Beams with unknown (valid-range) IDs, out-of-range codes and repeats.
  codes[:, ::5] = rng.integers(0, K, (batch, len(range(0, width, 5)), L))
  codes[:, 3, 0] = K + 2
  codes[:, 7] = codes[:, 8]
  scores = -rng.random((batch, width)).astype(np.float32) * 10
  scores[:, 1] = scores[:, 2]  # tie: lower beam index first
  scores[rng.random((batch, width)) < 0.15] = -np.inf
  scores[:, 9] = np.nan
  item_ids, item_scores = table.codes_to_items(codes, scores, top_n)
  want_ids, want_scores = reference_codes_to_items(data, codes, scores, top_n)
  np.testing.assert_array_equal(item_ids.numpy(), want_ids)
  np.testing.assert_array_equal(item_scores.numpy(), want_scores)


@pytest.mark.parametrize("width", [1, 2, 300, 1024])
def test_codes_to_items_wide_beams_with_repeats_match_reference(table, data,
                                                                width):
  """The per-row de-dup (a hash set since it was an O(W^2) scan) keeps the
  first visit of each semantic ID: at W up to 1024, with every beam's SID
  drawn from a few dozen (so most beams repeat one) and score ties."""
  rng = np.random.default_rng(width)
  batch = 4
  pool = data.codes[rng.integers(0, 600, 40)]
  codes = pool[rng.integers(0, 40, (batch, width))].astype(np.int32)
  scores = -rng.integers(0, 50, (batch, width)).astype(np.float32)  # ties
  scores[rng.random((batch, width)) < 0.1] = -np.inf
  for top_n in (5, 10_000):
    got = table.codes_to_items(codes, scores, top_n)
    want = reference_codes_to_items(data, codes, scores, top_n)
    np.testing.assert_array_equal(got.item_ids.numpy(), want[0])
    np.testing.assert_array_equal(got.scores.numpy(), want[1])


def test_codes_to_items_n_larger_than_reachable_and_all_invalid(table, data):
  codes = np.stack([data.codes[:2], data.codes[:2]]).astype(np.int32)
  scores = np.array([[-1.0, -2.0], [-np.inf, -np.inf]], np.float32)
  item_ids, item_scores = table.codes_to_items(codes, scores,
                                               tf.constant(10000))
  reachable = sum(
      int((data.codes == c).all(axis=1).sum())
      for c in {tuple(c) for c in data.codes[:2]})
  assert (item_ids.numpy()[0] >= 0).sum() == reachable
  assert (item_ids.numpy()[0, reachable:] == -1).all()
  assert np.isneginf(item_scores.numpy()[0, reachable:]).all()
  assert (item_ids.numpy()[1] == -1).all()


def test_top_n_is_a_per_call_tensor_inside_tf_function(table, data):
  fn = tf.function(table.codes_to_items)
  codes = data.codes[None, :4]
  scores = np.zeros((1, 4), np.float32)
  for n in (1, 3, 7):
    assert fn(codes, scores, tf.constant(n)).item_ids.shape == (1, n)


@pytest.mark.parametrize("top_n,message", [
    (0, "top_n=0 is outside [1, 10000]"),
    (10001, "top_n=10001 is outside [1, 10000]"),
    (np.array([3], np.int32), "top_n must be a scalar"),
])
def test_bad_top_n(table, data, top_n, message):
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    table.codes_to_items(data.codes[None, :2], np.zeros((1, 2), np.float32),
                         top_n)
  assert message in e.value.message


@pytest.mark.parametrize("codes,scores,message", [
    (np.zeros((1, 2, L + 1), np.int32), np.zeros((1, 2), np.float32),
     "codes must be [B, W, L=3], got shape [1,2,4]"),
    (np.zeros((1, 2, L), np.int32), np.zeros((1, 3), np.float32),
     "beam_scores must be [B=1, W=2], got shape [1,3]"),
    (tf.zeros((1, 2, L), tf.int64), np.zeros((1, 2), np.float32),
     "codes must be int32, got int64"),
    (np.zeros((1, 2, L), np.int32), tf.zeros((1, 2), tf.float64),
     "beam_scores must be float32, got float64"),
])
def test_codes_to_items_malformed_inputs(table, codes, scores, message):
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    table.codes_to_items(codes, scores, 5)
  assert message in e.value.message


@pytest.mark.parametrize("item_ids,lengths,message", [
    ([[1, 2]], [3], "lengths[0]=3 is outside [0, T=2]"),
    ([[1, 2]], [1, 1], "lengths must be [B=1]"),
    ([1, 2], [1], "item_ids must be [B, T]"),
    ([[1.5, 2]], [1], "item_ids must be int64"),
])
def test_lookup_malformed_inputs(table, item_ids, lengths, message):
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    table.lookup(item_ids, lengths)
  assert message in e.value.message


def test_lookup_rejects_unknown_missing_mode(table):
  with pytest.raises(tf.errors.InvalidArgumentError, match="missing must be"):
    table.lookup([[1]], [1], missing="skip")


@pytest.mark.parametrize("text,message", [
    ("1\t0 1 2\t0.5\n2\t0 1\t0.5\n", ":2: got 2 codes, num_levels=3"),
    ("1\t0 1 2\t0.5\n2\t0 6 1\t0.5\n", ":2: code 1=6 is outside [0, "
     "codebook_size=6)"),
    ("1\t0 1 2\t0.5\n2\t0 -1 1\t0.5\n", ":2: code 1=-1 is outside"),
    ("7\t0 1 2\t0.5\n8\t0 1 2\t1\n7\t1 1 1\t0\n",
     ":3: item_id 7 duplicates line 1"),
    ("1\t0 1 2\n", ":1: expected 3 tab-separated fields"),
    ("x\t0 1 2\t1\n", ":1: item_id is not an int64"),
    ("1\t0 a 2\t1\n", ":1: code 1 is not an integer"),
    ("1\t0 1 2\tnan\n", ":1: priority is not a number"),
    ("1\t0 1 2\t \n", ":1: priority is not a number"),
    ("1\t0 1 2\t1\n\n2\t0 1 2\t1\n", ":2: expected 3 tab-separated fields"),
])
def test_malformed_files_name_the_line(tmp_path, text, message):
  path = tmp_path / "bad.tsv"
  path.write_text(text)
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    ItemTable(str(path), L, K)
  assert message in e.value.message


def test_missing_file_is_reported(tmp_path):
  with pytest.raises(tf.errors.NotFoundError):
    ItemTable(str(tmp_path / "nope.tsv"), L, K)


def test_file_with_crlf_and_without_trailing_newline(tmp_path):
  path = tmp_path / "t.tsv"
  path.write_text("5\t1 2 3\t1\r\n6\t1 2 3\t2")
  table = ItemTable(str(path), L, K)
  ids, _ = table.codes_to_items([[[1, 2, 3]]], [[0.0]], 3)
  np.testing.assert_array_equal(ids.numpy(), [[6, 5, -1]])


def test_shared_table_reinit_same_content_ok_other_content_fails(tmp_path):
  a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
  write_item_table(a, [1, 2], [[0, 1, 2], [1, 1, 1]])
  write_item_table(b, [1, 3], [[0, 1, 2], [1, 1, 1]])
  handle = ops.item_table_handle(L, K, shared_name="test_reinit_table")
  ops.item_table_init_from_file(handle, str(a))
  ops.item_table_init_from_file(handle, str(a))
  with pytest.raises(tf.errors.FailedPreconditionError,
                     match="already initialised with different content"):
    ops.item_table_init_from_file(handle, str(b))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="does not match num_levels=2"):
    ops.item_table_handle(2, K, shared_name="test_reinit_table")


def test_uninitialised_table_is_reported():
  handle = ops.item_table_handle(L, K, shared_name="test_uninitialised")
  with pytest.raises(tf.errors.FailedPreconditionError,
                     match="not initialised"):
    ops.item_table_size(handle)


def test_key_space_must_fit_64_bits():
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="does not fit in 64 bits"):
    ops.item_table_handle(8, 1 << 9, shared_name="test_too_wide")
