"""HSTU retrieval: loss, stochastic length, training, top-k, and both HSTU
scenes exported and served by `tf-genrec serve` to a stock TF Serving
client (tensorflow_serving.apis stubs, protos built by hand); the
`tf-genrec train_hstu` step."""
import dataclasses
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

import graphs
import serving_testlib as tl
from dataset_testlib import random_histories, write_dataset
from tf_genrec.builders.export import export_saved_model
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.builders.hstu import (UNSCORED, HSTURankingModel,
                                     HSTURetrievalModel)
from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.ranking import HSTURanking, RankingTasks
from tf_genrec.models.hstu.retrieval import (load_hstu_retrieval,
                                             sampled_softmax_loss,
                                             save_hstu_retrieval)
from tf_genrec.models.hstu.stochastic_length import (sequentialize,
                                                     stochastic_length)
from tf_genrec.models.sasrec.model import SASRec, SASRecConfig, save_sasrec
from tf_genrec.models.top_k import BruteForceTopK
from tf_genrec.options import OptionsError
from tf_genrec.serving import config as serving_config
from tf_genrec.training.hstu_comparison import (HSTUComparisonOptions,
                                                compare_hstu)
from tf_genrec.training.hstu_retrieval import (HSTUTrainConfig,
                                               train_hstu_retrieval)

NUM_ITEMS = 40


def test_sampled_softmax_matches_numpy():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(NUM_ITEMS, 6)).astype(np.float32)
  table /= np.linalg.norm(table, axis=1, keepdims=True)
  users = table[[3, 5, 7, 9]] + rng.normal(0, .3, (4, 6)).astype(np.float32)
  users /= np.linalg.norm(users, axis=1, keepdims=True)
  targets = np.array([1, 2, 1, 4])  # rows 0 and 2 share a target
  negatives = np.array([4, 8, 9])  # 4 is row 3's target
  got = sampled_softmax_loss(tf.constant(users), tf.constant(targets),
                             tf.constant(negatives),
                             lambda r: tf.gather(table, r), 0.1).numpy()
  losses = []
  for i, t in enumerate(targets):
    cands = [table[t]] + [table[targets[j]] for j in range(4)
                          if j != i and targets[j] != t]
    cands += [table[n] for n in negatives if n != t]
    logits = np.array([users[i] @ c for c in cands]) / 0.1
    losses.append(np.log(np.exp(logits).sum()) - logits[0])
  np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)


def test_stochastic_length():
  rng = np.random.default_rng(0)
  short = np.arange(10)  # <= 50 ** 0.8 = 22.9: always whole
  assert all(np.array_equal(stochastic_length(short, 50, 1.6, rng), short)
             for _ in range(20))
  long = np.arange(40)  # whole with probability 50**1.6 / 40**2 = 0.33
  outs = [stochastic_length(long, 50, 1.6, rng) for _ in range(2000)]
  whole = np.mean([len(o) == 40 for o in outs])
  assert abs(whole - 50 ** 1.6 / 1600) < 0.04
  sub = next(o for o in outs if len(o) < 40)
  assert len(sub) == 22 and np.all(np.diff(sub) > 0)  # order kept
  with pytest.raises(ValueError, match="alpha must be in"):
    stochastic_length(long, 50, 2.5, rng)


def test_sequentialize_keeps_run_starts_merged_by_time():
  times, values, series = sequentialize(
      [10, 20, 30], [7, 8, 9], [([5, 15, 25, 35], [1, 1, 2, 2])])
  np.testing.assert_array_equal(times, [5, 10, 20, 25, 30])
  np.testing.assert_array_equal(values, [1, 7, 8, 2, 9])
  np.testing.assert_array_equal(series, [1, 0, 0, 1, 0])


def test_brute_force_mips_is_exact():
  rng = np.random.default_rng(1)
  items = rng.normal(size=(50, 8)).astype(np.float32)
  queries = rng.normal(size=(3, 8)).astype(np.float32)
  rows, scores = BruteForceTopK(items)(tf.constant(queries), 5)
  expected = np.argsort(-(queries @ items.T), axis=1)[:, :5]
  np.testing.assert_array_equal(rows.numpy(), expected)


def _cyclic_histories(rng, users=200):
  """Each user walks items +1 (mod NUM_ITEMS) from a random start."""
  out = []
  for _ in range(users):
    start, n = rng.integers(NUM_ITEMS), rng.integers(4, 9)
    out.append((start + np.arange(n)) % NUM_ITEMS)
  return out


@pytest.fixture(scope="module")
def trained():
  rng = np.random.default_rng(0)
  histories = _cyclic_histories(rng)
  train = [h[:-1] for h in histories]
  targets = np.array([h[-1] for h in histories])
  config = HSTUConfig(max_len=8, hidden_dim=16, num_layers=1, num_heads=1,
                      attention_dim=8, linear_dim=8, dropout=0.0)
  model, history = train_hstu_retrieval(
      train, train, targets, NUM_ITEMS, config,
      HSTUTrainConfig(learning_rate=1e-2, batch_size=64, num_negatives=16,
                      temperature=0.1, max_epochs=8, eval_every=4,
                      stochastic_length_alpha=1.5))
  return model, history, train, targets


def test_training_learns_the_next_item(trained):
  model, history, _, _ = trained
  assert history[-1]["valid"]["recall@5"] > 0.9


def test_full_softmax_learns_and_negative_counts_are_checked():
  histories = _cyclic_histories(np.random.default_rng(1))
  targets = np.array([h[-1] for h in histories])
  config = HSTUConfig(max_len=8, hidden_dim=16, num_layers=1, num_heads=1,
                      attention_dim=8, linear_dim=8, dropout=0.0)
  _, history = train_hstu_retrieval(
      [h[:-1] for h in histories], [h[:-1] for h in histories], targets,
      NUM_ITEMS, config,
      HSTUTrainConfig(learning_rate=1e-2, batch_size=64, num_negatives=0,
                      temperature=0.1, max_epochs=8, eval_every=4))
  assert history[-1]["valid"]["recall@5"] > 0.9
  with pytest.raises(ValueError, match="num_negatives must be >= 0"):
    HSTUTrainConfig(num_negatives=-1)


def test_save_load_round_trip(trained, tmp_path):
  model, _, train, _ = trained
  save_hstu_retrieval(model, str(tmp_path))
  np.testing.assert_array_equal(load_hstu_retrieval(str(tmp_path)).score(
      train[:4]), model.score(train[:4]))


def _stock_predict(channel, model_name, inputs):
  """A stock TF Serving client: PredictRequest + the generated stub."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = "serving_default"
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  response = tl.prediction_stub(channel).Predict(request, 60)
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _requests(histories, item_ids):
  """Histories of model rows -> behaviour inputs with shuffled columns (the
  op orders by time), one unknown item and one future event per row."""
  width = max(len(h) for h in histories) + 2
  inputs = {"item_ids": np.full([len(histories), width], -1, np.int64),
            "timestamps": np.zeros([len(histories), width], np.int64),
            "action_types": np.zeros([len(histories), width], np.int32),
            "lengths": np.zeros([len(histories)], np.int32),
            "request_time": np.full([len(histories)], 1000, np.int64)}
  rng = np.random.default_rng(5)
  for row, h in enumerate(histories):
    ids = np.concatenate([item_ids[h], [123_456, item_ids[0]]])
    ts = np.concatenate([100 + np.arange(len(h)) * 10, [105, 2000]])
    perm = rng.permutation(len(ids))
    inputs["item_ids"][row, :len(ids)] = ids[perm]
    inputs["timestamps"][row, :len(ids)] = ts[perm]
    inputs["lengths"][row] = len(ids)
  return inputs


def test_hstu_scenes_served_to_a_stock_client(trained, tmp_path):
  model, _, train, _ = trained
  item_ids = np.arange(NUM_ITEMS, dtype=np.int64) * 7 + 1000
  retrieval = HSTURetrievalModel(
      graphs.get("hstu_retrieval").graph_config(max_history=8,
                                                default_top_n=10,
                                                max_top_n=20),
      model, item_ids)
  ranker = HSTURanking(HSTUConfig(max_len=17, hidden_dim=16, num_layers=1,
                                  num_heads=2, attention_dim=4, linear_dim=4),
                       NUM_ITEMS, RankingTasks())
  ranker(tf.ones([1, 1], tf.int32), tf.zeros([1, 1], tf.int32))
  ranking = HSTURankingModel(
      graphs.get("hstu_ranking").graph_config(max_history=8,
                                              max_candidates=6,
                                              micro_batch=4),
      ranker, item_ids)
  inputs = _requests(train[:3], item_ids)
  export_saved_model(retrieval, str(tmp_path / "r"), 1, [inputs], "r")
  ranking_inputs = dict(inputs, candidate_item_ids=np.array(
      [item_ids[:6], item_ids[6:12], [item_ids[0], -1, 99, item_ids[1],
                                      item_ids[2], item_ids[3]]]))
  export_saved_model(ranking, str(tmp_path / "k"), 1, [ranking_inputs], "k")
  config = serving_config.single_model_config("r", str(tmp_path / "r"))
  more = config.model_config_list.config.add()
  more.CopyFrom(config.model_config_list.config[0])
  more.name, more.base_path = "k", str(tmp_path / "k")
  with tl.running_server(config) as (_, channel):
    request = dict(inputs, top_n=np.array([10, 3, 20], np.int32))
    got = _stock_predict(channel, "r", request)
    ranked = _stock_predict(channel, "k", ranking_inputs)
    too_many = dict(ranking_inputs,
                    candidate_item_ids=np.zeros([3, 7], np.int64))
    with pytest.raises(grpc.RpcError) as err:
      _stock_predict(channel, "k", too_many)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_candidates=6" in err.value.details()
    # Still serving, the same answer.
    np.testing.assert_array_equal(
        _stock_predict(channel, "r", request)["item_ids"], got["item_ids"])
  # Reference: the Keras model's own full-catalogue scores (the unknown
  # item and the future event are not part of the history).
  scores = model.score(train[:3])
  for row, n in enumerate([10, 3, 20]):
    order = np.argsort(-scores[row], kind="stable")[:n]
    np.testing.assert_array_equal(got["item_ids"][row, :n], item_ids[order])
    np.testing.assert_allclose(got["scores"][row, :n], scores[row, order],
                               rtol=1e-5, atol=1e-6)
    assert np.all(got["item_ids"][row, n:] == -1)
  # Ranking reference: the Keras ranker's M-FALCON over the same history
  # (model rows + 1 as tokens, action type 0) and candidates.
  lengths = np.array([len(h) for h in train[:3]])
  tokens = np.zeros([3, lengths.max()], np.int32)
  for row, h in enumerate(train[:3]):
    tokens[row, :len(h)] = h + 1
  rows = np.searchsorted(item_ids, ranking_inputs["candidate_item_ids"])
  known = np.isin(ranking_inputs["candidate_item_ids"], item_ids)
  expected = tf.sigmoid(ranker.rank(
      ranker.encode_history(tokens, np.zeros_like(tokens)), lengths,
      np.where(known, rows + 1, 0).astype(np.int32))).numpy()
  assert set(ranked) == {"click", "purchase"}
  for t, name in enumerate(("click", "purchase")):
    assert ranked[name].shape == (3, 6)
    np.testing.assert_allclose(ranked[name][known], expected[..., t][known],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ranked[name][~known], UNSCORED)


def test_compare_hstu_runs_in_process_and_keeps_the_best_on_validation(
    tmp_path):
  """`tf-genrec train_hstu`'s step on a generated dataset: one HSTU per
  alpha, the one with the best validation NDCG@10 saved, its test metrics
  reproduced by the saved model."""
  data = tmp_path / "data"
  write_dataset(data, "Shop", random_histories(NUM_ITEMS, 60),
                num_items=NUM_ITEMS)
  options = HSTUComparisonOptions(
      data_dir=str(data), output=str(tmp_path / "report.json"),
      model_output=str(tmp_path / "hstu"), max_len=8, hidden_dim=16,
      num_layers=1, num_heads=1, attention_dim=8, linear_dim=8,
      batch_size=32, num_negatives=16, max_epochs=2, eval_every=1,
      stochastic_length_alphas=["0", "1.5"])
  report = compare_hstu(options)
  assert json.loads((tmp_path / "report.json").read_text()) == json.loads(
      json.dumps(report))
  names = ("hstu", "hstu_sl1.5")
  assert report["chosen_hstu"] == max(
      names, key=lambda n: report[n]["valid"]["ndcg@10"])
  assert report["hstu_sl1.5"]["train"]["stochastic_length_alpha"] == 1.5
  split = leave_one_out(load_dataset(str(data)).histories)
  saved = load_hstu_retrieval(str(tmp_path / "hstu"))
  assert evaluate_scorer(saved.score, *split.inputs_and_targets("test")) == (
      report[report["chosen_hstu"]]["test"])
  with pytest.raises(OptionsError, match=r"stochastic_length_alphas=\['3'\]"):
    compare_hstu(dataclasses.replace(options, stochastic_length_alphas=["3"]))


def test_compare_hstu_scores_a_saved_sasrec(tmp_path):
  data = tmp_path / "data"
  write_dataset(data, "Shop", random_histories(NUM_ITEMS, 40),
                num_items=NUM_ITEMS)
  sasrec = SASRec(SASRecConfig(num_items=NUM_ITEMS, max_len=8, hidden_dim=8,
                               num_blocks=1, num_heads=1))
  sasrec(tf.zeros([1, 8], tf.int32))
  save_sasrec(sasrec, str(tmp_path / "sasrec"))
  options = HSTUComparisonOptions(
      data_dir=str(data), output=str(tmp_path / "report.json"), max_len=8,
      hidden_dim=16, num_layers=1, num_heads=1, attention_dim=8,
      linear_dim=8, batch_size=32, num_negatives=0, max_epochs=1,
      sasrec_dir=str(tmp_path / "sasrec"))
  report = compare_hstu(options)
  split = leave_one_out(load_dataset(str(data)).histories)
  assert report["sasrec"]["test"] == evaluate_scorer(
      sasrec.score, *split.inputs_and_targets("test"))
  with pytest.raises(OptionsError, match="not with sasrec"):
    compare_hstu(dataclasses.replace(options, sasrec=True))
  write_dataset(data, "Shop", random_histories(NUM_ITEMS + 1, 40),
                num_items=NUM_ITEMS + 1)
  with pytest.raises(OptionsError, match=r"sasrec_dir: .* has num_items="
                     f"{NUM_ITEMS}, the dataset {NUM_ITEMS + 1}"):
    compare_hstu(options)
