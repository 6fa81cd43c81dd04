"""The real recall SavedModel (custom ops + generator) behind the gRPC server."""
import grpc
import numpy as np
import pytest

import graphs
import serving_testlib as tl
from recall_testlib import tiny_recall_assets
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.serving import client_lib, config


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("recall_served")
  a = tiny_recall_assets(root)
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  history = a["item_ids"][:4]
  warmup = {"item_ids": history[None], "timestamps": np.arange(1, 5)[None],
            "action_types": np.zeros([1, 4], np.int32),
            "lengths": np.array([4], np.int32),
            "request_time": np.array([5], np.int64)}
  path = export_saved_model(model, str(root / "base"), 1, [warmup],
                            "ad_recall")
  with tl.running_server(config.single_model_config(
      "ad_recall", str(root / "base"))) as (_, channel):
    yield channel, path, a


def _inputs(a, seed, **extra):
  rng = np.random.default_rng(seed)
  item_ids = rng.choice(a["item_ids"], (3, 7)).astype(np.int64)
  lengths = np.array([7, 3, 5], np.int32)
  for row, n in enumerate(lengths):
    item_ids[row, n:] = -1
  inputs = {"item_ids": item_ids,
            "timestamps": np.tile(np.arange(1, 8, dtype=np.int64), (3, 1)),
            "action_types": np.zeros([3, 7], np.int32), "lengths": lengths,
            "request_time": np.full([3], 100, np.int64)}
  inputs.update({k: np.asarray(v, np.int32) for k, v in extra.items()})
  return inputs


def _predict(channel, inputs):
  request = client_lib.build_predict_request(inputs, "ad_recall")
  response = tl.prediction_stub(channel).Predict(request, 60)
  return client_lib.response_to_numpy(response)


def test_grpc_equals_in_process(served):
  channel, path, a = served
  inputs = _inputs(a, 0, beam_width=[8, 4, 16], top_n=[20, 5, 12])
  got = _predict(channel, inputs)
  expected = tl.in_process(path, inputs)
  for key in ("item_ids", "semantic_ids"):
    np.testing.assert_array_equal(got[key], expected[key])
  np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-6)
  assert set(got["item_ids"].ravel()) - {-1} <= set(a["item_ids"])


def test_omitted_options_use_export_defaults(served):
  channel, path, a = served
  got = _predict(channel, _inputs(a, 1))
  assert got["item_ids"].shape == (3, 20)  # default_top_n
  assert got["semantic_ids"].shape == (3, 8, 3)  # default_beam_width, L


@pytest.mark.parametrize("change, field", [
    (dict(beam_width=[17, 1, 1]), "beam_width"),
    (dict(top_n=[0, 1, 1]), "top_n"),
    (dict(lengths=[8, 1, 1]), "lengths"),
    (dict(lengths=[-1, 1, 1]), "lengths"),
])
def test_bad_requests_name_the_field_and_server_keeps_serving(
    served, change, field):
  channel, _, a = served
  inputs = _inputs(a, 2)
  inputs.update({k: np.asarray(v, np.int32) for k, v in change.items()})
  with pytest.raises(grpc.RpcError) as err:
    _predict(channel, inputs)
  assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert field in err.value.details()
  assert _predict(channel, _inputs(a, 3))["item_ids"].shape == (3, 20)


def test_context_longer_than_the_server_limit_is_refused_live(tmp_path):
  """--max_context_length on a scene that takes query tokens: the server
  refuses a longer context_ids on its declared shape, naming input, length
  and limit, and keeps answering shorter ones as the model does."""
  a = tiny_recall_assets(tmp_path)
  scene = graphs.get("search_recall").graph_config(
      num_levels=a["config"].template.num_levels,
      codebook_size=a["config"].template.codebook_size, max_history=6,
      max_beam_width=16, default_beam_width=8, default_top_n=20)
  model = build_generative_recall(scene, a["ckpt"], a["table_path"])
  path = export_saved_model(model, str(tmp_path / "base"), 1, [],
                            "search_recall")
  with tl.running_server(config.single_model_config(
      "search_recall", str(tmp_path / "base")),
                         max_context_length=8) as (_, channel):
    long = _inputs(a, 4, context_ids=np.ones([3, 9]), context_lengths=[9] * 3)
    request = client_lib.build_predict_request(long, "search_recall")
    with pytest.raises(grpc.RpcError) as err:
      tl.prediction_stub(channel).Predict(request, 60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("input 'context_ids' has length 9 (dim 1), more than "
            "max_context_length=8") in err.value.details()
    short = _inputs(a, 4, context_ids=[[3, 5, 0]] * 3, context_lengths=[2] * 3,
                    beam_width=[8] * 3, top_n=[20] * 3)
    request = client_lib.build_predict_request(short, "search_recall")
    got = client_lib.response_to_numpy(
        tl.prediction_stub(channel).Predict(request, 60))
    np.testing.assert_array_equal(got["item_ids"],
                                  tl.in_process(path, short)["item_ids"])
