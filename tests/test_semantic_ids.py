"""RQ-VAE on synthetic clusters, collision handling, item table, embeddings."""
import dataclasses
import re

import numpy as np
import pytest

from tf_genrec.semantic_ids import assign
from tf_genrec.semantic_ids.embeddings import (combine_embeddings,
                                               count_confidence,
                                               embed_texts, load_embeddings)
from tf_genrec.semantic_ids.rqvae import (RQVAEConfig, codebook_usage, kmeans,
                                          train_rqvae)
from tf_genrec.tables.item_table import read_item_table, write_item_table


def _clustered(rng, num_clusters=24, per_cluster=25, dim=16, noise=0.05):
  centers = rng.normal(size=(num_clusters, dim))
  labels = np.repeat(np.arange(num_clusters), per_cluster)
  points = centers[labels] + noise * rng.normal(size=(len(labels), dim))
  return points.astype(np.float32), labels


def test_kmeans_recovers_separated_clusters():
  rng = np.random.default_rng(0)
  points, labels = _clustered(rng, num_clusters=8, per_cluster=30)
  centers = kmeans(points, 8, iters=20, rng=rng)
  assign_ = ((points[:, None] - centers[None]) ** 2).sum(-1).argmin(1)
  # Each true cluster maps to exactly one centre and vice versa.
  pairs = {(a, b) for a, b in zip(labels, assign_)}
  assert len(pairs) == 8 and len({b for _, b in pairs}) == 8


@pytest.fixture(scope="module")
def trained():
  rng = np.random.default_rng(0)
  x, labels = _clustered(rng)
  config = RQVAEConfig(input_dim=16, hidden_dims=(64,), latent_dim=8,
                       num_levels=2, codebook_size=16, batch_size=128,
                       epochs=40, learning_rate=3e-3, dead_code_reset_every=10,
                       seed=0)
  model, history = train_rqvae(x, config)
  return x, labels, config, model, history


def test_rqvae_reconstruction_improves_and_codes_are_valid(trained):
  x, labels, config, model, history = trained
  assert history[-1]["recon_loss"] < 0.5 * history[0]["recon_loss"]
  codes = model.encode_codes(x)
  assert codes.shape == (len(x), 2) and codes.dtype == np.int32
  assert codes.min() >= 0 and codes.max() < config.codebook_size
  # Items of one tight cluster share the coarse code: level 0 is semantic.
  purity = np.mean([np.bincount(codes[labels == c, 0]).max() / 25
                    for c in range(labels.max() + 1)])
  assert purity > 0.9
  usage = codebook_usage(codes, config.codebook_size)
  assert len(usage) == 2 and all(0 < u <= 1 for u in usage)
  assert model.reconstruction_loss(x) < history[0]["recon_loss"]


def test_dead_codes_restart_at_residuals(trained):
  x, _, config, model, _ = trained
  before = model.codebooks.numpy()
  usage = np.ones([2, config.codebook_size], np.int64)
  usage[1, [3, 7]] = 0
  reset = model.reset_dead_codes(x, usage, np.random.default_rng(0))
  after = model.codebooks.numpy()
  assert reset == [0, 2]
  changed = np.argwhere(np.any(before != after, axis=-1)).tolist()
  assert changed == [[1, 3], [1, 7]]
  residuals = model.level_residuals(x)[1]
  for code in (3, 7):
    assert np.min(np.abs(residuals - after[1, code]).sum(1)) < 1e-5
  model.codebooks.assign(before)


def test_rqvae_input_and_config_errors():
  with pytest.raises(ValueError, match="input_dim=16"):
    train_rqvae(np.zeros([4, 5], np.float32),
                RQVAEConfig(input_dim=16, epochs=1))
  with pytest.raises(ValueError, match="RQVAEConfig.codebook_size must be > 0"):
    RQVAEConfig(codebook_size=0)


# Items 0..5; SIDs: {0, 2, 5} collide, {1, 4} collide, 3 alone.
CODES = np.array([[1, 1], [2, 0], [1, 1], [0, 3], [2, 0], [1, 1]])
POPULARITY = np.array([3.0, 1.0, 9.0, 4.0, 1.0, 3.0])


def test_collision_stats():
  assert assign.collision_stats(CODES) == {
      "num_items": 6, "num_unique_sids": 3, "collision_rate": 5 / 6,
      "max_items_per_sid": 3}


def test_disambiguation_level_makes_sids_unique_by_popularity():
  out = assign.resolve_collisions(CODES, POPULARITY, "disambiguate", 4)
  np.testing.assert_array_equal(out[:, :2], CODES)
  # Group {0, 2, 5}: item 2 (9) first, then 0 and 5 (3, tie -> lower id).
  # Group {1, 4}: tie -> item 1 first. Item 3 alone -> 0.
  np.testing.assert_array_equal(out[:, 2], [1, 0, 0, 0, 1, 2])
  assert assign.collision_stats(out)["max_items_per_sid"] == 1
  with pytest.raises(ValueError, match="3 items, more than codebook_size=2"):
    assign.add_disambiguation_level(CODES, POPULARITY, 2)
  with pytest.raises(ValueError, match="collision mode must be one of"):
    assign.resolve_collisions(CODES, POPULARITY, "drop", 4)


def test_shared_sids_written_with_popularity_to_item_table(tmp_path):
  codes = assign.resolve_collisions(CODES, POPULARITY, "share", 4)
  path = tmp_path / "item_table.tsv"
  assign.write_sid_table(path, codes, POPULARITY, 4)
  table = read_item_table(path)
  np.testing.assert_array_equal(table.item_ids, np.arange(6))
  np.testing.assert_array_equal(table.codes, CODES)
  np.testing.assert_array_equal(table.priority, POPULARITY)
  assert table.codebook_size == 4  # recorded beside the file


def test_item_table_records_its_shape_and_readers_check_it(tmp_path):
  path = tmp_path / "item_table.tsv"
  write_item_table(path, np.arange(6), CODES, POPULARITY, codebook_size=4)
  assert read_item_table(path, codebook_size=4).codebook_size == 4
  with pytest.raises(ValueError, match="read with codebook_size=8, but .* "
                     "records codebook_size=4"):
    read_item_table(path, codebook_size=8)
  with pytest.raises(ValueError, match="codes must be < codebook_size=2"):
    write_item_table(path, np.arange(6), CODES, POPULARITY, codebook_size=2)
  # A table edited behind its record (other L) is refused, naming both.
  (tmp_path / "item_table.tsv").write_text("0\t1 2 3\t1\n")
  with pytest.raises(ValueError, match="rows have 3 code levels, .* records "
                     f"num_levels={CODES.shape[1]}"):
    read_item_table(path)
  # Rewritten without K: no stale record; the table reads as before.
  write_item_table(path, np.arange(6), CODES, POPULARITY)
  assert not (tmp_path / "item_table.tsv.shape.json").exists()
  assert read_item_table(path, codebook_size=8).codebook_size == 8


def test_external_codes(tmp_path):
  np.save(tmp_path / "codes.npy", CODES)
  np.testing.assert_array_equal(
      assign.load_codes(tmp_path / "codes.npy", 6, 4), CODES)
  # A text file in any row order; an item table qualifies too.
  lines = [f"{i}\t{' '.join(map(str, CODES[i]))}" for i in (5, 0, 1, 2, 3, 4)]
  (tmp_path / "codes.tsv").write_text("\n".join(lines) + "\n")
  np.testing.assert_array_equal(
      assign.load_codes(tmp_path / "codes.tsv", 6, 4), CODES)
  assign.write_sid_table(tmp_path / "table.tsv", CODES, POPULARITY, 4)
  np.testing.assert_array_equal(
      assign.load_codes(tmp_path / "table.tsv", 6, 4), CODES)
  with pytest.raises(ValueError, match="must cover 0..6"):
    assign.load_codes(tmp_path / "codes.tsv", 7, 4)
  with pytest.raises(ValueError, match=r"in \[0, codebook_size=3\)"):
    assign.load_codes(tmp_path / "codes.npy", 6, 3)


def test_load_embeddings_checks(tmp_path):
  np.save(tmp_path / "e.npy", np.ones([3, 4]))
  assert load_embeddings(tmp_path / "e.npy", 3).dtype == np.float32
  with pytest.raises(ValueError, match="expected num_items=5"):
    load_embeddings(tmp_path / "e.npy", 5)
  np.save(tmp_path / "bad.npy", np.full([3, 4], np.nan))
  with pytest.raises(ValueError, match="NaN"):
    load_embeddings(tmp_path / "bad.npy")


def test_combine_embeddings_weights_per_view_cosines():
  rng = np.random.default_rng(0)
  text = rng.normal(size=(6, 4))
  collab = 100.0 * rng.normal(size=(6, 3))  # A scale that must not matter.
  out = combine_embeddings([text, collab], [1.0, 0.5])
  assert out.shape == (6, 7) and out.dtype == np.float32

  def cosines(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T
  np.testing.assert_allclose(out @ out.T,
                             cosines(text) + 0.25 * cosines(collab),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="one weight per source"):
    combine_embeddings([text, collab], [1.0])
  with pytest.raises(ValueError, match=r"same number of items.*\[5, 6\]"):
    combine_embeddings([text, collab[:5]], [1.0, 1.0])
  with pytest.raises(ValueError, match="weights must be > 0, got 0.0"):
    combine_embeddings([text, collab], [1.0, 0.0])
  # Confidences scale one view per item: item pairs weigh that view's cosine
  # by the product of their confidences.
  conf = np.array([0.0, 0.5, 1.0, 1.0, 0.25, 0.75])
  out = combine_embeddings([text, collab], [1.0, 0.5], [None, conf])
  np.testing.assert_allclose(
      out @ out.T, cosines(text) + 0.25 * np.outer(conf, conf) * cosines(collab),
      rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="one confidence entry"):
    combine_embeddings([text, collab], [1.0, 1.0], [conf])
  with pytest.raises(ValueError, match=r"confidences\[1\] must be in "
                     r"\[0, 1\], got range \[-1, 1\]"):
    combine_embeddings([text, collab], [1.0, 1.0], [None, 2 * conf - 1])
  with pytest.raises(ValueError, match=r"confidences\[1\] must have shape "
                     r"\(6,\), got \(0,\)"):
    combine_embeddings([text, collab], [1.0, 1.0], [None, []])


def test_count_confidence_halves_at_the_prior():
  np.testing.assert_allclose(count_confidence([0, 5, 15, 45], 5.0),
                             [0.0, 0.5, 0.75, 0.9])
  with pytest.raises(ValueError, match="prior must be > 0, got 0"):
    count_confidence([1], 0)


def test_minilm_embeds_real_items():
  from tf_genrec.data.amazon import load_dataset
  from tf_genrec.semantic_ids.embeddings import MiniLMEncoder

  texts = [item.text() for item in load_dataset().items[:5]]
  encoder = MiniLMEncoder()
  emb = embed_texts(encoder, texts, batch_size=2)
  assert emb.shape == (5, 384) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(embed_texts(encoder, texts, batch_size=5), emb,
                             atol=1e-5)
  # Items 1 and 2 are both Stanley staples; item 0 is a capacitor kit.
  assert emb[1] @ emb[2] > emb[1] @ emb[0]


def test_build_semantic_ids_tool_with_external_codes(tmp_path):
  import json
  import subprocess
  import sys
  from pathlib import Path

  from tf_genrec.data.amazon import (item_popularity, leave_one_out,
                                     load_dataset)

  dataset = load_dataset()
  codes = np.random.default_rng(0).integers(0, 8, size=(dataset.num_items, 3))
  np.save(tmp_path / "codes.npy", codes)
  repo = Path(__file__).resolve().parents[1]
  subprocess.run([sys.executable, "-m", "tools.build_semantic_ids",
                  f"--codes={tmp_path / 'codes.npy'}", "--codebook_size=8",
                  "--collision_mode=share", f"--output_dir={tmp_path / 'out'}"],
                 cwd=repo, check=True, capture_output=True)
  table = read_item_table(tmp_path / "out" / "item_table.tsv")
  np.testing.assert_array_equal(table.codes, codes)
  popularity = item_popularity(leave_one_out(dataset.histories).train,
                               dataset.num_items)
  np.testing.assert_array_equal(table.priority, popularity)
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert (report["before_collision_handling"]
          == report["after_collision_handling"]
          == assign.collision_stats(codes))


def test_build_semantic_ids_with_two_embedding_views(tmp_path):
  """The step in-process (its CLI binding: the external-codes test)."""
  import json

  from tf_genrec.data.amazon import load_dataset
  from tf_genrec.options import OptionsError
  from tf_genrec.semantic_ids.build import (SemanticIdOptions,
                                            build_semantic_ids)

  num_items = load_dataset().num_items
  rng = np.random.default_rng(0)
  np.save(tmp_path / "text.npy", rng.normal(size=(num_items, 8)))
  np.save(tmp_path / "collab.npy", rng.normal(size=(num_items, 4)))
  base = SemanticIdOptions(
      embeddings=[str(tmp_path / "text.npy"), str(tmp_path / "collab.npy")],
      num_levels=2, codebook_size=8, latent_dim=4, epochs=2,
      collision_mode="share", output_dir=str(tmp_path / "out"))

  def run(**changes):
    return build_semantic_ids(dataclasses.replace(base, **changes))

  returned = run(embedding_weights=["1", "0.5"])
  report = json.loads((tmp_path / "out" / "report.json").read_text())
  assert json.loads(json.dumps(returned)) == report
  assert report["embedding_weights"] == [1.0, 0.5]
  assert report["config"]["input_dim"] == 12  # Both views, concatenated.
  assert len(read_item_table(tmp_path / "out" / "item_table.tsv").item_ids
             ) == num_items
  with pytest.raises(ValueError, match="need one weight per source, got 2 "
                     "sources and 1 weights"):
    run(embedding_weights=["1"])
  with pytest.raises(ValueError, match="need one weight per source, got 1 "
                     "sources and 2 weights"):
    run(embeddings=[str(tmp_path / "text.npy")], embedding_weights=["1", "2"])
  # The collaborative view trusted by training counts: other RQ-VAE inputs,
  # other codes (the runs are seeded alike).
  prior = run(embedding_weights=["1", "0.5"], interaction_views=["1"],
              interaction_prior=5.0, output_dir=str(tmp_path / "prior"))
  assert prior["interaction_views"] == [1]
  assert prior["interaction_prior"] == 5.0
  assert not np.array_equal(np.load(tmp_path / "prior" / "codes.npy"),
                            np.load(tmp_path / "out" / "codes.npy"))
  with pytest.raises(OptionsError, match=re.escape(
      "interaction_views=['2']: indices must be in [0, 2)")):
    run(interaction_views=["2"])
