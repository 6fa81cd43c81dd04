"""Event logs + catalogues (tf_genrec/data/events.py) in every format give
the bundled dataset's histories and training examples back, ids map both
ways, and the input's memory grows only by its compact per-event arrays."""
import json
import subprocess
import sys

import numpy as np
import pytest

import graphs
from dataset_testlib import write_manifest_log
from tf_genrec.data import events
from tf_genrec.data.amazon import REPO_ROOT, leave_one_out, load_dataset
from tf_genrec.data.dataset import Dataset
from tf_genrec.data.writers import write_dataset
from tf_genrec.tables.item_table import read_item_table, write_item_table
from tf_genrec.training.examples import build_sequences

# (events format, catalogue format, string ids): every format of each.
FORMATS = [("tfrecord", "jsonl", False), ("parquet", "parquet", True),
           ("csv", "csv", True), ("tfrecord", "csv", True),
           ("parquet", "jsonl", False), ("csv", "parquet", False)]
NUM_USERS = 600


@pytest.fixture(scope="module")
def bundled():
  """The first users of amazon-scientific, read by the bundled reader (the
  reference: it shares no code with the event-log reader)."""
  full = load_dataset()
  return Dataset(histories=full.histories[:NUM_USERS], items=full.items,
                 name=full.name)


def _training_examples(dataset):
  template = graphs.get("ad_recall").graph_config(
      num_levels=3, codebook_size=16, max_history=20).template
  codes = np.random.default_rng(0).integers(0, 16, (dataset.num_items, 3))
  split = leave_one_out(dataset.histories)
  sequences = build_sequences([h for h in split.train if len(h) >= 2],
                              dict(enumerate(codes.tolist())), template, 20)
  return sequences, split.valid_targets, split.test_targets


@pytest.mark.parametrize("events_format,catalogue_format,string_ids", FORMATS)
def test_every_format_gives_the_same_training_examples(
    bundled, tmp_path, events_format, catalogue_format, string_ids):
  write_dataset(bundled, str(tmp_path), events_format, catalogue_format,
                num_shards=3, string_ids=string_ids)
  loaded = load_dataset(str(tmp_path))

  assert loaded.num_users == bundled.num_users
  assert loaded.items == bundled.items
  for want, got in zip(bundled.histories, loaded.histories):
    np.testing.assert_array_equal(got, want)
  want_seq, want_valid, want_test = _training_examples(bundled)
  got_seq, got_valid, got_test = _training_examples(loaded)
  assert len(got_seq) == len(want_seq)
  for want, got in zip(want_seq, got_seq):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got_valid, want_valid)
  np.testing.assert_array_equal(got_test, want_test)
  # Dense ids map back to the files' ids; -1 (an empty slot) stays empty.
  back = loaded.external_item_ids([[5, -1]])
  assert back.tolist() == ([["item-5", ""]] if string_ids else [[5, -1]])


@pytest.mark.parametrize("events_format", ["parquet", "tfrecord"])
def test_users_numbered_across_batches(bundled, tmp_path, monkeypatch,
                                       events_format):
  """Small reader batches: users (string and int64 ids) keep their number
  from one batch to the next, in order of first appearance."""
  monkeypatch.setattr(events, "BATCH_SIZE", 97)
  write_dataset(bundled, str(tmp_path), events_format, "jsonl",
                num_shards=2, string_ids=events_format == "parquet")
  loaded = load_dataset(str(tmp_path))
  assert loaded.num_users == bundled.num_users
  for want, got in zip(bundled.histories, loaded.histories):
    np.testing.assert_array_equal(got, want)


def test_pattern_with_named_format(bundled, tmp_path):
  write_dataset(bundled, str(tmp_path), "parquet", "jsonl", num_shards=2)
  for shard in tmp_path.glob("events-*.parquet"):
    shard.rename(shard.with_suffix(".data"))  # no extension to detect
  for data in (f"parquet:{tmp_path}/events-*", f"parquet:{tmp_path}"):
    assert load_dataset(data).num_interactions == bundled.num_interactions
  with pytest.raises(ValueError, match=r"\.data.*cannot tell the format"):
    load_dataset(f"{tmp_path}/events-*")
  with pytest.raises(ValueError, match="no such dataset directory"):
    load_dataset(f"{tmp_path}/missing/events-*")


def _write(path, text):
  path.write_text(text, encoding="utf-8")


def test_manifest_fields_actions_and_drops(tmp_path):
  write_manifest_log(tmp_path)
  loaded = load_dataset(str(tmp_path))
  # carol's C and A share a timestamp: log order kept.
  assert [h.tolist() for h in loaded.histories] == [[1, 2, 0], [1, 2, 0]]
  assert [t.tolist() for t in loaded.timestamps] == [[10, 20, 30], [1, 2, 2]]
  assert loaded.items[0].categories == "home"
  assert loaded.external_item_ids([2, 0]).tolist() == ["C", "A"]

  _write(tmp_path / "dataset.json", json.dumps({
      "events": "log.csv", "items": "catalogue.csv",
      "fields": {"user_id": "user", "item_id": "sku"}}))
  with pytest.raises(ValueError, match=r"no field 'user' \(user_id\)"):
    load_dataset(str(tmp_path))
  _write(tmp_path / "late.csv", "uid,sku,ts\nalice,A,yesterday\n")
  _write(tmp_path / "dataset.json", json.dumps({
      "events": "late.csv", "items": "catalogue.csv",
      "fields": {"user_id": "uid", "item_id": "sku", "timestamp": "ts"}}))
  with pytest.raises(ValueError, match=r"field 'ts' \(timestamp\) is "
                     r"'yesterday'; expected an integer$"):
    load_dataset(str(tmp_path))
  _write(tmp_path / "dataset.json", json.dumps({
      "events": "log.csv", "items": "catalogue.csv", "filter": []}))
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['filter'\]"):
    load_dataset(str(tmp_path))


def test_external_item_table(tmp_path):
  """Sparse int64 ids: the item table is rewritten onto them for export."""
  _write(tmp_path / "items.jsonl", "".join(
      json.dumps({"item_id": i, "title": f"t{i}"}) + "\n"
      for i in (900, 17, 5_000_000_000)))
  _write(tmp_path / "events.csv", "user_id,item_id,timestamp\n" + "".join(
      f"{u},{i},{t}\n" for t, (u, i) in enumerate(
          [(1, 17), (1, 900), (1, 5_000_000_000), (2, 900), (2, 900),
           (2, 17)])))
  loaded = load_dataset(str(tmp_path))
  assert [h.tolist() for h in loaded.histories] == [[1, 0, 2], [0, 0, 1]]
  dense = tmp_path / "item_table.tsv"
  write_item_table(dense, [2, 0, 1], [[1, 2], [3, 4], [5, 6]])
  out = tmp_path / "item_table.ext.tsv"
  subprocess.run([sys.executable, "-m", "tools.convert_data",
                  f"--data_dir={tmp_path}", "--to=item_table",
                  f"--item_table={dense}", f"--output={out}"],
                 cwd=REPO_ROOT, check=True, capture_output=True)
  table = read_item_table(out)
  assert table.item_ids.tolist() == [5_000_000_000, 900, 17]
  assert table.codes.tolist() == [[1, 2], [3, 4], [5, 6]]


def _benchmark(tmp_path, num_events):
  result = subprocess.run(
      [sys.executable, "-m", "tools.benchmark_data",
       f"--num_events={num_events}", "--num_items=5000", "--num_shards=2",
       f"--output_dir={tmp_path}"],
      cwd=REPO_ROOT, check=True, capture_output=True, text=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_memory_grows_only_by_the_compact_arrays(tmp_path):
  """A generated TFRecord log through the SID-building and training input
  at two sizes, each in a fresh process: the extra peak RSS per extra event
  must stay below what the log itself takes per event on disk (a reader
  that kept the raw rows would need at least that); what grows is the
  dense columns and the training sequences (docs/integration.md has the
  5M-event figure)."""
  small, large = (_benchmark(tmp_path, n) for n in (100_000, 400_000))

  def growth(run):  # peak of the input stages over the RSS before them
    return run["peak_rss_training_input_mib"] - run["rss_before_mib"]

  extra_events = large["events_kept"] - small["events_kept"]
  per_event = (growth(large) - growth(small)) * 2**20 / extra_events
  log_per_event = large["log_mib"] * 2**20 / large["events_in_log"]
  print(f"input peak +{growth(small):.1f} MiB at 100k, "
        f"+{growth(large):.1f} MiB at 400k events: {per_event:.0f} B per "
        f"extra event; log {log_per_event:.0f} B/event")
  assert large["training_sequences"] > small["training_sequences"]
  assert growth(large) > growth(small)  # the measurement sees the input
  assert per_event < log_per_event, (per_event, log_per_event)
