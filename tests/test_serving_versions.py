"""Versions: hot swap under load, version policies, warmup, draining."""
import json
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

import serving_testlib as tl
from tf_genrec.serving import client_lib, config
from tf_genrec.serving.errors import ServingError
from tf_genrec.serving.servable import Servable

State = get_model_status_pb2.ModelVersionStatus.State


def _status(channel, name):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = name
  response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
      request, 10)
  return {s.version: (s.state, s.status.error_message)
          for s in response.model_version_status}


def test_new_version_swaps_in_without_failed_requests(tmp_path):
  tl.export_toy_model(str(tmp_path), 1)
  inputs = tl.sample_inputs(batch=2, seed=1)
  with tl.running_server(config.single_model_config("toy", str(tmp_path)),
                         file_system_poll_wait_seconds=0.1) as (_, channel):
    stub = tl.prediction_stub(channel)
    request = client_lib.build_predict_request(inputs, "toy")
    versions, errors, stop = [], [], threading.Event()

    def loop():
      while not stop.is_set():
        try:
          versions.append(stub.Predict(request, 10).model_spec.version.value)
        except grpc.RpcError as e:
          errors.append(e)

    clients = [threading.Thread(target=loop) for _ in range(2)]
    for client in clients:
      client.start()
    time.sleep(0.5)
    path2 = tl.export_toy_model(str(tmp_path), 2,
                                warmup_inputs=[inputs], model_name="toy")
    deadline = time.monotonic() + 60
    while (not versions or versions[-1] != 2) and time.monotonic() < deadline:
      time.sleep(0.05)
    time.sleep(0.3)
    stop.set()
    for client in clients:
      client.join()
    assert not errors, errors[0]
    assert versions[0] == 1 and versions[-1] == 2
    first_2 = versions.index(2)
    assert set(versions[:first_2]) == {1}
    response = client_lib.response_to_numpy(stub.Predict(request, 10))
    for key, value in tl.in_process(path2, inputs).items():
      np.testing.assert_array_equal(response[key], value)
    deadline = time.monotonic() + 10
    while _status(channel, "toy")[1][0] != State.END:
      assert time.monotonic() < deadline, "version 1 was never unloaded"
      time.sleep(0.05)
    assert _status(channel, "toy")[2][0] == State.AVAILABLE


def test_version_policies_and_failed_warmup(tmp_path):
  base = tmp_path / "toy"
  for version in (1, 2, 3):
    tl.export_toy_model(str(base), version)
  bad = tl.sample_inputs(batch=1)
  bad["lengths"] = np.array([99], np.int32)
  broken_base = tmp_path / "broken"
  tl.export_toy_model(str(broken_base), 1, warmup_inputs=[bad])
  model_config = model_server_config_pb2.ModelServerConfig()
  models = model_config.model_config_list.config
  models.add(name="all", base_path=str(base)).model_version_policy.all.SetInParent()
  models.add(name="specific", base_path=str(base)).model_version_policy.specific.versions[:] = [1, 3]
  models.add(name="latest2", base_path=str(base)).model_version_policy.latest.num_versions = 2
  models.add(name="default", base_path=str(base))
  models.add(name="broken", base_path=str(broken_base))
  inputs = tl.sample_inputs(seed=2)
  with tl.running_server(model_config) as (_, channel):
    stub = tl.prediction_stub(channel)
    expected = {"all": {1, 2, 3}, "specific": {1, 3}, "latest2": {2, 3},
                "default": {3}}
    for name, versions in expected.items():
      status = _status(channel, name)
      assert {v for v, (s, _) in status.items() if s == State.AVAILABLE} == (
          versions), name
      latest = stub.Predict(client_lib.build_predict_request(inputs, name), 10)
      assert latest.model_spec.version.value == 3
      pinned = stub.Predict(client_lib.build_predict_request(
          inputs, name, version=min(versions)), 10)
      assert pinned.model_spec.version.value == min(versions)
    state, message = _status(channel, "broken")[1]
    assert state == State.END and "lengths must be <= T" in message
    with pytest.raises(grpc.RpcError) as error:
      stub.Predict(client_lib.build_predict_request(inputs, "broken"), 10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_unload_waits_for_in_flight_requests(tmp_path):
  path = tl.export_toy_model(str(tmp_path), 1)
  servable = Servable("toy", 1, path)
  servable.acquire()
  retiring = threading.Thread(target=servable.retire)
  retiring.start()
  time.sleep(0.3)
  assert retiring.is_alive()  # Blocked on the in-flight request.
  signature = servable.signature("")
  inputs = tl.sample_inputs()
  outputs = servable.run(signature, inputs)  # Still runs while draining.
  np.testing.assert_array_equal(outputs["item_ids"],
                                tl.in_process(path, inputs)["item_ids"])
  with pytest.raises(ServingError, match="unloading"):
    servable.acquire()
  servable.release()
  retiring.join(10)
  assert not retiring.is_alive()


def test_model_config_file_is_polled(tmp_path):
  for name in ("a", "b"):
    tl.export_toy_model(str(tmp_path / name), 1)
  config_file = tmp_path / "models.config"
  entry = 'config {{ name: "{0}" base_path: "{1}" model_platform: "tensorflow" }}'
  config_file.write_text("model_config_list { %s }" %
                         entry.format("a", tmp_path / "a"))
  model_config = config.read_model_server_config(str(config_file))
  inputs = tl.sample_inputs()
  with tl.running_server(model_config, model_config_file=str(config_file),
                         model_config_file_poll_wait_seconds=0.1) as (
                             _, channel):
    stub = tl.prediction_stub(channel)
    request = client_lib.build_predict_request(inputs, "b")
    with pytest.raises(grpc.RpcError):
      stub.Predict(request, 10)
    config_file.write_text("model_config_list { %s %s }" % (
        entry.format("a", tmp_path / "a"), entry.format("b", tmp_path / "b")))
    deadline = time.monotonic() + 30
    while True:
      try:
        assert stub.Predict(request, 10).model_spec.name == "b"
        break
      except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        assert time.monotonic() < deadline, "model b never appeared"
        time.sleep(0.05)


def test_health_follows_availability(tmp_path):
  base = tmp_path / "toy"
  base.mkdir()
  with tl.running_server(config.single_model_config("toy", str(base)),
                         file_system_poll_wait_seconds=0.1) as (_, channel):
    health = health_pb2_grpc.HealthStub(channel)

    def check():
      return health.Check(health_pb2.HealthCheckRequest(service="toy"),
                          10).status

    assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
    tl.export_toy_model(str(base), 1)
    deadline = time.monotonic() + 30
    while check() != health_pb2.HealthCheckResponse.SERVING:
      assert time.monotonic() < deadline, "never became SERVING"
      time.sleep(0.05)


def test_rest_predict_pins_one_servable_across_an_unload(tmp_path):
  """An unload right after REST's version lookup must not fail the request
  (the version it resolved is held until the answer is computed)."""
  base = str(tmp_path)
  tl.export_toy_model(base, 1)
  with tl.running_server(config.single_model_config("toy", base),
                         file_system_poll_wait_seconds=0) as (server, _):
    tl.export_toy_model(base, 2)
    manager, resolve = server.manager, server.manager.resolve
    polls = []

    def resolve_then_unload(*args, **kwargs):
      servable = resolve(*args, **kwargs)
      if not polls:  # Unload version 1 right after the first lookup.
        polls.append(threading.Thread(target=manager.poll))
        polls[0].start()
        deadline = time.monotonic() + 30
        while 1 in manager._models["toy"].servables:  # pylint: disable=protected-access
          assert time.monotonic() < deadline
          time.sleep(0.01)
      return servable

    manager.resolve = resolve_then_unload
    body = {"inputs": {k: v.tolist() for k, v in tl.sample_inputs().items()}}
    request = urllib.request.Request(
        f"http://localhost:{server.rest_port}/v1/models/toy:predict",
        json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
      outputs = json.loads(response.read())["outputs"]
    polls[0].join(30)
    # Version 1 answered (item ids carry the version in their millions).
    assert outputs["item_ids"][0][0] // 1_000_000 == 1


def test_stuck_request_does_not_block_other_models(tmp_path):
  for name in ("a", "b"):
    tl.export_toy_model(str(tmp_path / name), 1)
  model_config = model_server_config_pb2.ModelServerConfig()
  for name in ("a", "b"):
    model_config.model_config_list.config.add(
        name=name, base_path=str(tmp_path / name), model_platform="tensorflow")
  # The timeout outlasts loading b's version 2 on a loaded machine, so a's
  # version 1 is still waiting when the poll returns.
  with tl.running_server(model_config, file_system_poll_wait_seconds=0,
                         unload_timeout_seconds=10.0) as (server, channel):
    stuck = server.manager.resolve("a")  # A request that never finishes.
    tl.export_toy_model(str(tmp_path / "a"), 2)
    tl.export_toy_model(str(tmp_path / "b"), 2)
    poll = threading.Thread(target=server.manager.poll)
    poll.start()
    poll.join(20)
    assert not poll.is_alive()  # Not waiting on a's stuck version 1.
    assert _status(channel, "b")[2][0] == State.AVAILABLE
    assert _status(channel, "a")[1][0] == State.UNLOADING
    deadline = time.monotonic() + 30  # unload_timeout_seconds, then END.
    while _status(channel, "a")[1][0] != State.END:
      assert time.monotonic() < deadline
      time.sleep(0.05)
    stuck.release()
