"""The user-histories Beam job (pipelines/user_histories.py) on the local
runner vs load_event_dataset and a plain-Python grouping of generated logs.
"""
import glob
import gzip
import json
import os

import numpy as np
import pytest

from dataset_testlib import write_manifest_log
from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.data.dataset import MIN_HISTORY, ItemInfo
from tf_genrec.data.events import TEXT_FIELDS
from tf_genrec.data.writers import (catalogue_path, write_catalogue,
                                    write_event_shards)
from tf_genrec.options import OptionsError
from tf_genrec.pipelines import records
from tf_genrec.pipelines.user_histories import (UserHistoriesOptions,
                                                write_user_histories)

NUM_USERS, NUM_ITEMS = 60, 30


def _generated_log(directory, events_format, string_ids, seed=0):
  """A shuffled log in 2 shards (+ catalogue); -> the expected
  {user: dense history} (plain-Python grouping), unknown-item events, short
  users. Each user's timestamps are distinct, so the order is unique."""
  rng = np.random.default_rng(seed)
  items = ([f"sku-{i}" for i in rng.permutation(NUM_ITEMS)] if string_ids
           else (rng.permutation(NUM_ITEMS) * 7 + 1000).tolist())
  events = []  # (user, item, timestamp)
  for u in range(NUM_USERS):
    user = f"user-{u}" if string_ids else 5 * u + 3
    times = rng.choice(10**6, size=rng.integers(1, 12), replace=False)
    events += [(user, items[rng.integers(NUM_ITEMS)], int(t)) for t in times]
  unknown = "sku-x" if string_ids else 999_999
  events += [(events[i][0], unknown, 7) for i in rng.choice(len(events), 5)]
  events = [events[i] for i in rng.permutation(len(events))]

  grouped = {}
  for user, item, time in events:
    if item != unknown:
      grouped.setdefault(user, []).append((time, items.index(item)))
  expected = {user: [i for _, i in sorted(e)] for user, e in grouped.items()
              if len(e) >= MIN_HISTORY}

  def chunk(rows):
    columns = list(zip(*rows))
    return {"user_id": np.array(columns[0],
                                object if string_ids else np.int64),
            "item_id": np.array(columns[1],
                                object if string_ids else np.int64),
            "timestamp": np.array(columns[2], np.int64),
            "action_type": np.ones(len(rows), np.int64)}

  half = len(events) // 2
  paths = write_event_shards(str(directory), events_format.split(".")[0],
                             [[chunk(events[:half])], [chunk(events[half:])]])
  if events_format == "tfrecord.gz":
    for path in paths:
      with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as out:
        out.write(f.read())
      os.remove(path)
  write_catalogue([{"item_id": item, **{f: f"{f} {item}" for f in TEXT_FIELDS}}
                   for item in items], catalogue_path(str(directory), "jsonl"),
                  "jsonl")
  return expected, 5, len(grouped) - len(expected)


def _read_users(output_dir):
  users = {}
  for path in glob.glob(os.path.join(output_dir, "users-*.jsonl")):
    with open(path, encoding="utf-8") as f:
      for line in f:
        user, history = records.user_from_json(line)
        assert user not in users, user  # one line per user
        users[user] = history.tolist()
  return users


@pytest.mark.parametrize("events_format,string_ids", [
    ("tfrecord.gz", True), ("parquet", False), ("csv", True)])
def test_histories_equal_load_event_dataset(tmp_path, events_format,
                                            string_ids):
  data = tmp_path / "log"
  expected, unknown, short = _generated_log(data, events_format, string_ids)
  assert unknown and short  # the log exercises both drops
  output = tmp_path / "out"
  report = write_user_histories(UserHistoriesOptions(
      data_dir=str(data), output_dir=str(output), num_shards=2))

  assert sorted(os.listdir(output)) == [
      "items-00000-of-00001.jsonl", "users-00000-of-00002.jsonl",
      "users-00001-of-00002.jsonl"]
  got = _read_users(output)
  assert got == expected
  assert {type(u) for u in got} == {str if string_ids else int}
  # load_event_dataset numbers users itself: compare the histories.
  loaded = load_dataset(str(data))
  assert sorted(h.tolist() for h in loaded.histories) == sorted(got.values())
  assert report["unknown_item_events"] == unknown
  assert report["short_users"] == short
  assert report["users"] == len(expected)
  assert report["user_events"] == sum(map(len, expected.values()))
  # The item shards are the catalogue in dense-id order.
  with open(output / "items-00000-of-00001.jsonl", encoding="utf-8") as f:
    items = dict(records.item_from_json(line) for line in f)
  assert [items[i] for i in range(len(items))] == loaded.items


def test_fields_actions_drops_and_tie_order(tmp_path, caplog):
  """Renamed fields, an action filter, an unknown item, a user left short
  by the filter, and a timestamp tie, which the job breaks by dense item id
  where load_event_dataset keeps log order."""
  data = tmp_path / "log"
  data.mkdir()
  write_manifest_log(data)
  output = tmp_path / "out"
  report = write_user_histories(UserHistoriesOptions(
      data_dir=str(data), output_dir=str(output)))

  assert _read_users(output) == {"alice": [1, 2, 0], "carol": [1, 0, 2]}
  assert [h.tolist() for h in load_dataset(str(data)).histories] == [
      [1, 2, 0], [1, 2, 0]]  # carol's tie: C before A, as in the log
  assert {k: report[k] for k in ("events_read", "unknown_item_events",
                                 "short_users", "users")} == {
      "events_read": 10, "unknown_item_events": 1, "short_users": 1,
      "users": 2}
  assert "dropped 1 events of items not in the catalogue" in caplog.text
  with open(glob.glob(str(output / "items-*.jsonl"))[0],
            encoding="utf-8") as f:
    assert records.item_from_json(f.readline()) == (
        0, ItemInfo(title="Lamp", description="", brand="",
                    categories="home"))


def test_refuses_the_bundled_layout_and_negative_shards(tmp_path):
  with pytest.raises(OptionsError, match=r"data_dir: .* is the bundled "
                     r"layout, not an event log"):
    write_user_histories(UserHistoriesOptions(data_dir=DEFAULT_DATA_DIR))
  with pytest.raises(OptionsError, match="num_shards must be >= 0, got -1"):
    write_user_histories(UserHistoriesOptions(data_dir=str(tmp_path),
                                              num_shards=-1))


def test_recall_lines_keep_string_and_int_user_ids(tmp_path):
  (tmp_path / "recall-00000-of-00001.jsonl").write_text(
      records.recall_to_json("user-7", [3, 1], [0.5, 0.25]) + "\n" +
      records.recall_to_json(np.int64(7), [2], [1.0]) + "\n")
  got = records.read_recall_shards(str(tmp_path / "recall-*.jsonl"))
  assert sorted(got, key=str) == [7, "user-7"]
  np.testing.assert_array_equal(got["user-7"][0], [3, 1])
