"""Server-side batching: merging, splitting, padding, queue limits."""
import threading
import time
import types

import grpc
import numpy as np
import pytest

import serving_testlib as tl
from serving_testlib import concurrently as _concurrently
from tf_genrec.serving import client_lib, config
from tf_genrec.serving.batching import BatchScheduler
from tf_genrec.serving.errors import ServingError


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
  base = tmp_path_factory.mktemp("toy")
  path = tl.export_toy_model(str(base), 1)
  batching = config.BatchingConfig(max_batch_size=32,
                                   batch_timeout_micros=300_000,
                                   num_batch_threads=1,
                                   pad_variable_length_inputs=True)
  with tl.running_server(config.single_model_config("toy", str(base)),
                         batching=batching) as (server, channel):
    yield server, channel, path


def _predict_fn(channel, inputs):
  stub = tl.prediction_stub(channel)
  request = client_lib.build_predict_request(inputs, "toy")
  return lambda: client_lib.response_to_numpy(stub.Predict(request, 30))


def test_concurrent_requests_are_merged_and_split_back(batched):
  server, channel, path = batched
  # Different history lengths T (padded when merged) and batch sizes.
  requests = [tl.sample_inputs(batch=1 + i % 3, length=3 + i, seed=10 + i)
              for i in range(8)]
  before = server.metrics.batch_size.count()
  results = _concurrently([_predict_fn(channel, r) for r in requests])
  batches = server.metrics.batch_size.count() - before
  for inputs, outputs in zip(requests, results):
    assert not isinstance(outputs, Exception), outputs
    for key, value in tl.in_process(path, inputs).items():
      np.testing.assert_array_equal(outputs[key], value)
  assert batches < len(requests)  # Some calls were merged.
  metrics = server.metrics.render()
  assert "tf_genrec_serving_batch_size_bucket" in metrics


def test_merged_callers_with_different_top_n_get_their_rows(batched):
  _, channel, path = batched
  small = tl.sample_inputs(batch=1, seed=20, top_n=[2])
  large = tl.sample_inputs(batch=2, seed=21, top_n=[6, 5])
  out_small, out_large = _concurrently([_predict_fn(channel, small),
                                        _predict_fn(channel, large)])
  np.testing.assert_array_equal(out_large["item_ids"],
                                tl.in_process(path, large)["item_ids"])
  # As in TF Serving, outputs are split along dim 0 only: a merged caller
  # may get extra trailing columns, which the model fills with -1 / -inf.
  ref = tl.in_process(path, small)
  width = ref["item_ids"].shape[1]
  np.testing.assert_array_equal(out_small["item_ids"][:, :width],
                                ref["item_ids"])
  assert np.all(out_small["item_ids"][:, width:] == -1)
  assert np.all(np.isneginf(out_small["scores"][:, width:]))


def test_invalid_caller_does_not_fail_the_batch(batched):
  _, channel, path = batched
  good = [tl.sample_inputs(batch=2, length=4, seed=30 + i) for i in range(3)]
  bad = tl.sample_inputs(batch=1, length=4, seed=40)
  bad["lengths"] = np.array([9], np.int32)
  results = _concurrently([_predict_fn(channel, r) for r in good + [bad]])
  for inputs, outputs in zip(good, results):
    np.testing.assert_array_equal(outputs["item_ids"],
                                  tl.in_process(path, inputs)["item_ids"])
  assert isinstance(results[-1], grpc.RpcError)
  assert results[-1].code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "lengths must be <= T" in results[-1].details()


class _FakeServable:
  """Records the merged inputs it is called with; echoes item_ids * 10."""
  model_name = "fake"

  def __init__(self, delay=0.0):
    self.calls = []
    self.delay = delay
    self.running = threading.Event()

  def run(self, signature, inputs, output_filter):
    self.calls.append({k: v.copy() for k, v in inputs.items()})
    self.running.set()
    time.sleep(self.delay)
    return {"y": inputs["x"] * 10}


SIGNATURE = types.SimpleNamespace(name="serving_default")


def _run(scheduler, servable, x):
  return lambda: scheduler.run(servable, SIGNATURE, {"x": x}, (), len(x))


def test_padding_uses_each_tasks_first_element_and_allowed_sizes():
  scheduler = BatchScheduler(config.BatchingConfig(
      max_batch_size=4, batch_timeout_micros=200_000, num_batch_threads=1,
      allowed_batch_sizes=(2, 4), pad_variable_length_inputs=True))
  servable = _FakeServable()
  a = np.array([[7, 1, 2, 3]], np.int64)
  b = np.array([[5, 8, 8], [6, 9, 9]], np.int64)
  try:
    out_a, out_b = _concurrently([_run(scheduler, servable, a),
                                  _run(scheduler, servable, b)])
  finally:
    scheduler.stop()
  (merged,) = servable.calls
  # 3 rows padded to the allowed size 4 by repeating row 0; b's short rows
  # padded with b's first element (TF Serving's rule).
  rows = {tuple(r) for r in merged["x"][:3]}
  assert rows == {(7, 1, 2, 3), (5, 8, 8, 5), (6, 9, 9, 5)}
  assert merged["x"].shape == (4, 4)
  np.testing.assert_array_equal(out_a["y"], a * 10)
  np.testing.assert_array_equal(out_b["y"][:, :3], b * 10)


def test_padding_merges_only_lengths_within_a_power_of_two():
  scheduler = BatchScheduler(config.BatchingConfig(
      max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1,
      pad_variable_length_inputs=True))
  servable = _FakeServable()
  short, similar, long = (np.ones([1, t], np.int64) for t in (5, 8, 100))
  try:
    outputs = _concurrently([_run(scheduler, servable, x)
                             for x in (short, similar, long)])
  finally:
    scheduler.stop()
  # 5 and 8 share a batch (padded to 8); 100 runs apart instead of padding
  # both of them to 100.
  assert sorted(c["x"].shape for c in servable.calls) == [(1, 100), (2, 8)]
  for x, out in zip((short, similar, long), outputs):
    np.testing.assert_array_equal(out["y"][:, :x.shape[1]], x * 10)


def test_full_queue_is_unavailable_and_oversized_request_invalid():
  scheduler = BatchScheduler(config.BatchingConfig(
      max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1))
  servable = _FakeServable(delay=0.5)
  x = np.array([[1]], np.int64)
  try:
    first = threading.Thread(target=_run(scheduler, servable, x))
    first.start()
    assert servable.running.wait(10)  # The only batch thread is now busy.
    results = _concurrently([_run(scheduler, servable, x) for _ in range(3)])
    first.join()
    with pytest.raises(ServingError) as error:
      scheduler.run(servable, SIGNATURE, {"x": np.ones([2, 1], np.int64)},
                    (), 2)
  finally:
    scheduler.stop()
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert "max_batch_size=1" in error.value.message
  unavailable = [r for r in results if isinstance(r, ServingError)]
  served = [r for r in results if isinstance(r, dict)]
  # One batch waits in the queue (then runs), the others are refused.
  assert len(served) == 1 and len(unavailable) == 2
  assert all(e.code == grpc.StatusCode.UNAVAILABLE and
             "max_enqueued_batches" in e.message for e in unavailable)
