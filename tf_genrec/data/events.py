"""Event logs and catalogues -> Dataset, streamed with tf.data.

An event is (user_id, item_id, timestamp, action_type): ids int64 or
strings, timestamp int64 (any unit that orders events), action_type int64 or
string and optional. A catalogue row is item_id + the text fields `title`,
`description`, `brand` and `categories` (or `category`), each optional.

Item ids become dense ids 0..num_items-1 in catalogue order by a hash table
inside the tf.data pipeline; the catalogue's own ids stay in
`Dataset.item_external_ids`. Users are numbered in order of first appearance.
The log is read in batches of `BATCH_SIZE` events, so the reader holds one
batch of raw rows at a time; what it keeps per event is three numbers (user,
item, time: 16 bytes), sorted per user at the end into one flat array of
items and one of times (data/ragged.py), 16 bytes per event. Events of items missing
from the catalogue and users with fewer than MIN_HISTORY events are dropped
(and counted in the log). For logs larger than memory, the Beam job
pipelines/user_histories.py groups the events out of core with the same
readers (`EventReader.columns` / `batches`) and `dense_events`.
"""
import abc
import csv
import json

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.data.dataset import MIN_HISTORY, Dataset, ItemInfo
from tf_genrec.data.ragged import Ragged
from tf_genrec.data.spec import EVENT_FIELDS, DataSpec

BATCH_SIZE = 8192
TEXT_FIELDS = ("title", "description", "brand", "categories")
_CATEGORY_ALIAS = "category"


def _id_dtype(values) -> tf.DType:
  """int64 if every sampled value is an integer (or its decimal text)."""
  for value in values:
    if isinstance(value, (bytes, str)):
      try:
        int(value)
      except ValueError:
        return tf.string
    elif not isinstance(value, (int, np.integer)):
      return tf.string
  return tf.int64


class EventReader(abc.ABC):
  """One event-log format: files -> tf.data batches of raw event columns."""

  def __init__(self, spec: DataSpec):
    self.spec = spec
    self.files = spec.event_files()
    # Event field -> tf.int64 / tf.string (action_type absent if missing).
    self.dtypes = {}
    schema = self._schema()
    for field in EVENT_FIELDS:
      name = spec.field(field)
      if name not in schema:
        if field == "action_type":
          continue
        raise ValueError(f"events: {self.files[0]} has no field {name!r} "
                         f"({field}); it has {sorted(schema)}")
      dtype, type_name = schema[name]
      if dtype is None or (field == "timestamp" and dtype != tf.int64):
        raise ValueError(f"events: field {name!r} ({field}) is {type_name}; "
                         "expected an integer" + (
                             "" if field == "timestamp" else " or a string"))
      self.dtypes[field] = dtype
    if spec.actions and "action_type" not in self.dtypes:
      raise ValueError(f"actions {spec.actions} given but the events have "
                       f"no {spec.field('action_type')!r} field")

  @abc.abstractmethod
  def _schema(self) -> dict:
    """Field name in the first file -> (tf.int64 / tf.string / None if
    unsupported, its type as the format names it)."""

  @abc.abstractmethod
  def columns(self, records) -> dict:
    """A batch of the format's raw records (serialized Examples, a pyarrow
    table, CSV lines without the header) -> {event field: [n] column}."""

  @abc.abstractmethod
  def batches(self, files=None) -> tf.data.Dataset:
    """Dicts of [<= BATCH_SIZE] tensors keyed by the event fields, from
    `files` (default: all of the log's)."""


class TFRecordEvents(EventReader):
  """TFRecord files (GZIP if named *.gz) of tf.train.Example events."""

  def _schema(self):
    self._compression = "GZIP" if self.files[0].endswith(".gz") else ""
    first = next(iter(tf.data.TFRecordDataset(
        self.files[:1], compression_type=self._compression)), None)
    if first is None:
      raise ValueError(f"events: {self.files[0]} holds no record")
    features = tf.train.Example.FromString(first.numpy()).features.feature
    kinds = {"int64_list": tf.int64, "bytes_list": tf.string}
    return {name: (kinds.get(f.WhichOneof("kind")), f.WhichOneof("kind"))
            for name, f in features.items()}

  def columns(self, records):
    parsed = tf.io.parse_example(records, {
        self.spec.field(f): tf.io.FixedLenFeature([], dtype)
        for f, dtype in self.dtypes.items()})
    return {f: parsed[self.spec.field(f)] for f in self.dtypes}

  def batches(self, files=None):
    return (tf.data.TFRecordDataset(files or self.files,
                                    compression_type=self._compression)
            .batch(BATCH_SIZE).map(self.columns))


class ParquetEvents(EventReader):
  """Parquet files; row groups are read batch by batch by pyarrow."""

  def _schema(self):
    schema = pq.read_schema(self.files[0])
    types = {}
    for name in schema.names:
      arrow_type = str(schema.field(name).type)
      types[name] = (tf.int64 if arrow_type.startswith(("int", "uint")) else
                     tf.string if arrow_type in ("string", "large_string")
                     else None, arrow_type)
    return types

  def columns(self, records):
    return {f: records.column(self.spec.field(f)).to_numpy(
        zero_copy_only=False) for f in self.dtypes}

  def batches(self, files=None):
    names = [self.spec.field(f) for f in self.dtypes]

    def generate():
      for path in files or self.files:
        for batch in pq.ParquetFile(path).iter_batches(BATCH_SIZE,
                                                       columns=names):
          yield self.columns(batch)

    return tf.data.Dataset.from_generator(generate, output_signature={
        f: tf.TensorSpec([None], dtype) for f, dtype in self.dtypes.items()})


class CsvEvents(EventReader):
  """CSV files with a header row (RFC 4180 quoting); a column is int64 if
  its value in the first data row is an integer, else string."""

  def _schema(self):
    with tf.io.gfile.GFile(self.files[0]) as f:
      rows = csv.reader(f)
      self._header = next(rows, None)
      first = next(rows, None)
    if self._header is None or first is None:
      raise ValueError(f"events: {self.files[0]} needs a header and a row")
    return {name: (_id_dtype([value]), repr(value))
            for name, value in zip(self._header, first)}

  def columns(self, records):
    rows = [row for row in csv.reader(records) if row]
    out = {}
    for f, dtype in self.dtypes.items():
      at = self._header.index(self.spec.field(f))
      values = [row[at] for row in rows]
      out[f] = (np.array(values, np.int64) if dtype == tf.int64 else
                np.array(values, object))
    return out

  def batches(self, files=None):
    columns = {f: self._header.index(self.spec.field(f)) for f in self.dtypes}
    fields = sorted(columns, key=columns.get)  # CsvDataset keeps file order
    records = tf.data.experimental.CsvDataset(
        files or self.files, [self.dtypes[f] for f in fields], header=True,
        select_cols=[columns[f] for f in fields])
    return records.batch(BATCH_SIZE).map(
        lambda *values: dict(zip(fields, values)))


EVENT_READERS = {"tfrecord": TFRecordEvents, "parquet": ParquetEvents,
                 "csv": CsvEvents}


def _catalogue_rows(spec: DataSpec):
  """The catalogue's rows as dicts, in file order."""
  if spec.items_format == "jsonl":
    with open(spec.items, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if line.strip():
          try:
            yield json.loads(line)
          except json.JSONDecodeError as e:
            raise ValueError(f"{spec.items}:{line_no}: {e}") from e
  elif spec.items_format == "csv":
    with open(spec.items, encoding="utf-8", newline="") as f:
      yield from csv.DictReader(f)
  else:
    for batch in pq.ParquetFile(spec.items).iter_batches():
      yield from batch.to_pylist()


def read_catalogue(spec: DataSpec):
  """-> (external ids [num_items] int64 or str, list of ItemInfo)."""
  ids, items = [], []
  id_field = spec.field("item_id")
  for row_no, row in enumerate(_catalogue_rows(spec)):
    if row.get(id_field) in (None, ""):
      raise ValueError(f"{spec.items}: row {row_no} has no {id_field!r}")
    ids.append(row[id_field])
    text = {f: row.get(f) or "" for f in TEXT_FIELDS}
    text["categories"] = text["categories"] or row.get(_CATEGORY_ALIAS) or ""
    items.append(ItemInfo(**{f: str(v) for f, v in text.items()}))
  if not ids:
    raise ValueError(f"{spec.items}: the catalogue is empty")
  if _id_dtype(ids) == tf.int64:
    external = np.array([int(i) for i in ids], np.int64)
  else:
    external = np.array([str(i) for i in ids], object)
  if len(np.unique(external)) != len(external):
    raise ValueError(f"{spec.items}: item ids must be unique")
  return external, items


def _item_lookup(external: np.ndarray, event_dtype: tf.DType):
  """A table external id -> dense id (-1 if unknown) and the key cast."""
  if external.dtype == np.int64 and event_dtype == tf.int64:
    keys, cast = tf.constant(external), tf.identity
  else:
    keys = tf.constant([str(i) for i in external], tf.string)
    cast = tf.identity if event_dtype == tf.string else tf.strings.as_string
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          keys, tf.range(len(external), dtype=tf.int64)), default_value=-1)
  return lambda ids: table.lookup(cast(ids))


def _action_filter(actions: list, dtype: tf.DType):
  if dtype == tf.int64:
    keep = tf.constant([int(a) for a in actions], tf.int64)
  else:
    keep = tf.constant([str(a) for a in actions], tf.string)
  return lambda a: tf.reduce_any(tf.equal(a[:, None], keep[None, :]), axis=1)


class _UserIndex:
  """External user id -> dense id in order of first appearance.

  Sorted arrays of (id, dense id), not a dict: 12 bytes per int64 user
  where a dict holds ~130 bytes of Python objects, which also fragment the
  heap. New users form a small sorted run; runs are merged while the last is
  at least half the one before, so there are O(log users) runs to search
  and each user is merged O(log users) times.
  """

  def __init__(self):
    self._runs = []  # (sorted ids, their dense ids), longest first
    self._count = 0

  def __call__(self, users: np.ndarray) -> np.ndarray:
    if users.dtype == object:  # tf.string: fixed-width bytes sort in C
      users = users.astype(bytes)
    unique, first, inverse = np.unique(users, return_index=True,
                                       return_inverse=True)
    dense = np.full(len(unique), -1, np.int64)
    for ids, dense_ids in self._runs:
      at = np.searchsorted(ids, unique).clip(max=len(ids) - 1)
      found = ids[at] == unique
      dense[found] = dense_ids[at[found]]
    new = dense < 0
    order = np.flatnonzero(new)
    order = order[np.argsort(first[order], kind="stable")]
    dense[order] = self._count + np.arange(len(order))
    self._count += len(order)
    if order.size:
      self._runs.append((unique[new], dense[new].astype(np.int32)))
    while (len(self._runs) > 1
           and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0])):
      (ids_a, dense_a), (ids_b, dense_b) = self._runs.pop(), self._runs.pop()
      ids = np.concatenate([ids_b, ids_a])
      merged = np.argsort(ids, kind="stable")
      self._runs.append((ids[merged],
                         np.concatenate([dense_b, dense_a])[merged]))
    return dense[inverse.reshape(-1)]


def dense_events(spec: DataSpec, dtypes: dict, item_ids: np.ndarray):
  """-> a function: raw event columns (EventReader.columns) -> {"user",
  "item" (dense id, -1 if not in the catalogue), "time"} tensors of the
  events whose action spec.actions keeps."""
  lookup = _item_lookup(item_ids, dtypes["item_id"])
  keep = (_action_filter(spec.actions, dtypes["action_type"])
          if spec.actions else None)

  def dense(batch):
    mask = tf.ones_like(batch["timestamp"], tf.bool)
    if keep is not None:
      mask = keep(batch["action_type"])
    items = lookup(batch["item_id"])
    return {"user": tf.boolean_mask(batch["user_id"], mask),
            "item": tf.boolean_mask(items, mask),
            "time": tf.boolean_mask(batch["timestamp"], mask)}

  return dense


def read_events(spec: DataSpec, item_ids: np.ndarray):
  """Streams the log -> (users, items, timestamps) dense arrays, file order.

  Also returns the number of events dropped for an item outside the
  catalogue.
  """
  reader = EVENT_READERS[spec.events_format](spec)
  dense = dense_events(spec, reader.dtypes, item_ids)
  users_index = _UserIndex()
  users, items, times = [], [], []
  dropped = 0
  progress = tqdm(desc="events", unit="event", unit_scale=True)
  # One batch read ahead: an autotuned buffer grows while this loop lags
  # (a busy machine), and then holds a share of the log.
  for batch in (reader.batches().map(dense)
                .prefetch(1).as_numpy_iterator()):
    progress.update(len(batch["item"]))
    known = batch["item"] >= 0
    dropped += int(np.count_nonzero(~known))
    users.append(users_index(batch["user"][known]).astype(np.int32))
    items.append(batch["item"][known].astype(np.int32))
    times.append(batch["time"][known])
  progress.close()
  columns = []
  for chunks, dtype in ((users, np.int32), (items, np.int32),
                        (times, np.int64)):
    columns.append(np.concatenate(chunks) if chunks else np.zeros(0, dtype))
    chunks.clear()  # one column's chunks and its copy alive at a time
  return (*columns, dropped)


def _gather(column: np.ndarray, order: np.ndarray, dtype) -> np.ndarray:
  """column[order] as `dtype`, without a temporary as long as the column."""
  out = np.empty(len(order), dtype)
  for start in range(0, len(order), BATCH_SIZE):
    out[start:start + BATCH_SIZE] = column[order[start:start + BATCH_SIZE]]
  return out


def load_event_dataset(spec: DataSpec) -> Dataset:
  """Reads the catalogue and streams the log into per-user histories."""
  external, items = read_catalogue(spec)
  users, item_col, times, dropped = read_events(spec, external)
  if dropped:
    logging.warning("%s: dropped %d events of items not in the catalogue %s",
                    spec.events, dropped, spec.items)
  counts = np.bincount(users) if users.size else np.zeros(0, np.int64)
  short = counts < MIN_HISTORY
  # Stable: events with equal timestamps keep their order in the log.
  order = np.lexsort((times, users))
  if short.any():
    logging.warning("%s: dropped %d users with fewer than %d events",
                    spec.events, int(short.sum()), MIN_HISTORY)
    order = order[~short[users[order]]]
  del users
  # One column at a time, so at most one extra column is alive.
  item_col = _gather(item_col, order, np.int64)
  times = _gather(times, order, np.int64)
  del order
  counts = counts[~short]
  if not counts.size:
    raise ValueError(f"{spec.events}: no user has {MIN_HISTORY} events of "
                     f"items in the catalogue {spec.items}")
  histories = Ragged.from_lengths(item_col, counts)
  logging.info("%s: %d users, %d items, %d events", spec.events,
               len(histories), len(items), len(item_col))
  return Dataset(histories=histories, items=items, name=spec.name,
                 timestamps=Ragged(times, histories.starts, histories.ends),
                 item_external_ids=external)
