"""Catalogue -> embeddings -> RQ-VAE semantic IDs -> item table shards.

The Beam form of `tf-genrec embed` + `tf-genrec build_sids` (one text view):

  items ─RunInference(TextEncoderHandler)─► (item_id, embedding)
          ├─ all rows, by item id ─► train_rqvae (one worker) ─► trained state
          └─ batches ─► RQVAE.encode_codes (state as side input) ─► codes
  users ─leave_one_out train part─► counts ─┐
  codes ──────────────────────────── join by item ─► group by SID
          ─► assign.resolve_collisions per group ─► item table shards

Given the same embeddings and seed the table equals build_sids' (test):
training sees the rows in item-id order as build_sids does, and a
collision group's members are ranked in item-id order, which is the row
order add_disambiguation_level breaks ties with.
"""
import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from tf_genrec.data.amazon import leave_one_out
from tf_genrec.pipelines import records
from tf_genrec.pipelines.model_handlers import TextEncoderHandler
from tf_genrec.semantic_ids import assign
from tf_genrec.semantic_ids.rqvae import RQVAE, RQVAEConfig, train_rqvae
from tf_genrec.tables.item_table import format_item_line

METRICS_NAMESPACE = "tf_genrec.build_sids"


@dataclasses.dataclass(frozen=True)
class BuildSidsOptions:
  """What the job computes; where it runs is the runner's PipelineOptions.

  rqvae.input_dim is replaced by the encoder's embedding width.
  """
  rqvae: RQVAEConfig = RQVAEConfig()
  collision_mode: str = "disambiguate"
  encoder: str = "minilm"
  include_description: bool = False
  embed_batch_size: int = 64  # texts per encoder call
  encode_batch_size: int = 4096  # items per RQ-VAE encoder call
  num_shards: int = 0  # output files; 0 lets the runner choose

  def __post_init__(self):
    if self.collision_mode not in assign.COLLISION_MODES:
      raise ValueError(f"BuildSidsOptions.collision_mode must be one of "
                       f"{assign.COLLISION_MODES}, got "
                       f"{self.collision_mode!r}")
    for name in ("embed_batch_size", "encode_batch_size"):
      if getattr(self, name) <= 0:
        raise ValueError(f"BuildSidsOptions.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.num_shards < 0:
      raise ValueError(f"BuildSidsOptions.num_shards must be >= 0, got "
                       f"{self.num_shards}")


def _train(rows, config: RQVAEConfig) -> dict:
  """All (item_id, embedding) rows -> trained RQ-VAE state (one worker)."""
  rows = sorted(rows, key=lambda row: row[0])
  embeddings = np.stack([vector for _, vector in rows]).astype(np.float32)
  config = dataclasses.replace(config, input_dim=embeddings.shape[1])
  model, _ = train_rqvae(embeddings, config)
  return {"config": config, "state": model.get_state()}


class _EncodeCodes(beam.DoFn):
  """Batches of (item_id, embedding) -> (item_id, L codes)."""

  def setup(self):
    self._model = None

  def process(self, batch, trained):
    if self._model is None:  # once per DoFn instance, not per batch
      self._model = RQVAE.from_state(trained["config"], trained["state"])
    embeddings = np.stack([vector for _, vector in batch])
    codes = self._model.encode_codes(embeddings, batch_size=len(batch))
    for (item_id, _), row in zip(batch, codes):
      yield item_id, row


def _training_items(user):
  """A user's leave-one-out training items (what build_sids counts)."""
  _, history = user
  return leave_one_out([history]).train[0].tolist()


def _with_priority(joined):
  item_id, grouped = joined
  codes, counts = list(grouped["codes"]), list(grouped["counts"])
  if not codes:
    raise ValueError(f"users' histories name item_id={item_id}, which is "
                     "not in the catalogue")
  if len(codes) > 1:
    raise ValueError(f"item_id={item_id} appears {len(codes)} times in the "
                     "catalogue")
  return tuple(int(c) for c in codes[0]), (item_id, float(sum(counts)))


def _resolve_group(group, mode, codebook_size):
  """One collision group (items sharing L codes) -> its item table rows."""
  sid, members = group
  members = sorted(members)  # by item id: add_disambiguation_level's ties
  priority = np.array([p for _, p in members], np.float32)
  codes = assign.resolve_collisions(np.tile(sid, (len(members), 1)),
                                    priority, mode, codebook_size)
  beam.metrics.Metrics.counter(METRICS_NAMESPACE, "items").inc(len(members))
  beam.metrics.Metrics.counter(METRICS_NAMESPACE, "sids_before").inc()
  if len(members) > 1:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE,
                                 "collided_items").inc(len(members))
  beam.metrics.Metrics.distribution(METRICS_NAMESPACE,
                                    "items_per_sid").update(len(members))
  for (item_id, p), row in zip(members, codes):
    yield format_item_line(item_id, row, p)


def _item_text(item, include_description):
  item_id, info = item
  return item_id, info.text(include_description)


def _write(lines, prefix, suffix, num_shards, label):
  return lines | label >> beam.io.WriteToText(prefix, file_name_suffix=suffix,
                                              num_shards=num_shards)


def build_sids(pipeline, items_pattern, users_pattern, output_prefix,
               options: BuildSidsOptions = BuildSidsOptions(),
               embeddings_prefix=None, encoders=None):
  """Adds the job to `pipeline`; item table shards go to
  `<output_prefix>-SSSSS-of-NNNNN.tsv` (merge with
  records.merge_item_table_shards for export), embedding shards to
  `<embeddings_prefix>-*.tsv` when given. `encoders` overrides
  semantic_ids.embeddings.ENCODERS (name -> factory)."""
  items = (pipeline
           | "ReadItems" >> beam.io.ReadFromText(items_pattern)
           | "ParseItems" >> beam.Map(records.item_from_json)
           | "ItemText" >> beam.Map(_item_text, options.include_description))
  embeddings = (
      items
      | "Embed" >> RunInference(KeyedModelHandler(TextEncoderHandler(
          options.encoder, options.embed_batch_size, encoders)))
      | "Vector" >> beam.MapTuple(lambda item_id, result:
                                  (item_id, result.inference)))
  if embeddings_prefix:
    _write(embeddings | "FormatEmbeddings" >> beam.MapTuple(
        records.embedding_to_line), embeddings_prefix, ".tsv",
           options.num_shards, "WriteEmbeddings")
  trained = (embeddings
             | "AllRows" >> beam.combiners.ToList()
             | "TrainRQVAE" >> beam.Map(_train, options.rqvae))
  codes = (embeddings
           | "Batch" >> beam.BatchElements(
               min_batch_size=1, max_batch_size=options.encode_batch_size)
           | "EncodeCodes" >> beam.ParDo(_EncodeCodes(),
                                         beam.pvalue.AsSingleton(trained)))
  counts = (pipeline
            | "ReadUsers" >> beam.io.ReadFromText(users_pattern)
            | "ParseUsers" >> beam.Map(records.user_from_json)
            | "TrainingItems" >> beam.FlatMap(_training_items)
            | "Count" >> beam.combiners.Count.PerElement())
  table = (
      {"codes": codes, "counts": counts}
      | "JoinPriority" >> beam.CoGroupByKey()
      | "SidKey" >> beam.Map(_with_priority)
      | "GroupBySid" >> beam.GroupByKey()
      | "ResolveCollisions" >> beam.FlatMap(
          _resolve_group, options.collision_mode,
          options.rqvae.codebook_size))
  return _write(table, output_prefix, ".tsv", options.num_shards,
                "WriteItemTable")
