"""The Beam jobs on the local runner vs the single-machine tools.

On the bundled dataset: the item table job equals `tools/build_semantic_ids`
on the same embeddings and seed, and batch recall equals the evaluation's
per-user lists (evaluation/saved_model_recall.py) for the validation inputs.
"""
import subprocess
import sys
import zlib
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.testing.util import assert_that

import graphs
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.saved_model_recall import (history_requests,
                                                     recall_saved_model)
from tf_genrec.pipelines import records
from tf_genrec.pipelines.batch_recall import batch_recall
from tf_genrec.pipelines.build_sids import BuildSidsOptions, build_sids
from tf_genrec.pipelines.runner import local_pipeline_options
from tf_genrec.pipelines.model_handlers import TextEncoderHandler
from tf_genrec.semantic_ids.embeddings import MiniLMEncoder, embed_texts
from tf_genrec.semantic_ids.rqvae import RQVAEConfig
from tf_genrec.tables.item_table import read_item_table

from recall_testlib import tiny_generator_checkpoint

REPO = Path(__file__).resolve().parents[1]
# One epoch at a low learning rate keeps the k-means-initialised codes
# spread (collision groups stay <= K); one batch shape traces train_step once.
LEVELS, CODEBOOK, EPOCHS, SEED, LEARNING_RATE, BATCH = 3, 32, 1, 3, 1e-4, 8192


class HashEncoder:
  """Cheap deterministic text encoder: a text's crc32 seeds its vector, so
  items with the same text collide (collision handling is exercised) and
  the embeddings do not depend on how texts are batched."""

  def encode(self, texts):
    return np.stack([
        np.random.default_rng(zlib.crc32(t.encode())).normal(size=16)
        for t in texts]).astype(np.float32)


_MINILM = []


def shared_minilm():
  """One MiniLM per process: the reference and the local runner's worker
  (same process) share it instead of loading the weights twice."""
  if not _MINILM:
    _MINILM.append(MiniLMEncoder())
  return _MINILM[0]


def _direct():
  return beam.Pipeline(options=local_pipeline_options([]))


@pytest.fixture(scope="module")
def dataset():
  return load_dataset()


@pytest.fixture(scope="module")
def sids(dataset, tmp_path_factory):
  """The item table job on the whole bundled dataset (3 output shards)."""
  root = tmp_path_factory.mktemp("beam_sids")
  items, users = records.write_dataset_jsonl(dataset, root / "input")
  options = BuildSidsOptions(
      rqvae=RQVAEConfig(num_levels=LEVELS, codebook_size=CODEBOOK,
                        epochs=EPOCHS, seed=SEED, learning_rate=LEARNING_RATE,
                        batch_size=BATCH),
      encoder="hash", embed_batch_size=100, num_shards=3)
  with _direct() as pipeline:
    build_sids(pipeline, items, users, str(root / "item_table"), options,
               str(root / "embeddings"), encoders={"hash": HashEncoder})
  merged = records.merge_item_table_shards(str(root / "item_table-*.tsv"),
                                           root / "item_table.tsv")
  return dict(root=root, merged=merged)


def test_item_table_equals_build_sids(dataset, sids):
  root = sids["root"]
  texts = [item.text() for item in dataset.items]
  reference_embeddings = embed_texts(HashEncoder(), texts)
  embeddings = records.read_embedding_shards(str(root / "embeddings-*.tsv"))
  np.testing.assert_array_equal(embeddings, reference_embeddings)

  np.save(root / "reference.npy", reference_embeddings)
  subprocess.run(
      [sys.executable, "-m", "tools.build_semantic_ids",
       f"--embeddings={root / 'reference.npy'}",
       f"--output_dir={root / 'reference'}", f"--num_levels={LEVELS}",
       f"--codebook_size={CODEBOOK}", f"--epochs={EPOCHS}", f"--seed={SEED}",
       f"--learning_rate={LEARNING_RATE}", f"--batch_size={BATCH}"],
      cwd=REPO, check=True, capture_output=True)
  expected = (root / "reference" / "item_table.tsv").read_text()
  assert (root / "item_table.tsv").read_text() == expected

  # Every shard is an item table by itself; together they hold every item
  # once, and the disambiguation level was needed (collisions happened).
  shards = sorted(root.glob("item_table-*-of-00003.tsv"))
  assert len(shards) == 3
  assert sum(len(read_item_table(s).item_ids) for s in shards) == len(texts)
  table = sids["merged"]
  assert table.num_levels == LEVELS + 1 and table.codes[:, -1].max() > 0


def test_text_encoder_handler_batches_minilm_like_embed_texts(dataset):
  texts = [item.text() for item in dataset.items[:40]]
  expected = embed_texts(shared_minilm(), texts, batch_size=16)

  def check(results):
    got = dict(results)
    assert sorted(got) == list(range(len(texts)))
    np.testing.assert_allclose(np.stack([got[i] for i in range(len(texts))]),
                               expected, atol=2e-6)

  with _direct() as pipeline:
    embedded = (pipeline
                | beam.Create(list(enumerate(texts)))
                | RunInference(KeyedModelHandler(TextEncoderHandler(
                    "minilm", batch_size=16,
                    encoders={"minilm": shared_minilm})))
                | beam.MapTuple(lambda i, r: (i, r.inference)))
    assert_that(embedded, check)


def test_batch_recall_equals_evaluation_lists(dataset, sids, tmp_path):
  """A random tiny generator over the job's own item table, exported; the
  job's lists for the validation inputs of every 8th user (the whole
  catalogue; all users: `tf-genrec beam_batch_recall`, docs/scaling.md)
  equal the evaluation's."""
  config = graphs.get("ad_recall").graph_config(
      num_levels=LEVELS + 1, codebook_size=CODEBOOK, max_history=8,
      max_beam_width=8, default_beam_width=8, default_top_n=10)
  tiny_generator_checkpoint(str(tmp_path / "ckpt"), config)
  table_path = str(sids["root"] / "item_table.tsv")
  model = build_generative_recall(config, str(tmp_path / "ckpt"), table_path)
  warmup = history_requests([dataset.histories[0][:3]])
  export_dir = export_saved_model(model, str(tmp_path / "models"), 1,
                                  [warmup], "ad_recall")

  users = list(range(0, dataset.num_users, 8))
  users_path = tmp_path / "users.jsonl"
  users_path.write_text("".join(
      records.user_to_json(u, dataset.histories[u]) + "\n" for u in users))
  inputs, _ = leave_one_out(dataset.histories).inputs_and_targets("valid")
  expected = recall_saved_model(export_dir, [inputs[u] for u in users],
                                beam_width=4, top_n=10)
  with _direct() as pipeline:
    batch_recall(pipeline, str(users_path), export_dir,
                 str(tmp_path / "recall"), beam_width=4, top_n=10,
                 history="valid", batch_size=50, num_shards=2)
  got = records.read_recall_shards(str(tmp_path / "recall-*.jsonl"))
  assert sorted(got) == users
  for user, row in zip(users, expected):
    np.testing.assert_array_equal(got[user][0], row[row >= 0])
  # Users' lists differ (the prompt reaches the generator).
  assert len({tuple(items) for items, _ in got.values()}) > 10
