"""The real recall SavedModel behind a batching server: a request's answer does
not depend on what it was batched with."""
import numpy as np
import pytest
import tensorflow as tf

import serving_testlib as tl
from recall_testlib import (assert_row_equals_alone, random_recall_requests,
                            tiny_recall_assets)
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.serving import client_lib, config


@pytest.fixture(scope="module")
def batched_recall(tmp_path_factory):
  root = tmp_path_factory.mktemp("batch_invariance")
  a = tiny_recall_assets(root)
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"])
  path = export_saved_model(model, str(root / "base"), 1)
  batching = config.BatchingConfig(max_batch_size=32,
                                   batch_timeout_micros=500_000,
                                   num_batch_threads=1,
                                   pad_variable_length_inputs=True)
  with tl.running_server(config.single_model_config(
      "ad_recall", str(root / "base")), batching=batching) as (server,
                                                                channel):
    yield server, channel, path, a


def test_batched_requests_equal_each_row_served_alone(batched_recall):
  server, channel, path, a = batched_recall
  stub = tl.prediction_stub(channel)
  rng = np.random.default_rng(7)
  requests = [random_recall_requests(a, rng, int(rng.integers(1, 4)))
              for _ in range(6)]
  requests[0]["beam_width"][:] = 16  # a wide batch-mate for the others

  def predict(inputs):
    request = client_lib.build_predict_request(inputs, "ad_recall")
    return lambda: client_lib.response_to_numpy(stub.Predict(request, 60))

  serve = tf.saved_model.load(path).signatures["serving_default"]

  def alone(inputs, row):  # the reference: that row alone, in process
    out = serve(**{k: tf.constant(v[row:row + 1]) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}

  before = server.metrics.batch_size.count()
  results = tl.concurrently([predict(r) for r in requests])
  assert server.metrics.batch_size.count() - before < len(requests)
  for inputs, outputs in zip(requests, results):
    assert not isinstance(outputs, Exception), outputs
    for row in range(len(inputs["lengths"])):
      assert_row_equals_alone(outputs, row, alone(inputs, row),
                              inputs["beam_width"][row],
                              inputs["top_n"][row])
