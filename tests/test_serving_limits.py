"""Request limits: checked on declared shapes before anything is decoded;
every rejection names the field, its value and the limit."""
import json
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

import serving_testlib as tl
from tf_genrec.serving import client_lib, config, tensors
from tf_genrec.serving.errors import ServingError
from tf_genrec.serving.servable import Servable
from tf_genrec.serving.server import ServerOptions

LIMITS = dict(max_batch_rows=4, max_history_length=64,
              max_tensor_elements=200, max_request_bytes=20_000,
              max_concurrent_rpcs=2, max_rest_connections=2,
              rest_idle_timeout_seconds=2.0)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("toy"))
  path = tl.export_toy_model(base, 1)
  with tl.running_server(config.single_model_config("toy", base),
                         **LIMITS) as (server, channel):
    yield server, channel, path


def _request(inputs):
  return client_lib.build_predict_request(inputs, "toy")


def _declare_huge(request, key, shape, value=7):
  """Replaces input `key` by a tiny proto declaring `shape` with one value."""
  proto = request.inputs[key]
  proto.Clear()
  proto.dtype = tf.int64.as_datatype_enum
  for size in shape:
    proto.tensor_shape.dim.add(size=size)
  proto.int64_val.append(value)
  return request


def _grpc_error(channel, request):
  with pytest.raises(grpc.RpcError) as error:
    tl.prediction_stub(channel).Predict(request, 30)
  return error.value.code(), error.value.details()


def test_typed_values_must_fill_the_declared_shape():
  proto = tf.make_tensor_proto(np.int64(7))
  proto.tensor_shape.dim.add(size=1000)
  proto.tensor_shape.dim.add(size=1000)
  with pytest.raises(ServingError) as error:
    tensors.to_numpy(proto, "item_ids")  # TF would pad it to 10^6 values.
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert ("input 'item_ids': int64_val has 1 values, shape [1000, 1000] "
          "needs 1000000") in error.value.message


def test_negative_dims_are_invalid_argument():
  proto = tensors.to_proto(np.arange(6, dtype=np.int64))
  proto.tensor_shape.Clear()
  proto.tensor_shape.dim.add(size=-2)
  proto.tensor_shape.dim.add(size=-3)  # The product matches the byte count.
  with pytest.raises(ServingError) as error:
    tensors.to_numpy(proto, "item_ids")
  assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert "tensor_shape.dim[0].size=-2 is negative" in error.value.message


def test_name_is_checked_before_the_tensor_is_decoded(limited):
  _, channel, _ = limited
  request = _request(tl.sample_inputs())
  request.inputs["bogus"].CopyFrom(_declare_huge(
      _request(tl.sample_inputs()), "item_ids", [1000, 1000]).inputs[
          "item_ids"])
  code, details = _grpc_error(channel, request)
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert "input 'bogus' is not an input of signature" in details


@pytest.mark.parametrize("inputs,huge,message", [
    (tl.sample_inputs(batch=5, length=2), None,
     "input 'action_types' has 5 rows (dim 0), more than max_batch_rows=4"),
    (tl.sample_inputs(batch=1, length=65), None,
     "input 'action_types' has length 65 (dim 1), more than "
     "max_history_length=64"),
    (tl.sample_inputs(batch=2, length=5), ("item_ids", [2, 10**9]),
     "input 'item_ids' has 2000000000 elements (shape [2, 1000000000]), "
     "more than max_tensor_elements=200"),
    (tl.sample_inputs(batch=2, length=5), ("timestamps", [2, 150]),
     "input 'timestamps' has 300 elements (shape [2, 150]), more than "
     "max_tensor_elements=200"),
], ids=["rows", "history", "declared-huge", "elements"])
def test_limits_are_resource_exhausted_naming_field_value_limit(
    limited, inputs, huge, message):
  server, channel, path = limited
  request = _request(inputs)
  if huge:
    _declare_huge(request, *huge)
  code, details = _grpc_error(channel, request)
  assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert message in details
  # REST gets the same check (429) on its decoded arrays.
  if huge is None:
    status, body = _rest(server, json.dumps(
        {"inputs": {k: v.tolist() for k, v in inputs.items()}}).encode())
    assert status == 429 and message in body
  good = tl.sample_inputs()
  outputs = client_lib.response_to_numpy(
      tl.prediction_stub(channel).Predict(_request(good), 30))
  np.testing.assert_array_equal(outputs["item_ids"],
                                tl.in_process(path, good)["item_ids"])


def test_empty_batch_is_invalid_argument(limited):
  _, channel, _ = limited
  code, details = _grpc_error(channel, _request(tl.sample_inputs(batch=0)))
  assert code == grpc.StatusCode.INVALID_ARGUMENT
  assert "has batch size 0" in details and "at least one row" in details


def test_grpc_message_size_is_limited(limited):
  _, channel, _ = limited
  inputs = tl.sample_inputs(batch=1, length=60)
  inputs["item_ids"] = np.zeros([1, 3000], np.int64)  # 24 kB > 20 kB.
  code, details = _grpc_error(channel, _request(inputs))
  assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert "20000" in details


def _raw_http(port, data, timeout=5.0):
  """Sends raw bytes; returns the whole answer (the server closes)."""
  with socket.create_connection(("localhost", port), timeout=timeout) as s:
    s.sendall(data)
    chunks = []
    while True:
      chunk = s.recv(65536)
      if not chunk:
        return b"".join(chunks).decode()
      chunks.append(chunk)


def _rest(server, body, length=None):
  head = (f"POST /v1/models/toy:predict HTTP/1.1\r\nHost: x\r\n"
          f"Content-Length: {len(body) if length is None else length}\r\n"
          f"Connection: close\r\n\r\n").encode()
  answer = _raw_http(server.rest_port, head + body)
  status = int(answer.split(" ", 2)[1])
  return status, answer.split("\r\n\r\n", 1)[1]


@pytest.mark.parametrize("length,status,message", [
    ("-5", 400, "Content-Length '-5' is not a byte count"),
    ("10000000000", 429, "request body of 10000000000 bytes (Content-Length) "
     "is larger than max_request_bytes=20000"),
])
def test_rest_content_length_is_checked_before_reading(limited, length,
                                                       status, message):
  server, _, _ = limited
  start = time.monotonic()
  got, body = _rest(server, b"{}", length=length)
  assert (got, time.monotonic() - start < 2) == (status, True)
  assert message in body


def test_rest_connections_are_limited(limited):
  server, _, _ = limited
  idle = [socket.create_connection(("localhost", server.rest_port))
          for _ in range(2)]
  try:
    time.sleep(0.2)  # Both now hold a connection thread.
    answer = _raw_http(server.rest_port, b"GET /v1/models/toy HTTP/1.1\r\n"
                       b"Host: x\r\n\r\n")
    assert answer.startswith("HTTP/1.1 503")
    assert "max_rest_connections=2" in answer
  finally:
    for s in idle:
      s.close()
  time.sleep(0.3)
  status, _ = _rest(server, json.dumps({"inputs": {
      k: v.tolist() for k, v in tl.sample_inputs().items()}}).encode())
  assert status == 200


def test_concurrent_rpcs_are_limited(limited, monkeypatch):
  _, channel, _ = limited
  running = threading.Event()
  original = Servable.run

  def slow_run(self, *args, **kwargs):
    running.set()
    time.sleep(1.0)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(Servable, "run", slow_run)
  stub = tl.prediction_stub(channel)
  request = _request(tl.sample_inputs())
  calls = [stub.Predict.future(request, 30) for _ in range(2)]
  assert running.wait(10)
  code, details = _grpc_error(channel, request)  # A third concurrent call.
  assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert "oncurrent" in details
  for call in calls:
    assert call.result().model_spec.version.value == 1


def test_unknown_model_names_share_one_metric_label(limited):
  server, channel, _ = limited
  for name in ("probe-1", "probe-2"):
    request = client_lib.build_predict_request(tl.sample_inputs(), name)
    assert _grpc_error(channel, request)[0] == grpc.StatusCode.NOT_FOUND
  text = server.metrics.render()
  assert "probe-" not in text
  assert ('tf_genrec_serving_request_count{model_name="__unknown__",'
          'api="predict",status="NOT_FOUND"} 2') in text


@pytest.mark.parametrize("field,value", [
    ("max_batch_rows", 0), ("max_request_bytes", 1 << 31),
    ("grace_period_seconds", 0), ("max_rest_connections", -1)])
def test_options_are_validated_in_one_place(field, value):
  with pytest.raises(ValueError, match=f"{field} must be"):
    ServerOptions(**{field: value})
