"""Event log -> per-user histories as user shards, out of core.

The Beam form of data/events.load_event_dataset's grouping, for logs larger
than one machine's memory; its user and item shards are what
beam_build_sids and beam_batch_recall read:

  events ─EventReader─► dense_events (spec.actions; item ids ->
         dense ids by the catalogue, a side input) ─► (user, (time, item))
         ─► group by user ─► sort, drop short users ─► user shards
  catalogue ─► item shards (dense id order)

Memory: a worker holds one user's events at a time (and the catalogue's
ids); the runner's shuffle (Dataflow, Flink, Spark) holds the rest. The
local FnApiRunner holds the groups in memory, so locally the job shows
correctness, not the bound.

A user's events are ordered by (timestamp, dense item id): a distributed
read has no log order, which load_event_dataset keeps for equal timestamps.
User ids stay the log's (int or string); item ids become dense ids (catalogue
rows), as in load_event_dataset. Events of items outside the catalogue and
users with fewer than MIN_HISTORY events are dropped and counted.
"""
import dataclasses
import os
from typing import Optional

import apache_beam as beam
import numpy as np
from absl import logging
from apache_beam.io import fileio

from tf_genrec.data.amazon import event_log_spec
from tf_genrec.data.dataset import MIN_HISTORY
from tf_genrec.data.events import (BATCH_SIZE, EVENT_READERS, EventReader,
                                   dense_events, read_catalogue)
from tf_genrec.data.spec import DataSpec
from tf_genrec.options import OptionsError, option, refused_as
from tf_genrec.pipelines import records
from tf_genrec.pipelines.runner import local_pipeline_options

METRICS_NAMESPACE = "tf_genrec.user_histories"
# The job's counters: events read, events dropped for an item outside the
# catalogue, users dropped for fewer than MIN_HISTORY events, users and
# events written.
COUNTERS = ("events_read", "unknown_item_events", "short_users", "users",
            "user_events")


@dataclasses.dataclass(frozen=True)
class UserHistoriesOptions:
  """What the job reads and writes; where it runs is the runner's
  PipelineOptions."""
  data_dir: Optional[str] = option(
      None, "Event log and catalogue ([<format>:]<dir or pattern>, "
      "docs/integration.md).", required=True)
  output_dir: str = option("runs/beam/users", "Output directory: "
                           "users-*.jsonl and items-*.jsonl.")
  num_shards: int = option(0, "User shards (0: the runner decides).")


def _count(name: str, value: int = 1):
  beam.metrics.Metrics.counter(METRICS_NAMESPACE, name).inc(value)


def _event_columns(pipeline, reader: EventReader):
  """The log as batches of event columns ({field: [n] numpy array}).

  Parquet row groups and CSV lines are split over workers by Beam's
  sources; a TFRecord file is read whole by one worker with the reader's
  own tf.data pipeline (GZIP if *.gz), as Beam's TFRecord source does not
  split a file either, and it would need a CRC32C package besides.
  """
  spec = reader.spec
  if spec.events_format == "tfrecord":
    return (pipeline
            | "MatchFiles" >> fileio.MatchFiles(spec.events)
            | "Paths" >> beam.Map(lambda match: match.path)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadTFRecord" >> beam.FlatMap(
                lambda path: reader.batches([path]).as_numpy_iterator()))
  if spec.events_format == "parquet":
    raw = pipeline | "ReadParquet" >> beam.io.ReadFromParquetBatched(
        spec.events, columns=[spec.field(f) for f in reader.dtypes])
  else:  # Split by line: a quoted CSV value may not hold a line break.
    raw = (pipeline
           | "ReadCsv" >> beam.io.ReadFromText(spec.events,
                                               skip_header_lines=1)
           | "Batch" >> beam.BatchElements(max_batch_size=BATCH_SIZE))
  return raw | "Columns" >> beam.Map(reader.columns)


class _DenseEvents(beam.DoFn):
  """Batches of raw columns -> (user id, (timestamp, dense item id))."""

  def __init__(self, spec: DataSpec, dtypes: dict):
    self._spec = spec
    self._dtypes = dtypes

  def setup(self):
    self._dense = None

  def process(self, batch, item_ids):
    if self._dense is None:  # once per DoFn instance: it builds a table
      self._dense = dense_events(self._spec, self._dtypes, item_ids)
    events = {k: v.numpy() for k, v in self._dense(batch).items()}
    known = events["item"] >= 0
    _count("events_read", len(next(iter(batch.values()))))
    _count("unknown_item_events", int(np.count_nonzero(~known)))
    users = events["user"][known].tolist()
    if events["user"].dtype == object:  # tf.string: bytes
      users = [u.decode() for u in users]
    yield from zip(users, zip(events["time"][known].tolist(),
                              events["item"][known].tolist()))


def _history(user, events):
  """-> a user line, or nothing for a user with too few events."""
  events = sorted(events)  # (timestamp, dense item id)
  if len(events) < MIN_HISTORY:
    _count("short_users")
    return
  _count("users")
  _count("user_events", len(events))
  yield records.user_to_json(user, [item for _, item in events])


def user_histories(pipeline, spec: DataSpec, output_prefix, num_shards=0,
                   items_prefix=None):
  """Adds the job to `pipeline`; user shards go to
  `<output_prefix>-SSSSS-of-NNNNN.jsonl` (records.user_to_json), the
  catalogue as item shards (records.item_to_json) to
  `<items_prefix>-*.jsonl` when given. Raises ValueError for a log whose
  fields do not match the spec (read from its first file)."""
  reader = EVENT_READERS[spec.events_format](spec)
  catalogue = (pipeline
               | "Spec" >> beam.Create([spec])
               | "ReadCatalogue" >> beam.Map(read_catalogue))
  item_ids = catalogue | "ItemIds" >> beam.Map(lambda c: c[0])
  histories = (
      _event_columns(pipeline, reader)
      | "DenseEvents" >> beam.ParDo(_DenseEvents(spec, reader.dtypes),
                                    beam.pvalue.AsSingleton(item_ids))
      | "GroupByUser" >> beam.GroupByKey()
      | "History" >> beam.FlatMapTuple(_history))
  if items_prefix:
    _ = (catalogue
         | "Items" >> beam.FlatMap(lambda c: enumerate(c[1]))
         | "FormatItems" >> beam.MapTuple(records.item_to_json)
         | "WriteItems" >> beam.io.WriteToText(items_prefix,
                                               file_name_suffix=".jsonl"))
  return histories | "WriteUsers" >> beam.io.WriteToText(
      output_prefix, file_name_suffix=".jsonl", num_shards=num_shards)


def write_user_histories(options: UserHistoriesOptions,
                         pipeline_options=None) -> dict:
  """Runs the job on `pipeline_options` (Beam's; None: the local runner,
  runner.LOCAL_RUNNER); its outputs and counters."""
  o = options
  if not o.data_dir:
    raise OptionsError(f"data_dir is required, got {o.data_dir!r}")
  if o.num_shards < 0:
    raise OptionsError(f"num_shards must be >= 0, got {o.num_shards}")
  users_prefix = os.path.join(o.output_dir, "users")
  items_prefix = os.path.join(o.output_dir, "items")
  pipeline = beam.Pipeline(
      options=pipeline_options or local_pipeline_options([]))
  with refused_as("data_dir"):
    spec = event_log_spec(o.data_dir)
    user_histories(pipeline, spec, users_prefix, o.num_shards, items_prefix)
  result = pipeline.run()
  result.wait_until_finish()
  report = {"events": spec.events, "items": spec.items,
            "users_output": users_prefix + "-*.jsonl",
            "items_output": items_prefix + "-*.jsonl",
            **dict.fromkeys(COUNTERS, 0)}
  for counter in result.metrics().query(beam.metrics.MetricsFilter()
                                        .with_namespace(METRICS_NAMESPACE)
                                        )["counters"]:
    report[counter.key.metric.name] = counter.committed
  if report["unknown_item_events"]:
    logging.warning("%s: dropped %d events of items not in the catalogue %s",
                    spec.events, report["unknown_item_events"], spec.items)
  if report["short_users"]:
    logging.warning("%s: dropped %d users with fewer than %d events",
                    spec.events, report["short_users"], MIN_HISTORY)
  logging.info("%s", report)
  if not report["users"]:
    raise OptionsError(f"data_dir={o.data_dir}: no user has {MIN_HISTORY} "
                       f"events of items in the catalogue {spec.items}")
  return report
