"""Metrics vs hand-computed values; most-popular; SASRec learns a pattern."""
import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from dataset_testlib import random_histories, write_dataset

from tf_genrec.builders.export_recall import ExportOptions, export_recall_model
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.evaluate import EvalOptions, evaluate
from tf_genrec.evaluation.baselines import MostPopular, evaluate_scorer
from tf_genrec.models.sasrec.model import (SASRec, SASRecConfig, load_sasrec,
                                          pad_left, save_sasrec)
from tf_genrec.models.sasrec.trainer import (best_epochs, fit_sasrec,
                                            train_sasrec)
from tf_genrec.evaluation.metrics import (evaluate_ranking, ndcg_at_k,
                                          recall_at_k, target_ranks,
                                          top_k_from_scores)
from tf_genrec.options import OptionsError
from tf_genrec.training.random_model import (RandomModelOptions,
                                             make_random_model)
from tf_genrec.training.sasrec_baseline import (SASRecBaselineOptions,
                                                train_sasrec_baseline)

RANKED = np.array([[3, 1, 2, -1],
                   [5, 6, 7, 8],
                   [-1, -1, -1, -1],
                   [4, 4, 9, -1]])
TARGETS = np.array([1, 8, 0, 4])  # ranks 1, 3, absent, 0 (first duplicate)


def test_ranks_and_metrics_by_hand():
  np.testing.assert_array_equal(target_ranks(RANKED, TARGETS), [1, 3, -1, 0])
  assert recall_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
  assert recall_at_k(RANKED, TARGETS, 2) == pytest.approx(2 / 4)
  assert recall_at_k(RANKED, TARGETS, 10) == pytest.approx(3 / 4)
  assert ndcg_at_k(RANKED, TARGETS, 1) == pytest.approx(1 / 4)
  assert ndcg_at_k(RANKED, TARGETS, 2) == pytest.approx(
      (1 / math.log2(3) + 1) / 4)
  assert ndcg_at_k(RANKED, TARGETS, 4) == pytest.approx(
      (1 / math.log2(3) + 1 / math.log2(5) + 1) / 4)
  got = evaluate_ranking(RANKED, TARGETS, recall_ks=(2,), ndcg_ks=(4,))
  assert got == {"recall@2": pytest.approx(0.5),
                 "ndcg@4": pytest.approx(ndcg_at_k(RANKED, TARGETS, 4))}


def test_metric_input_errors():
  with pytest.raises(ValueError, match=r"ranked must be \[num_users, N\]"):
    recall_at_k(np.arange(3), np.arange(3), 1)
  with pytest.raises(ValueError, match="targets must be"):
    recall_at_k(RANKED, TARGETS[:2], 1)
  with pytest.raises(ValueError, match="targets must be item ids >= 0"):
    recall_at_k(RANKED, np.array([1, 8, -1, 4]), 1)


def test_top_k_from_scores_matches_full_sort():
  scores = np.random.default_rng(0).normal(size=(7, 40))
  expected = np.argsort(-scores, axis=1)[:, :5]
  np.testing.assert_array_equal(top_k_from_scores(scores, 5), expected)
  assert top_k_from_scores(scores, 100).shape == (7, 40)


def test_most_popular_by_hand():
  train = [np.array([0, 1, 1]), np.array([2, 2, 2, 2])]  # 2 > 1 > 0 > 3
  model = MostPopular(train, num_items=4)
  got = evaluate_scorer(model.score, train, np.array([1, 3]),
                        recall_ks=(1, 2), ndcg_ks=(2,))
  assert got == {"recall@1": 0.0, "recall@2": 0.5,
                 "ndcg@2": pytest.approx(0.5 / math.log2(3))}


def test_most_popular_excluding_history_by_hand():
  train = [np.array([0, 1, 1]), np.array([2, 2, 2, 2])]  # 2 > 1 > 0 > 3
  model = MostPopular(train, num_items=4)
  # User 0 clicked 0, 1: ranks 2, 3 -> target 3 at rank 1. User 1 clicked 2:
  # ranks 1, 0, 3 -> target 1 at rank 0.
  got = evaluate_scorer(model.score, train, np.array([3, 1]),
                        recall_ks=(1, 2), ndcg_ks=(2,), exclude_history=True)
  assert got == {"recall@1": 0.5, "recall@2": 1.0,
                 "ndcg@2": pytest.approx((1 + 1 / math.log2(3)) / 2)}


def test_pad_left():
  np.testing.assert_array_equal(
      pad_left([np.array([1, 2]), np.array([3, 4, 5, 6]), np.array([])], 3),
      [[0, 1, 2], [4, 5, 6], [0, 0, 0]])


def _cyclic_histories(num_users, num_items, length, rng):
  """Each user walks item, item+1, ... (mod num_items): next item is known."""
  starts = rng.integers(num_items, size=num_users)
  return [(s + np.arange(length)) % num_items for s in starts]


def test_sasrec_learns_sequential_pattern_and_beats_random():
  rng = np.random.default_rng(0)
  num_items = 60
  histories = _cyclic_histories(600, num_items, 8, rng)
  split = leave_one_out(histories)
  config = SASRecConfig(num_items=num_items, max_len=10, hidden_dim=32,
                        num_blocks=1, num_heads=1, dropout=0.1,
                        learning_rate=5e-3, batch_size=128, max_epochs=20,
                        eval_every=5, patience=2)
  model, history = train_sasrec(split.train,
                                *split.inputs_and_targets("valid"), config)
  assert history[-1]["loss"] < history[0]["loss"]
  test = evaluate_scorer(model.score, *split.inputs_and_targets("test"),
                         recall_ks=(10,), ndcg_ks=(10,))
  random_recall = 10 / num_items
  # A popularity ranking cannot exploit the pattern (items are ~uniform).
  popular = evaluate_scorer(MostPopular(split.train, num_items).score,
                            *split.inputs_and_targets("test"),
                            recall_ks=(10,), ndcg_ks=(10,))
  assert test["recall@10"] > 0.9 > 2 * max(random_recall,
                                           popular["recall@10"])


def test_sasrec_stops_early_when_validation_does_not_improve():
  rng = np.random.default_rng(1)
  split = leave_one_out(_cyclic_histories(50, 20, 6, rng))
  # A zero learning rate keeps validation flat: patience 1 stops at pass 2.
  config = SASRecConfig(num_items=20, max_len=6, hidden_dim=8, num_blocks=1,
                        num_heads=1, learning_rate=0.0, max_epochs=50,
                        eval_every=1, patience=1)
  _, history = train_sasrec(split.train, *split.inputs_and_targets("valid"),
                            config)
  assert len(history) == 2


def test_sasrec_refit_runs_the_chosen_epochs_without_validation():
  rng = np.random.default_rng(2)
  split = leave_one_out(_cyclic_histories(80, 20, 6, rng))
  config = SASRecConfig(num_items=20, max_len=6, hidden_dim=8, num_blocks=1,
                        num_heads=1, learning_rate=5e-3, max_epochs=3,
                        eval_every=1)
  model, history = train_sasrec(split.fit_histories(refit=True), None, None,
                                config)
  assert [r["epoch"] for r in history] == [0, 1, 2]
  assert not any("valid" in r for r in history)
  assert history[-1]["loss"] < history[0]["loss"]
  assert model.score(split.test_inputs[:2]).shape == (2, 20)


def test_fit_sasrec_refits_for_the_epochs_validation_chose():
  rng = np.random.default_rng(3)
  split = leave_one_out(_cyclic_histories(80, 20, 6, rng))
  config = SASRecConfig(num_items=20, max_len=6, hidden_dim=8, num_blocks=1,
                        num_heads=1, learning_rate=5e-3, max_epochs=6,
                        eval_every=1, patience=2)
  chosen, info = fit_sasrec(split, config)
  validated, history = train_sasrec(
      split.train, *split.inputs_and_targets("valid"), config)
  assert info == {"epochs_run": len(history)}
  # Seeded: the same model as train_sasrec's own validation run.
  np.testing.assert_array_equal(chosen.score(split.test_inputs[:3]),
                                validated.score(split.test_inputs[:3]))
  refit, info = fit_sasrec(split, config, refit=True)
  assert info == {"epochs_run": len(history),
                  "refit_epochs": best_epochs(history)}
  reference, _ = train_sasrec(
      split.fit_histories(refit=True), None, None,
      dataclasses.replace(config, max_epochs=best_epochs(history)))
  np.testing.assert_array_equal(refit.score(split.test_inputs[:3]),
                                reference.score(split.test_inputs[:3]))
  assert not np.array_equal(refit.score(split.test_inputs[:3]),
                            chosen.score(split.test_inputs[:3]))


def test_best_epochs_counts_up_to_the_best_validation_pass():
  history = [{"epoch": 0}, {"epoch": 1, "valid": {"ndcg@10": 0.2}},
             {"epoch": 2}, {"epoch": 3, "valid": {"ndcg@10": 0.3}},
             {"epoch": 4}, {"epoch": 5, "valid": {"ndcg@10": 0.3}}]
  assert best_epochs(history) == 4  # The first of tied passes, as training.
  with pytest.raises(ValueError, match="no validation pass"):
    best_epochs([{"epoch": 0}])


def test_sasrec_few_steps_on_real_slice(tmp_path):
  dataset = load_dataset()
  split = leave_one_out(dataset.histories[:400])
  config = SASRecConfig(num_items=dataset.num_items, hidden_dim=32,
                        num_blocks=1, num_heads=1, batch_size=64,
                        learning_rate=3e-3, max_epochs=3, eval_every=3)
  model, history = train_sasrec(split.train,
                                *split.inputs_and_targets("valid"), config)
  assert history[-1]["loss"] < history[0]["loss"]
  scores = model.score(split.test_inputs[:5])
  assert scores.shape == (5, dataset.num_items)
  assert np.all(np.isfinite(scores))
  # Exported item embeddings: row i scores item id i (the pad row is gone).
  emb = model.item_embeddings()
  assert emb.shape == (dataset.num_items, 32)
  tokens = pad_left([np.asarray(h) + 1 for h in split.test_inputs[:5]],
                    config.max_len)
  hidden = model(tf.constant(tokens))[:, -1].numpy()
  np.testing.assert_allclose(scores, hidden @ emb.T, rtol=1e-4, atol=1e-4)
  # Saved and loaded (a distillation teacher), it scores exactly the same.
  save_sasrec(model, str(tmp_path / "sasrec"))
  loaded = load_sasrec(str(tmp_path / "sasrec"))
  assert loaded.config == config
  np.testing.assert_array_equal(loaded.score(split.test_inputs[:5]), scores)


def test_sasrec_config_errors():
  with pytest.raises(ValueError, match="hidden_dim=30 must be divisible"):
    SASRecConfig(num_items=5, hidden_dim=30, num_heads=4)
  with pytest.raises(ValueError, match="SASRecConfig.num_items must be > 0"):
    SASRecConfig(num_items=0)
  with pytest.raises(ValueError, match="dropout"):
    SASRecConfig(num_items=5, dropout=1.0)


def test_train_sasrec_baseline_refit_writes_the_refit_model(tmp_path):
  """The step in-process on a generated dataset; the CLI binds the same
  options (test_tool_flags_are_the_options_fields)."""
  data = tmp_path / "data"
  write_dataset(data, "Shop", random_histories(30, 40), num_items=30)
  options = SASRecBaselineOptions(
      data_dir=str(data), hidden_dim=8, num_blocks=1, num_heads=1,
      max_epochs=2, eval_every=1, patience=1, refit=True,
      output=str(tmp_path / "report.json"),
      model_output=str(tmp_path / "sasrec"))
  returned = train_sasrec_baseline(options)
  report = json.loads((tmp_path / "report.json").read_text())
  assert report == json.loads(json.dumps(returned))
  assert report["refit"] is True
  # A refit model has trained on the validation targets: test only.
  assert set(report["most_popular"]) == set(report["sasrec"]) - {
      "config", "epochs_run", "refit_epochs", "train_seconds"} == {"test"}
  split = leave_one_out(load_dataset(data).histories)
  config = SASRecConfig(num_items=30, hidden_dim=8, num_blocks=1,
                        num_heads=1, max_epochs=2, eval_every=1, patience=1)
  assert options.sasrec_config(30) == config
  reference, info = fit_sasrec(split, config, refit=True)
  assert report["sasrec"]["refit_epochs"] == info["refit_epochs"]
  np.testing.assert_allclose(
      load_sasrec(str(tmp_path / "sasrec")).score(split.test_inputs[:4]),
      reference.score(split.test_inputs[:4]), rtol=1e-5, atol=1e-5)


def test_recall_at_recall_stage_depth():
  """Every scorer reports Recall@50/100/300 beside @5/@10."""
  num_items = 400
  targets = np.array([7, 150, 299, 350])

  def score(histories):
    # Items ranked by id: item i at 0-based rank i.
    return np.tile(-np.arange(num_items, dtype=np.float32),
                   (len(histories), 1))

  got = evaluate_scorer(score, [[0]] * len(targets), targets)
  assert sorted(got) == ["ndcg@10", "ndcg@5", "recall@10", "recall@100",
                         "recall@300", "recall@5", "recall@50"]
  assert (got["recall@10"], got["recall@50"], got["recall@100"],
          got["recall@300"]) == (0.25, 0.25, 0.25, 0.75)


def test_evaluate_on_a_generated_dataset_with_a_saved_sasrec(tmp_path):
  """evaluate reads any <Name>.* directory (here with timestamps), scores
  the exported model, most-popular and a saved SASRec to depth 300; the
  random model, export and evaluate steps run in-process."""
  num_items = 30
  histories = random_histories(num_items, 24)
  data = tmp_path / "data"
  write_dataset(data, "Shop", histories,
                [list(range(len(h))) for h in histories], num_items)
  model = tmp_path / "model"
  make_random_model(RandomModelOptions(
      output_dir=str(model), num_items=num_items, num_levels=2,
      codebook_size=8, hidden_size=16, num_hidden_layers=1,
      intermediate_size=32, num_attention_heads=2, num_key_value_heads=1))
  export_recall_model(ExportOptions(
      checkpoint_dir=str(model / "hf"),
      item_table=str(model / "item_table.tsv"),  # K from the checkpoint
      export_base_path=str(tmp_path / "export"), max_beam_width=300,
      default_beam_width=300, default_top_n=300))
  tf.keras.utils.set_random_seed(0)
  sasrec_config = SASRecConfig(num_items=num_items, max_len=8, hidden_dim=8,
                              num_blocks=1, num_heads=2)
  sasrec = SASRec(sasrec_config)
  sasrec(tf.zeros([1, 8], tf.int32))
  save_sasrec(sasrec, str(tmp_path / "sasrec"))
  options = EvalOptions(saved_model_dir=str(tmp_path / "export" / "1"),
                        data_dir=str(data), split="test",
                        sasrec_dir=str(tmp_path / "sasrec"))
  report = evaluate(options)
  assert report["dataset"] == "Shop" and report["users"] == 24
  for method in ("generative", "most_popular", "sasrec"):
    # 300 >= the catalogue: every method returns every item.
    assert report[method]["recall@300"] == 1.0, (method, report[method])
    assert 0 <= report[method]["recall@10"] <= report[method]["recall@50"]
  sasrec_direct = evaluate_scorer(
      sasrec.score, *leave_one_out(histories).inputs_and_targets("test"))
  assert report["sasrec"] == pytest.approx(sasrec_direct)
  # A SASRec of another catalogue is refused, naming both sizes.
  other = SASRec(dataclasses.replace(sasrec_config, num_items=31))
  other(tf.zeros([1, 8], tf.int32))
  save_sasrec(other, str(tmp_path / "other"))
  with pytest.raises(OptionsError, match="num_items=31, the dataset 30"):
    evaluate(dataclasses.replace(options, sasrec_dir=str(tmp_path / "other")))
  with pytest.raises(OptionsError, match="refit is for split=test"):
    evaluate(dataclasses.replace(options, refit=True, split="valid"))
