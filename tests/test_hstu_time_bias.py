"""HSTU's time-gap attention bias from real timestamps: through the
leave-one-out split, stochastic length, training, scoring, the
`tf-genrec train_hstu` option and the exported hstu_retrieval scene."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import graphs
from dataset_testlib import random_histories, write_dataset
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.hstu import HSTURetrievalModel
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.retrieval import load_hstu_retrieval
from tf_genrec.models.hstu.stochastic_length import stochastic_length
from tf_genrec.options import OptionsError
from tf_genrec.training.hstu_comparison import (HSTUComparisonOptions,
                                                compare_hstu)
from tf_genrec.training.hstu_retrieval import (HSTUTrainConfig,
                                               train_hstu_retrieval,
                                               training_pairs)

NUM_ITEMS = 8
SHORT, LONG = 30, 300_000  # Last gaps (seconds): time buckets 8 and 31.


def _gap_users(rng, users):
  """Every user clicks items 2, 3, 4, then item 0 when the gap between 3 and
  4 was SHORT, item 1 when it was LONG: the items and positions are the same
  for all, only that gap tells the next item. -> (histories, times)."""
  histories, times = [], []
  for user in range(users):
    long = user % 2
    t = np.cumsum([rng.integers(10**6, 2 * 10**6), rng.integers(10, 10**6),
                   LONG if long else SHORT, rng.integers(10, 10**6)])
    histories.append([2, 3, 4, long])
    times.append(t.tolist())
  return histories, times


def _recall_at_1(model, histories, times):
  inputs = [h[:-1] for h in histories]
  return evaluate_scorer(
      model.score, inputs, np.array([h[-1] for h in histories]),
      recall_ks=(1,), ndcg_ks=(1,),
      times=[t[:-1] for t in times])["recall@1"]


@pytest.fixture(scope="module")
def gap_models():
  """HSTU with and without the time bias, trained on _gap_users."""
  rng = np.random.default_rng(0)
  train, train_times = _gap_users(rng, 256)
  valid, valid_times = _gap_users(rng, 64)
  models = {}
  for time_bias in (True, False):
    config = HSTUConfig(max_len=4, hidden_dim=16, num_layers=1, num_heads=1,
                        attention_dim=8, linear_dim=8, dropout=0.0,
                        time_bias=time_bias)
    models[time_bias], _ = train_hstu_retrieval(
        train, [h[:-1] for h in valid], np.array([h[-1] for h in valid]),
        NUM_ITEMS, config,
        HSTUTrainConfig(learning_rate=3e-2, batch_size=32, temperature=0.1,
                        max_epochs=10, eval_every=5, patience=1),
        train_times=train_times, valid_times=[t[:-1] for t in valid_times])
  test, test_times = _gap_users(rng, 64)
  return models, test, test_times


def test_the_time_bias_learns_what_only_the_time_gap_tells(gap_models):
  models, test, test_times = gap_models
  # The same inputs for every user: without times a model ranks the same
  # item first for all, right for exactly half of them.
  assert _recall_at_1(models[False], test, test_times) == 0.5
  assert _recall_at_1(models[True], test, test_times) > 0.9
  with pytest.raises(ValueError, match="score needs the histories' time"):
    models[True].score([[2, 3, 4]])


def test_times_stay_aligned_through_stochastic_length_and_padding():
  rng = np.random.default_rng(0)
  stamp = lambda items: np.asarray(items) * 10 + 7  # item -> its time
  long = np.arange(40)
  subsampled = 0
  for _ in range(50):
    items, times = stochastic_length(long, 50, 1.6, rng, stamp(long))
    np.testing.assert_array_equal(times, stamp(items))
    subsampled += len(items) < len(long)
  assert subsampled > 10
  with pytest.raises(ValueError, match="3 times for a sequence of 40"):
    stochastic_length(long, 50, 1.6, rng, [1, 2, 3])
  histories = [rng.permutation(30)[:n] for n in (1, 5, 30, 30, 12)]
  inputs, targets, times = training_pairs(
      histories, 8, 1.6, rng, [stamp(h) for h in histories])
  assert len(inputs) == 4  # the 1-item history predicts nothing
  valid = inputs > 0
  np.testing.assert_array_equal(times[valid], stamp(inputs[valid] - 1))
  assert times.dtype == np.int64 and not times[~valid].any()
  np.testing.assert_array_equal(valid, targets > 0)


def test_leave_one_out_splits_timestamps_like_the_items():
  histories = [[5, 6, 7, 8], [1, 2, 3]]
  times = [[10, 20, 30, 40], [1, 2, 3]]
  split = leave_one_out(histories, times)
  assert [t.tolist() for t in split.input_times("valid")] == [[10, 20], [1]]
  assert [t.tolist() for t in split.input_times("test")] == [[10, 20, 30],
                                                             [1, 2]]
  assert leave_one_out(histories).input_times("test") is None
  with pytest.raises(ValueError, match="parallel to the histories"):
    leave_one_out(histories, [[10, 20, 30, 40], [1, 2]])


def test_train_hstu_time_bias_option(tmp_path):
  """auto: on with timestamps (recorded in the saved config, whose test
  metrics the saved model reproduces with the split's times), off without;
  on without timestamps and unknown values are refused."""
  data = tmp_path / "data"
  histories = random_histories(NUM_ITEMS, 40, lengths=(3, 6))
  times = [(1000 * np.arange(len(h)) ** 2).tolist() for h in histories]
  write_dataset(data, "Timed", histories, times, num_items=NUM_ITEMS)
  options = HSTUComparisonOptions(
      data_dir=str(data), output=str(tmp_path / "report.json"),
      model_output=str(tmp_path / "hstu"), max_len=4, hidden_dim=8,
      num_layers=1, num_heads=1, attention_dim=4, linear_dim=4,
      batch_size=32, max_epochs=1)
  report = compare_hstu(options)
  assert report["hstu"]["hstu"]["time_bias"] is True
  saved = load_hstu_retrieval(str(tmp_path / "hstu"))
  assert saved.config.time_bias
  dataset = load_dataset(str(data))
  split = leave_one_out(dataset.histories, dataset.timestamps)
  assert evaluate_scorer(saved.score, *split.inputs_and_targets("test"),
                         times=split.input_times("test")) == (
                             report["hstu"]["test"])
  off = compare_hstu(dataclasses.replace(options, time_bias="off",
                                         model_output=None))
  assert off["hstu"]["hstu"]["time_bias"] is False
  untimed = tmp_path / "untimed"
  write_dataset(untimed, "Shop", histories, num_items=NUM_ITEMS)
  with pytest.raises(OptionsError, match=r"time_bias=on: dataset 'Shop' .*"
                     "has no timestamps"):
    compare_hstu(dataclasses.replace(options, data_dir=str(untimed),
                                     time_bias="on"))
  with pytest.raises(OptionsError, match="time_bias='yes': must be auto"):
    compare_hstu(dataclasses.replace(options, time_bias="yes"))


def test_exported_scene_passes_timestamps(gap_models, tmp_path):
  """The hstu_retrieval scene of a time-bias model: its top-k from raw
  behaviour events equals the in-memory model's scores of the same
  histories and timestamps."""
  models, test, test_times = gap_models
  model = models[True]
  item_ids = np.arange(NUM_ITEMS, dtype=np.int64) * 7 + 1000
  scene = HSTURetrievalModel(
      graphs.get("hstu_retrieval").graph_config(
          max_history=4, default_top_n=NUM_ITEMS, max_top_n=NUM_ITEMS),
      model, item_ids)
  path = export_saved_model(scene, str(tmp_path), 1)
  inputs = np.array([h[:-1] for h in test])
  times = np.array([t[:-1] for t in test_times], np.int64)
  serve = tf.saved_model.load(path).signatures["serving_default"]
  got = serve(item_ids=tf.constant(item_ids[inputs]),
              timestamps=tf.constant(times),
              action_types=tf.zeros(inputs.shape, tf.int32),
              lengths=tf.fill([len(inputs)], inputs.shape[1]),
              request_time=tf.constant(times[:, -1] + 1),
              top_n=tf.fill([len(inputs)], NUM_ITEMS))
  scores = model.score(inputs, times)
  top = np.argsort(-scores, axis=1, kind="stable")[:, :3]
  np.testing.assert_array_equal(got["item_ids"].numpy()[:, :3],
                                item_ids[top])
  np.testing.assert_allclose(got["scores"].numpy()[:, :3],
                             np.take_along_axis(scores, top, 1), rtol=1e-5,
                             atol=1e-6)
  # The served first item is the one the last gap tells.
  assert np.mean(got["item_ids"].numpy()[:, 0] ==
                 item_ids[[h[-1] for h in test]]) > 0.9
