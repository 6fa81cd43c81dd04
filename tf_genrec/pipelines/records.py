"""Line formats of the pipelines' sharded inputs and outputs.

Inputs are JSON Lines so any runner can split them: items
`{"item_id": 7, "title": ..., "description": ..., "brand": ..., "categories": ...}`
and users `{"user_id": 3, "item_ids": [...]}` (oldest first; a user id is
an int or, as an event log may name users, a string). Outputs:
item-table shards in the item table format (tables/item_table.py), embedding
shards `item_id<TAB>v_0 v_1 ...` (float32 exactly, `%.9g`) and recall shards
`{"user_id": 3, "item_ids": [...], "scores": [...]}`.
"""
import dataclasses
import glob
import json
import os

import numpy as np

from tf_genrec.data.amazon import ItemInfo
from tf_genrec.tables.item_table import read_item_table, write_item_table


def item_to_json(item_id: int, item: ItemInfo) -> str:
  return json.dumps({"item_id": int(item_id), **dataclasses.asdict(item)})


def item_from_json(line: str):
  """-> (item_id, ItemInfo); missing text fields are empty."""
  record = json.loads(line)
  if "item_id" not in record:
    raise ValueError(f"item record without item_id: {line[:200]!r}")
  fields = {f.name: record.get(f.name) or ""
            for f in dataclasses.fields(ItemInfo)}
  return int(record["item_id"]), ItemInfo(**fields)


def _user_id(user_id):
  """String user ids stay strings; any other id is an int."""
  return str(user_id) if isinstance(user_id, str) else int(user_id)


def user_to_json(user_id, history) -> str:
  return json.dumps({"user_id": _user_id(user_id),
                     "item_ids": [int(i) for i in history]})


def user_from_json(line: str):
  """-> (user_id int or str, int64 history, oldest first)."""
  record = json.loads(line)
  for field in ("user_id", "item_ids"):
    if field not in record:
      raise ValueError(f"user record without {field}: {line[:200]!r}")
  return (_user_id(record["user_id"]),
          np.asarray(record["item_ids"], np.int64))


def write_dataset_jsonl(dataset, output_dir, num_shards: int = 4):
  """A Dataset (data/amazon.py) as item and user JSON Lines shards.

  Returns (items glob, users glob).
  """
  os.makedirs(output_dir, exist_ok=True)
  for name, lines in (
      ("items", [item_to_json(i, item)
                 for i, item in enumerate(dataset.items)]),
      ("users", [user_to_json(u, h)
                 for u, h in enumerate(dataset.histories)])):
    for shard in range(num_shards):
      path = os.path.join(output_dir,
                          f"{name}-{shard:05d}-of-{num_shards:05d}.jsonl")
      with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines[shard::num_shards])
  return (os.path.join(output_dir, "items-*.jsonl"),
          os.path.join(output_dir, "users-*.jsonl"))


def embedding_to_line(item_id: int, vector) -> str:
  # %.9g round-trips every float32 exactly.
  return f"{int(item_id)}\t" + " ".join(
      f"{v:.9g}" for v in np.asarray(vector, np.float32))


def _shard_lines(pattern):
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(f"no files match {pattern}")
  for path in paths:
    with open(path, encoding="utf-8") as f:
      yield from (line.rstrip("\n") for line in f if line.strip())


def read_embedding_shards(pattern) -> np.ndarray:
  """Embedding shards -> [num_items, dim] float32, row = item id 0..N-1."""
  rows = {}
  for line in _shard_lines(pattern):
    item, values = line.split("\t")
    rows[int(item)] = np.array(values.split(), np.float32)
  if sorted(rows) != list(range(len(rows))):
    raise ValueError(f"{pattern}: item ids must be 0..{len(rows) - 1}")
  return np.stack([rows[i] for i in range(len(rows))])


def merge_item_table_shards(pattern, output_path):
  """Item-table shards -> one item table ordered by item id (what
  `tf-genrec export --item_table` reads). Returns the merged ItemTableData."""
  paths = sorted(glob.glob(pattern))
  if not paths:
    raise FileNotFoundError(f"no files match {pattern}")
  parts = [read_item_table(p) for p in paths]
  parts = [p for p in parts if len(p.item_ids)]
  item_ids = np.concatenate([p.item_ids for p in parts])
  order = np.argsort(item_ids, kind="stable")
  write_item_table(output_path, item_ids[order],
                   np.concatenate([p.codes for p in parts])[order],
                   np.concatenate([p.priority for p in parts])[order])
  return read_item_table(output_path)


def recall_to_json(user_id, item_ids, scores) -> str:
  return json.dumps({"user_id": _user_id(user_id),
                     "item_ids": [int(i) for i in item_ids],
                     "scores": [float(s) for s in scores]})


def read_recall_shards(pattern) -> dict:
  """Recall shards -> {user_id (int or str): (item ids int64, scores
  float32)}."""
  out = {}
  for line in _shard_lines(pattern):
    record = json.loads(line)
    out[record["user_id"]] = (np.asarray(record["item_ids"], np.int64),
                              np.asarray(record["scores"], np.float32))
  return out
