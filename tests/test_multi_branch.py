"""Multi-branch recall: the merge rule, build-time checks of user SavedModels,
and a merged model exported, served and called by a stock TF Serving client."""
import itertools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from tests import recall_testlib, serving_testlib
from tf_genrec.builders.branch_config import (BranchSpec, build_multi_branch,
                                              read_branches_config)
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.merge import MergeConfig, MergeStage
from tf_genrec.builders.multi_branch import (BRANCHES_FILE,
                                             BRANCHES_SIGNATURE,
                                             SavedModelBranch)
from tf_genrec.evaluation.branch_recall import branch_report
from tf_genrec.models.sasrec.model import SASRec, SASRecConfig, save_sasrec
from tf_genrec.models.two_tower.model import (TwoTower, TwoTowerConfig, build,
                                              load_two_tower, save_two_tower)
from tf_genrec.models.two_tower.trainer import (TwoTowerTrainConfig,
                                                train_two_tower)
from tf_genrec.serving import config as serving_config
from tf_genrec.serving.servable import Servable
from tf_genrec.tables.item_vocabulary import write_item_vocabulary


def reference_merge(items, scores, quotas, normalization):
  """The rule of tf_genrec/builders/merge.py, written out row by row."""
  n_out = sum(quotas)
  out_items = np.full((items[0].shape[0], n_out), -1, np.int64)
  out_scores = np.full(out_items.shape, -np.inf, np.float32)
  out_branch = np.full(out_items.shape, -1, np.int32)
  for b in range(out_items.shape[0]):
    cands = []  # (normalised score, branch, position, item)
    for i, (ids, sc) in enumerate(zip(items, scores)):
      valid = [j for j in range(ids.shape[1])
               if ids[b, j] >= 0 and np.isfinite(sc[b, j])]
      vals = np.float32([sc[b, j] for j in valid])
      lo, hi = (vals.min(), vals.max()) if valid else (0, 0)
      for j in valid:
        if normalization == "none":
          s = np.float32(sc[b, j])
        elif normalization == "rank":
          s = np.float32(1.0) / (np.float32(1.0) + np.float32(j))
        else:
          s = ((np.float32(sc[b, j]) - lo) / (hi - lo) if hi > lo
               else np.float32(1.0))
        cands.append((s, i, j, ids[b, j]))
    key = lambda c: (-c[0], c[1], c[2])  # noqa: E731
    best = {}
    for c in sorted(cands, key=key):
      best.setdefault(c[3], c)
    taken, leftover = [], []
    for i, q in enumerate(quotas):
      own = sorted((c for c in best.values() if c[1] == i),
                   key=lambda c: c[2])
      taken += own[:q]
      leftover += own[q:]
    taken += sorted(leftover, key=key)[:n_out - len(taken)]
    for k, (s, i, _, item) in enumerate(sorted(taken, key=key)):
      out_items[b, k], out_scores[b, k], out_branch[b, k] = item, s, i
  return out_items, out_scores, out_branch


def random_branch(rng, batch, n, pool, short_rows=()):
  """Ranked lists over a small id pool (so branches overlap), -1 padded."""
  ids = np.stack([rng.choice(pool, n, replace=False) for _ in range(batch)])
  scores = -np.sort(-rng.integers(0, 6, (batch, n)).astype(np.float32) -
                    rng.random((batch, n)).astype(np.float32) *
                    (rng.random() < 0.5), axis=1)
  for row in short_rows:  # This branch runs short on some rows.
    ids[row, n // 3:] = -1
    scores[row, n // 3:] = -np.inf
  return ids.astype(np.int64), scores


@pytest.mark.parametrize("normalization", ["none", "minmax", "rank"])
def test_merge_matches_reference(normalization):
  rng = np.random.default_rng(7)
  batch = 6
  branches = [random_branch(rng, batch, 12, 30),
              random_branch(rng, batch, 9, 30, short_rows=(1, 4)),
              random_branch(rng, batch, 15, 30)]
  quotas = (5, 6, 3)
  merge = MergeStage(MergeConfig(("a", "b", "c"), quotas, normalization))
  got = merge([tf.constant(i) for i, _ in branches],
              [tf.constant(s) for _, s in branches])
  want = reference_merge([i for i, _ in branches], [s for _, s in branches],
                         quotas, normalization)
  np.testing.assert_array_equal(got["item_ids"].numpy(), want[0])
  np.testing.assert_array_equal(got["scores"].numpy(), want[1])
  np.testing.assert_array_equal(got["branch"].numpy(), want[2])
  # Every row has sum(quotas) distinct items (the pool is large enough).
  for row in got["item_ids"].numpy():
    assert len(set(row.tolist())) == sum(quotas) and row.min() >= 0


def test_merge_config_checks():
  with pytest.raises(ValueError, match="normalization"):
    MergeConfig(("a",), (3,), "softmax")
  with pytest.raises(ValueError, match="one per branch"):
    MergeConfig(("a", "b"), (3,))
  with pytest.raises(ValueError, match="top_n must be >= max"):
    BranchSpec(name="a", kind="sasrec", quota=10, top_n=5)


class WrongInputsModel(tf.Module):

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int64, "history"),
      tf.TensorSpec([None], tf.string, "user_segment")])
  def serve(self, history, user_segment):
    del user_segment
    return {"item_ids": history, "scores": tf.cast(history, tf.float32)}


def test_wrong_signature_fails_at_build(tmp_path):
  path = str(tmp_path / "wrong")
  model = WrongInputsModel()
  tf.saved_model.save(model, path, signatures={"recall": model.serve})
  with pytest.raises(ValueError) as error:
    SavedModelBranch(path, 10, signature="recall")
  message = str(error.value)
  assert "signature 'recall'" in message
  assert "user_segment" in message and "history" in message
  assert "item_ids int64" in message and "request_time int64" in message
  with pytest.raises(ValueError, match="has no signature 'serving_default'"):
    SavedModelBranch(path, 10)
  # Mapping the history is not enough: user_segment is still unknown.
  with pytest.raises(ValueError, match="input user_segment"):
    SavedModelBranch(path, 10, signature="recall",
                     input_map={"history": "item_ids"})


@pytest.fixture(scope="module")
def multi_branch_export(tmp_path_factory):
  """A generative + two-tower + SASRec + user-SavedModel branch export."""
  root = tmp_path_factory.mktemp("multi")
  assets = recall_testlib.tiny_recall_assets(root)
  num_items = int(assets["item_ids"].max()) + 1
  two_tower = TwoTower(TwoTowerConfig(num_items=num_items, max_len=6,
                                      embedding_dim=8, hidden_dim=16))
  build(two_tower)
  save_two_tower(two_tower, str(root / "two_tower"))
  sasrec = SASRec(SASRecConfig(num_items=num_items, max_len=6, hidden_dim=8,
                               num_blocks=1, num_heads=2))
  sasrec(tf.zeros([1, 6], tf.int32))
  save_sasrec(sasrec, str(root / "sasrec"))
  toy = serving_testlib.export_toy_model(str(root / "toy"), 1)
  branches_file = root / "branches.json"
  branches_file.write_text(json.dumps({"normalization": "minmax", "branches": [
      {"name": "generative", "kind": "generative", "quota": 6, "top_n": 12,
       "beam_width": 8},
      {"name": "two_tower", "kind": "two_tower",
       "model_dir": str(root / "two_tower"), "quota": 4, "top_n": 10},
      {"name": "sasrec", "kind": "sasrec", "model_dir": str(root / "sasrec"),
       "quota": 4, "top_n": 10},
      {"name": "legacy", "kind": "saved_model", "path": toy, "quota": 2,
       "top_n": 4, "constant_inputs": {"beam_width": 2}}]}))
  config = assets["config"]
  generative = build_generative_recall(config, assets["ckpt"],
                                       assets["table_path"])
  specs, normalization = read_branches_config(str(branches_file))
  model = build_multi_branch(specs, normalization, config.behavior,
                             generative)
  base = str(root / "served")
  path = export_saved_model(model, base, 1, model_name="multi")
  inputs = serving_testlib.sample_inputs(batch=3, length=6, seed=3)
  # Histories of known items so every branch has something to read.
  known = assets["item_ids"][np.random.default_rng(1).integers(
      0, len(assets["item_ids"]), inputs["item_ids"].shape)]
  inputs["item_ids"] = np.where(inputs["item_ids"] >= 0, known, -1)
  # Time order = position order, so the cleaned history is easy to state.
  inputs["timestamps"] = np.sort(inputs["timestamps"], axis=1)
  loaded = tf.saved_model.load(path)
  feeds = {k: tf.constant(v) for k, v in inputs.items()}
  outputs = {sig: {k: v.numpy() for k, v in loaded.signatures[sig](
      **feeds).items()} for sig in ("serving_default", BRANCHES_SIGNATURE)}
  return dict(assets=assets, path=path, base=base, inputs=inputs, toy=toy,
              generative=generative, specs=specs, sasrec=sasrec,
              two_tower=two_tower, outputs=outputs)


def test_merged_equals_merging_separate_branches(multi_branch_export):
  e = multi_branch_export
  merged = e["outputs"]["serving_default"]
  both = e["outputs"][BRANCHES_SIGNATURE]
  # Each branch on its own, outside the merged graph.
  feeds = {k: tf.constant(v) for k, v in e["inputs"].items()}
  gen = e["generative"].recall(**feeds, beam_width=[8], top_n=[12])
  toy = serving_testlib.in_process(e["toy"], dict(e["inputs"], top_n=[4],
                                                  beam_width=[2]))
  separate = {"generative": (gen["item_ids"].numpy(), gen["scores"].numpy()),
              "legacy": (toy["item_ids"], toy["scores"])}
  for name in separate:
    np.testing.assert_array_equal(both[f"{name}_item_ids"], separate[name][0])
    np.testing.assert_allclose(both[f"{name}_scores"], separate[name][1],
                               rtol=1e-5)
  names = [s.name for s in e["specs"]]
  want = reference_merge([both[f"{n}_item_ids"] for n in names],
                         [both[f"{n}_scores"] for n in names],
                         [s.quota for s in e["specs"]], "minmax")
  for got in (merged, both):
    np.testing.assert_array_equal(got["item_ids"], want[0])
    np.testing.assert_allclose(got["scores"], want[1], rtol=1e-6)
    np.testing.assert_array_equal(got["branch"], want[2])
  assert merged["item_ids"].shape == (3, 16)
  meta = json.load(open(os.path.join(e["path"], "assets.extra",
                                     BRANCHES_FILE)))
  assert meta["branches"] == names


def test_classic_branches_match_their_models(multi_branch_export):
  """The in-graph SASRec / two-tower top-k equal the models' own scoring
  of the same (cleaned, here already clean) histories."""
  e = multi_branch_export
  inputs, both = e["inputs"], e["outputs"][BRANCHES_SIGNATURE]
  # BehaviorSequence collapses runs of one item (dedup_mode consecutive).
  histories = [[k for k, _ in itertools.groupby(row[:n])]
               for row, n in zip(inputs["item_ids"], inputs["lengths"])]
  for name, model, n in (("sasrec", e["sasrec"], 10),
                         ("two_tower", e["two_tower"], 10)):
    scores = model.score(histories)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    np.testing.assert_array_equal(both[f"{name}_item_ids"], top)
    np.testing.assert_allclose(both[f"{name}_scores"],
                               np.take_along_axis(scores, top, 1), rtol=1e-4,
                               atol=1e-5)


def test_served_by_stock_client(multi_branch_export):
  e = multi_branch_export
  model_config = serving_config.single_model_config("multi", e["base"])
  with serving_testlib.running_server(model_config) as (_, channel):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "multi"
    for k, v in e["inputs"].items():
      request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    response = serving_testlib.prediction_stub(channel).Predict(request,
                                                                timeout=60)
  got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
  want = e["outputs"]["serving_default"]
  assert set(got) == {"item_ids", "scores", "branch"}
  for k in got:
    np.testing.assert_array_equal(got[k], want[k])


class _EchoHistory(tf.Module):
  """A team's recall model in its own item ids: the history, latest first."""

  def __init__(self, dtype):
    super().__init__()
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, None], dtype, "item_ids"),
        tf.TensorSpec([None], tf.int32, "lengths")])

  def _serve(self, item_ids, lengths):
    t = tf.shape(item_ids)[1]
    rank = tf.cast(tf.range(t), tf.float32)[tf.newaxis]
    return {"item_ids": tf.reverse_sequence(item_ids, lengths, 1, 0),
            "scores": tf.where(tf.sequence_mask(lengths, t), -rank,
                               float("-inf"))}


@pytest.mark.parametrize("kind", ["string", "int64"])
def test_external_ids_in_and_out(multi_branch_export, tmp_path, kind):
  """With an item vocabulary the merged model takes and returns the
  catalogue's ids: the same answers as the model over item-table ids, a user
  branch in external ids included."""
  e, a = multi_branch_export, multi_branch_export["assets"]
  external = recall_testlib.external_item_ids(kind,
                                              int(a["item_ids"].max()) + 1)
  vocabulary = str(tmp_path / "item_vocabulary.txt")
  write_item_vocabulary(vocabulary, external)
  models = {}
  for name, dtype in (("dense", tf.int64),
                      ("external", tf.string if kind == "string" else
                       tf.int64)):
    echo = _EchoHistory(dtype)
    tf.saved_model.save(echo, str(tmp_path / f"echo_{name}"),
                        signatures={"serving_default": echo.serve})
    specs = [s for s in e["specs"] if s.kind in ("generative", "two_tower")]
    specs.append(BranchSpec(name="echo", kind="saved_model", quota=3,
                            top_n=4, path=str(tmp_path / f"echo_{name}"),
                            external_ids=name == "external"))
    generative = build_generative_recall(
        a["config"], a["ckpt"], a["table_path"],
        item_vocabulary_path=vocabulary if name == "external" else None)
    models[name] = export_saved_model(
        build_multi_branch(specs, "minmax", a["config"].behavior,
                           generative), str(tmp_path / name), 1)
  inputs = e["inputs"]
  mapped = dict(inputs, item_ids=recall_testlib.to_external(
      inputs["item_ids"], external))
  mapped["item_ids"][0, 0] = b"no-such-sku" if kind == "string" else 5
  inputs = dict(inputs, item_ids=inputs["item_ids"].copy())
  inputs["item_ids"][0, 0] = 999_999  # unknown to both: dropped by both
  def branches_output(path, feeds):  # As the server loads and runs it.
    served = Servable("multi", 1, path)
    return served.run(served.signature(BRANCHES_SIGNATURE), feeds)

  want = branches_output(models["dense"], inputs)
  got = branches_output(models["external"], mapped)
  assert set(got) == set(want)
  assert (want["echo_item_ids"] >= 0).any()
  for k in got:
    expected = (recall_testlib.to_external(want[k], external)
                if k.endswith("item_ids") else want[k])
    np.testing.assert_array_equal(got[k], expected, err_msg=k)


def test_external_ids_branch_needs_a_vocabulary(multi_branch_export):
  e = multi_branch_export
  specs = [BranchSpec(name="legacy", kind="saved_model", quota=1, top_n=2,
                      path=e["toy"], external_ids=True,
                      constant_inputs=(("beam_width", 2),))]
  with pytest.raises(ValueError, match="external_ids needs the export's item "
                     "vocabulary"):
    build_multi_branch(specs, "rank", e["assets"]["config"].behavior,
                       e["generative"])


def test_canary_config_parses():
  parsed = serving_config.read_model_server_config(os.path.join(
      os.path.dirname(__file__), "..", "serving_config",
      "multi_branch_canary.config"))
  multi = parsed.model_config_list.config[0]
  assert dict(multi.version_labels) == {"stable": 3, "canary": 4}
  assert list(multi.model_version_policy.specific.versions) == [3, 4]
  assert [c.name for c in parsed.model_config_list.config] == [
      "ad_recall_multi", "ad_recall", "legacy_recall"]


def test_branch_report_counts_unique_hits():
  ranked = {"a": np.array([[1, 2], [3, 4], [5, 6]]),
            "b": np.array([[2, 7], [8, 9], [5, 0]]),
            "merged": np.array([[2, 1], [3, 8], [0, 5]])}
  producer = np.array([[1, 0], [0, 1], [1, 0]])
  targets = np.array([1, 9, 5])
  report = branch_report(ranked, producer, targets, ["a", "b"], [1, 2])
  assert report["a"]["hits"] == 2 and report["a"]["unique_hits"] == 1
  assert report["b"]["hits"] == 2 and report["b"]["unique_hits"] == 1
  # Merged hits: user 0 (item 1, from a) and user 2 (item 5, from a).
  assert report["a"]["merged_hits_credited"] == 2
  assert report["b"]["merged_hits_credited"] == 0
  assert report["merged"]["recall@1"] == 0 and report["merged"]["hits"] == 2
  assert report["union_of_branch_lists"]["hits"] == 3


def test_two_tower_learns_and_round_trips(tmp_path):
  """On histories that cycle through items, the next item is learnable:
  validation Recall@5 ends far above chance (5 / 30)."""
  rng = np.random.default_rng(0)
  histories = []
  for _ in range(100):
    start = rng.integers(0, 30)
    histories.append((start + np.arange(8)) % 30)
  train = [h[:-2] for h in histories]
  valid = [h[:-2] for h in histories], np.array([h[-2] for h in histories])
  config = TwoTowerConfig(num_items=30, max_len=6, embedding_dim=16,
                          hidden_dim=32, temperature=0.1, dropout=0.0)
  model, records = train_two_tower(
      train, *valid, config, TwoTowerTrainConfig(batch_size=32, max_epochs=6,
                                                 patience=6, learning_rate=1e-2))
  assert max(r["valid"]["recall@5"] for r in records) > 0.8
  save_two_tower(model, str(tmp_path / "tt"))
  again = load_two_tower(str(tmp_path / "tt"))
  np.testing.assert_allclose(again.score(valid[0][:5]),
                             model.score(valid[0][:5]), rtol=1e-6)
