"""Writes event logs and catalogues in the formats events.py reads.

Events arrive as column chunks ({field: [n] array}, EVENT_FIELDS), so a log of
any size is written with one chunk in memory; `dataset_event_chunks` and
`dataset_catalogue` turn a loaded Dataset (e.g. a bundled one) into them.
"""
import csv
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from tf_genrec.data.dataset import Dataset
from tf_genrec.data.events import TEXT_FIELDS
from tf_genrec.data.spec import EVENT_FIELDS

EVENT_EXTENSIONS = {"tfrecord": ".tfrecord", "parquet": ".parquet",
                    "csv": ".csv"}
CATALOGUE_EXTENSIONS = {"jsonl": ".jsonl", "csv": ".csv",
                        "parquet": ".parquet"}


def _python(value):
  return value.item() if isinstance(value, np.generic) else value


def _example_writer(chunk):
  """-> (Example, setters): one Example reused for every row, its values set
  in place (building a new message per event is several times slower)."""
  example = tf.train.Example()
  values = []
  for field in EVENT_FIELDS:
    feature = example.features.feature[field]
    if chunk[field].dtype.kind in "OSU":
      feature.bytes_list.value.append(b"")
      values.append((feature.bytes_list.value, str.encode))
    else:
      feature.int64_list.value.append(0)
      values.append((feature.int64_list.value, int))
  return example, values


def write_events(chunks, path: str, events_format: str) -> int:
  """Column chunks -> one event file; returns the number of events."""
  count = 0
  if events_format == "tfrecord":
    with tf.io.TFRecordWriter(path) as writer:
      for chunk in chunks:
        example, values = _example_writer(chunk)
        columns = [chunk[f].tolist() for f in EVENT_FIELDS]
        for row in zip(*columns):
          for (value, convert), v in zip(values, row):
            value[0] = convert(v)
          writer.write(example.SerializeToString())
        count += len(columns[0])
  elif events_format == "parquet":
    writer = None
    for chunk in chunks:
      table = pa.table({f: chunk[f] for f in EVENT_FIELDS})
      writer = writer or pq.ParquetWriter(path, table.schema)
      writer.write_table(table)
      count += table.num_rows
    if writer is not None:
      writer.close()
  elif events_format == "csv":
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(EVENT_FIELDS)
      for chunk in chunks:
        writer.writerows(zip(*(chunk[f] for f in EVENT_FIELDS)))
        count += len(chunk[EVENT_FIELDS[0]])
  else:
    raise ValueError(f"events_format {events_format!r} is not one of "
                     f"{sorted(EVENT_EXTENSIONS)}")
  return count


def write_catalogue(rows: list, path: str, catalogue_format: str):
  """Catalogue rows (dicts: item_id + TEXT_FIELDS) -> one file."""
  columns = ("item_id",) + TEXT_FIELDS
  if catalogue_format == "jsonl":
    with open(path, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  elif catalogue_format == "csv":
    with open(path, "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(f, columns)
      writer.writeheader()
      writer.writerows(rows)
  elif catalogue_format == "parquet":
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in columns}), path)
  else:
    raise ValueError(f"catalogue_format {catalogue_format!r} is not one of "
                     f"{sorted(CATALOGUE_EXTENSIONS)}")


def _external_items(dataset: Dataset, string_ids: bool) -> np.ndarray:
  if dataset.item_external_ids is not None:
    return dataset.item_external_ids
  ids = np.arange(dataset.num_items, dtype=np.int64)
  return np.array([f"item-{i}" for i in ids], object) if string_ids else ids


def dataset_catalogue(dataset: Dataset, string_ids: bool = False) -> list:
  ids = _external_items(dataset, string_ids)
  rows = []
  for external, item in zip(ids, dataset.items):
    row = {"item_id": _python(external)}
    row.update({f: getattr(item, f) for f in TEXT_FIELDS})
    rows.append(row)
  return rows


def dataset_event_chunks(dataset: Dataset, users: range,
                         string_ids: bool = False, chunk_users: int = 4096):
  """The events of `users`, user by user in time order, as column chunks.

  Without timestamps, an event's position in its history is its timestamp.
  """
  items = _external_items(dataset, string_ids)
  for start in range(users.start, users.stop, chunk_users):
    block = range(start, min(start + chunk_users, users.stop))
    lengths = [len(dataset.histories[u]) for u in block]
    user_ids = np.repeat(np.arange(block.start, block.stop), lengths)
    item_col = items[np.concatenate([dataset.histories[u] for u in block])]
    if dataset.timestamps is not None:
      times = np.concatenate([dataset.timestamps[u] for u in block])
    else:
      times = np.concatenate([np.arange(n) for n in lengths])
    yield {"user_id": (np.array([f"user-{u}" for u in user_ids], object)
                       if string_ids else user_ids),
           "item_id": item_col, "timestamp": times.astype(np.int64),
           "action_type": (np.full(len(user_ids), "click", object)
                           if string_ids else np.ones(len(user_ids),
                                                      np.int64))}


def write_event_shards(output_dir: str, events_format: str,
                       shards: list) -> list:
  """Per shard an iterable of column chunks -> `events-SSSSS-of-NNNNN.<ext>`
  in output_dir; returns the paths (name order = shard order)."""
  os.makedirs(output_dir, exist_ok=True)
  paths = []
  for shard, chunks in enumerate(shards):
    path = os.path.join(output_dir, f"events-{shard:05d}-of-{len(shards):05d}"
                        f"{EVENT_EXTENSIONS[events_format]}")
    write_events(chunks, path, events_format)
    paths.append(path)
  return paths


def catalogue_path(output_dir: str, catalogue_format: str) -> str:
  return os.path.join(output_dir,
                      "items" + CATALOGUE_EXTENSIONS[catalogue_format])


def write_dataset(dataset: Dataset, output_dir: str, events_format: str,
                  catalogue_format: str, num_shards: int = 1,
                  string_ids: bool = False) -> list:
  """A Dataset -> event shards + `items.<ext>` in output_dir (a directory
  `--data_dir` reads); returns the files written.

  Users are split into contiguous shards, so reading the shards in name
  order meets the users in the same order.
  """
  bounds = np.linspace(0, dataset.num_users, num_shards + 1).astype(int)
  paths = write_event_shards(output_dir, events_format, [
      dataset_event_chunks(dataset, range(bounds[s], bounds[s + 1]),
                           string_ids) for s in range(num_shards)])
  path = catalogue_path(output_dir, catalogue_format)
  write_catalogue(dataset_catalogue(dataset, string_ids), path,
                  catalogue_format)
  return paths + [path]
