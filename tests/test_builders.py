"""The recall graph end to end: wiring, export, reload, per-request options."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

import graphs
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.core.saved_model_layout import WARMUP_FILE
from tf_genrec.evaluation.saved_model_recall import (evaluate_saved_model,
                                                     history_requests,
                                                     recall_saved_model)
from tf_genrec.generation.generation_config import save_sid_softmax

from recall_testlib import (K, L, assert_row_equals_alone,
                            random_recall_requests, tiny_recall_assets)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  return tiny_recall_assets(tmp_path_factory.mktemp("recall"))


def _reference_recall(recall_model, a, events, beam_width, top_n):
  """Independent Python wiring: clean -> codes -> prompt -> generate -> items."""
  cfg = a["config"]
  t = cfg.template
  code_of = {int(i): c for i, c in zip(a["item_ids"], a["codes"])}
  item_ids, timestamps, request_time = events
  kept = sorted((ts, i) for ts, i in zip(timestamps, item_ids)
                if ts <= request_time)
  history = []
  for _, item in kept:  # consecutive de-duplication, then the newest max_len
    if not history or history[-1] != item:
      history.append(item)
  history = [i for i in history[-cfg.behavior.max_len:] if i in code_of]
  prompt = list(t.prefix_ids)
  for n, item in enumerate(history):
    if n:
      prompt += list(t.separator_ids)
    prompt += t.sid_tokens(code_of[item])
  prompt += list(t.suffix_ids)
  sids, scores = recall_model.generator.generate(
      tf.constant([prompt], tf.int32), tf.constant([len(prompt)], tf.int32),
      tf.constant([beam_width], tf.int32))
  by_sid = {}
  for row in np.lexsort((a["item_ids"], -a["priority"])):
    by_sid.setdefault(tuple(a["codes"][row]), []).append(int(a["item_ids"][row]))
  items = []
  for sid, score in zip(sids.numpy()[0], scores.numpy()[0]):
    if np.isfinite(score):
      items += [i for i in by_sid[tuple(sid)] if i not in items]
  return items[:top_n], sids.numpy()[0]


def _events(a, rng, n):
  items = list(rng.choice(a["item_ids"], n))
  items[2] = items[1]  # a consecutive repeat
  items[3] = 999_999  # an item the table does not know
  timestamps = list(rng.permutation(n) + 100)  # arrives out of order
  timestamps[4] = 10_000  # an event after the request time
  return items, timestamps, 1000


def test_recall_matches_python_wiring(assets):
  a = assets
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  rng = np.random.default_rng(3)
  rows = [_events(a, rng, n) for n in (9, 12)]
  width = 12
  item_ids = np.zeros((2, width), np.int64)
  timestamps = np.zeros((2, width), np.int64)
  for r, (items, ts, _) in enumerate(rows):
    item_ids[r, :len(items)], timestamps[r, :len(ts)] = items, ts
  out = model.recall(
      tf.constant(item_ids), tf.constant(timestamps),
      tf.zeros([2, width], tf.int32), tf.constant([9, 12], tf.int32),
      tf.constant([1000, 1000], tf.int64), beam_width=tf.constant([8, 8]),
      top_n=tf.constant([20, 20]))
  for r, events in enumerate(rows):
    expected_items, expected_sids = _reference_recall(model, a, events, 8, 20)
    got = [int(i) for i in out["item_ids"].numpy()[r] if i >= 0]
    assert got == expected_items
    np.testing.assert_array_equal(out["semantic_ids"].numpy()[r],
                                  expected_sids)
  # Every returned item exists in the table.
  assert set(out["item_ids"].numpy().ravel()) - {-1} <= set(a["item_ids"])


def test_per_row_options_and_limits(assets):
  a = assets
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  ids = tf.constant([[int(a["item_ids"][0]), int(a["item_ids"][5])]] * 2,
                    tf.int64)
  args = (ids, tf.constant([[1, 2]] * 2, tf.int64), tf.zeros([2, 2], tf.int32),
          tf.constant([2, 2]), tf.constant([5, 5], tf.int64))
  out = model.recall(*args, beam_width=tf.constant([2, 16]),
                     top_n=tf.constant([5, 30]))
  items, sids = out["item_ids"].numpy(), out["semantic_ids"].numpy()
  # Row 0: 2 beams (each SID has >= 1 item), results cut at top_n=5.
  assert (items[0, :2] >= 0).all() and (items[0, 5:] == -1).all()
  assert (sids[0, 2:] == -1).all() and (sids[1] >= 0).all()
  # Row 1: 16 distinct SIDs -> at least 16 distinct items.
  assert (items[1, :16] >= 0).all()
  assert len(set(items[1]) - {-1}) == (items[1] >= 0).sum()
  with pytest.raises(tf.errors.InvalidArgumentError, match="beam_width"):
    model.recall(*args, beam_width=tf.constant([17, 1]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="top_n"):
    model.recall(*args, top_n=tf.constant([0, 1]))


def test_each_row_gets_its_own_answer_whoever_its_batch_mates_are(assets):
  """Random mixes of widths, result sizes and histories: every row of a batch
  equals that row sent alone (the tiny model's trie has more nodes at depth 2
  than 16 beams, so wider batch-mates do change what a narrow row's search
  would keep if it decoded at the batch's width)."""
  a = assets
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  serve = model.serving_function()

  def run(inputs):
    out = serve(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}

  rng = np.random.default_rng(12)
  for _ in range(3):
    inputs = random_recall_requests(a, rng, int(rng.integers(2, 7)))
    inputs["beam_width"][0] = 16  # a wide batch-mate for every row
    batched = run(inputs)
    for row in range(len(inputs["lengths"])):
      alone = run({k: v[row:row + 1] for k, v in inputs.items()})
      assert_row_equals_alone(batched, row, alone, inputs["beam_width"][row],
                              inputs["top_n"][row])


def test_zero_rows_get_an_empty_answer(assets):
  a = assets
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  inputs = history_requests([[int(a["item_ids"][0])]])
  out = model.serving_function()(
      **{k: tf.constant(v[:0]) for k, v in inputs.items()})
  assert out["item_ids"].shape == (0, 0) and out["scores"].shape == (0, 0)
  assert out["semantic_ids"].shape == (0, 0, L)
  assert out["item_ids"].dtype == tf.int64
  assert out["semantic_ids"].dtype == tf.int32


def _with_and_without_exclusion(a):
  """The plain and the history-excluding model + 32 histories to query."""
  plain = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  config = dataclasses.replace(a["config"], retrieval=dataclasses.replace(
      a["config"].retrieval, exclude_history=True))
  excluding = build_generative_recall(config, a["ckpt"], a["table_path"])
  rng = np.random.default_rng(5)
  width = 6  # distinct known items in time order: the history is the input
  histories = [rng.choice(a["item_ids"], rng.integers(1, width + 1),
                          replace=False) for _ in range(32)]
  return plain, excluding, histories


def test_exclude_history_drops_clicked_items_and_moves_up_the_rest(assets):
  plain, excluding, histories = _with_and_without_exclusion(assets)
  inputs = {k: tf.constant(v) for k, v in history_requests(histories).items()}
  beams = tf.fill([len(histories)], 16)
  full = plain.recall(**inputs, beam_width=beams, top_n=tf.fill(
      [len(histories)], 200))["item_ids"].numpy()
  got = excluding.recall(**inputs, beam_width=beams, top_n=tf.fill(
      [len(histories)], 5))["item_ids"].numpy()
  dropped = 0
  for r, history in enumerate(histories):
    ranked = [i for i in full[r] if i >= 0]
    expected = [i for i in ranked if i not in set(history)]
    dropped += len(ranked) - len(expected)
    expected = expected[:5]
    assert list(got[r]) == expected + [-1] * (5 - len(expected))
  assert dropped >= 10  # the plain lists did hold clicked items


def test_excluding_evaluation_refuses_a_model_that_keeps_history(assets,
                                                                 tmp_path):
  plain, excluding, histories = _with_and_without_exclusion(assets)
  plain_dir = export_saved_model(plain, str(tmp_path / "plain"), 1)
  excluding_dir = export_saved_model(excluding, str(tmp_path / "excl"), 1)
  top1 = recall_saved_model(plain_dir, histories, 16, 1)[:, 0]
  with pytest.raises(ValueError, match="export it with --exclude_history"):
    evaluate_saved_model(plain_dir, histories, top1, 16, 20,
                         exclude_history=True)
  assert evaluate_saved_model(plain_dir, histories, top1, 16, 5)[
      "recall@5"] == 1.0
  # The excluding model recalls the plain top item when it was not clicked.
  fresh = np.mean([t not in h for t, h in zip(top1, histories)])
  assert evaluate_saved_model(excluding_dir, histories, top1, 16, 5,
                              exclude_history=True)["recall@5"] == fresh


def test_export_moves_and_reloads_in_fresh_process(assets, tmp_path):
  a = assets
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  inputs = {
      "item_ids": np.array([a["item_ids"][:4]], np.int64),
      "timestamps": np.array([[1, 2, 3, 4]], np.int64),
      "action_types": np.zeros([1, 4], np.int32),
      "lengths": np.array([4], np.int32),
      "request_time": np.array([5], np.int64),
      "beam_width": np.array([8], np.int32),
      "top_n": np.array([10], np.int32),
  }
  base = tmp_path / "base"
  export_dir = export_saved_model(model, str(base), 3, [inputs], "ad_recall")
  assert export_dir.endswith("3") and os.listdir(base) == ["3"]
  expected = model.serving_function()(
      **{k: tf.constant(v) for k, v in inputs.items()})

  # The warmup file holds PredictionLogs for the same signature.
  records = list(tf.data.TFRecordDataset(os.path.join(export_dir,
                                                      WARMUP_FILE)))
  log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
  assert set(log.predict_log.request.inputs) == set(inputs)

  # Optional inputs carry SignatureDef defaults (TF Serving fills them in).
  from tensorflow.core.protobuf import saved_model_pb2
  saved = saved_model_pb2.SavedModel.FromString(
      open(os.path.join(export_dir, "saved_model.pb"), "rb").read())
  defaults = saved.meta_graphs[0].signature_def["serving_default"].defaults
  assert tf.make_ndarray(defaults["beam_width"]).tolist() == [8]
  assert tf.make_ndarray(defaults["top_n"]).tolist() == [20]

  moved = tmp_path / "moved"
  os.rename(export_dir, moved)
  np.save(tmp_path / "inputs.npy", inputs, allow_pickle=True)
  script = f"""
import json, numpy as np, tensorflow as tf
import tf_genrec.ops
inputs = np.load({str(tmp_path / 'inputs.npy')!r}, allow_pickle=True).item()
f = tf.saved_model.load({str(moved)!r}).signatures["serving_default"]
out = f(**{{k: tf.constant(v) for k, v in inputs.items()}})
print(json.dumps({{k: v.numpy().tolist() for k, v in out.items()}}))
"""
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, check=True)
  got = json.loads(proc.stdout.strip().splitlines()[-1])
  for key in ("item_ids", "semantic_ids"):
    np.testing.assert_array_equal(got[key], expected[key].numpy())
  np.testing.assert_allclose(got["scores"], expected["scores"].numpy(),
                             rtol=1e-6)

  cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
  shown = subprocess.run([cli, "show", "--all", "--dir", str(moved)],
                         capture_output=True, text=True, check=True).stdout
  assert "signature_def['serving_default']" in shown
  for name in list(inputs) + ["scores", "semantic_ids"]:
    assert f"['{name}']" in shown


def test_search_scene_takes_query_tokens(assets):
  a = assets
  config = graphs.get("search_recall").graph_config(
      num_levels=L, codebook_size=K, max_history=6, max_beam_width=16,
      default_beam_width=8, default_top_n=20)
  model = build_generative_recall(config, a["ckpt"], a["table_path"])
  signature = model.serving_function()
  names = {s.name for s in signature.input_signature}
  assert {"context_ids", "context_lengths"} <= names
  ids = tf.constant([[int(a["item_ids"][0])]], tf.int64)
  common = dict(item_ids=ids, timestamps=tf.constant([[1]], tf.int64),
                action_types=tf.zeros([1, 1], tf.int32),
                lengths=tf.constant([1]), request_time=tf.constant([2], tf.int64),
                beam_width=tf.constant([8]), top_n=tf.constant([20]))
  q1 = signature(context_ids=tf.constant([[3, 5, 0]]),
                 context_lengths=tf.constant([2]), **common)
  q2 = signature(context_ids=tf.constant([[17, 18, 4]]),
                 context_lengths=tf.constant([3]), **common)
  # Different queries condition the generator differently.
  assert not np.array_equal(q1["semantic_ids"].numpy(),
                            q2["semantic_ids"].numpy())
  # max_context_len (32 by default) is enforced in the graph.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"context_ids.shape\[1\] must be <= "
                     r"max_context_len=32"):
    signature(context_ids=tf.zeros([1, 33], tf.int32),
              context_lengths=tf.constant([1]), **common)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"context_lengths must be <= max_context_len=32"):
    signature(context_ids=tf.zeros([1, 3], tf.int32),
              context_lengths=tf.constant([40]), **common)


def test_generator_decodes_as_the_checkpoint_was_trained(assets, tmp_path):
  a = assets
  ckpt = shutil.copytree(a["ckpt"], tmp_path / "ckpt")

  def softmax(**kw):
    return build_generative_recall(a["config"], ckpt, a["table_path"],
                                   **kw).generator.sid_softmax

  assert softmax() == "level"  # no generation_config.json
  save_sid_softmax(ckpt, "trie")
  assert softmax() == "trie"
  assert softmax(sid_softmax="level") == "level"  # explicit override
