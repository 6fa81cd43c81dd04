"""The gRPC server with the stock tensorflow_serving.apis stubs on localhost."""
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (classification_pb2,
                                     get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2,
                                     model_management_pb2,
                                     model_service_pb2_grpc, regression_pb2)

import serving_testlib as tl
from tf_genrec.serving import client_lib, config

State = get_model_status_pb2.ModelVersionStatus.State


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("toy"))
  with tl.serving_toy_model(base) as (server, channel, path):
    yield server, channel, path, tmp_path_factory, base


def _predict(channel, inputs, model="toy", **spec):
  request = client_lib.build_predict_request(inputs, model, **spec)
  response = tl.prediction_stub(channel).Predict(request, 10)
  return response, client_lib.response_to_numpy(response)


def test_predict_equals_in_process_call(served):
  _, channel, path, _, _ = served
  inputs = tl.sample_inputs(batch=3, seed=1, beam_width=[3, 5, 1],
                            top_n=[2, 6, 4])
  response, outputs = _predict(channel, inputs)
  expected = tl.in_process(path, inputs)
  assert set(outputs) == {"item_ids", "scores", "semantic_ids"}
  for key, value in expected.items():
    np.testing.assert_array_equal(outputs[key], value)
    assert outputs[key].dtype == value.dtype
  assert response.model_spec.name == "toy"
  assert response.model_spec.version.value == 1
  assert response.model_spec.signature_name == "serving_default"


def test_omitted_optional_inputs_take_signature_defaults(served):
  _, channel, path, _, _ = served
  inputs = tl.sample_inputs(batch=2, seed=2)
  _, outputs = _predict(channel, inputs)
  assert outputs["item_ids"].shape == (2, 4)  # Default top_n = 4.
  assert outputs["semantic_ids"].shape == (2, 2, tl.NUM_LEVELS)  # W = 2.
  for key, value in tl.in_process(path, inputs).items():
    np.testing.assert_array_equal(outputs[key], value)


def test_version_and_label_and_output_filter(served):
  _, channel, path, _, _ = served
  inputs = tl.sample_inputs(seed=3)
  request = client_lib.build_predict_request(inputs, "toy", version_label="stable")
  request.output_filter.append("scores")
  response = tl.prediction_stub(channel).Predict(request, 10)
  assert list(response.outputs) == ["scores"]
  assert response.model_spec.version.value == 1
  _, outputs = _predict(channel, inputs, version=1)
  np.testing.assert_array_equal(outputs["scores"],
                                tl.in_process(path, inputs)["scores"])


def _with(inputs, **changes):
  inputs = dict(inputs)
  for key, value in changes.items():
    if value is None:
      del inputs[key]
    else:
      inputs[key] = value
  return inputs


GOOD = tl.sample_inputs(batch=2, length=4, seed=4)
BAD_REQUESTS = [
    ("missing input", _with(GOOD, lengths=None), {},
     grpc.StatusCode.INVALID_ARGUMENT, "'lengths'"),
    ("extra input", _with(GOOD, user_age=np.array([3, 4], np.int32)), {},
     grpc.StatusCode.INVALID_ARGUMENT, "'user_age'"),
    ("wrong dtype", _with(GOOD, item_ids=GOOD["item_ids"].astype(np.int32)),
     {}, grpc.StatusCode.INVALID_ARGUMENT, "'item_ids' must be int64"),
    ("wrong rank", _with(GOOD, lengths=GOOD["lengths"][:, None]), {},
     grpc.StatusCode.INVALID_ARGUMENT, "'lengths' must have rank 1"),
    ("batch mismatch", _with(GOOD, request_time=np.zeros([3], np.int64)), {},
     grpc.StatusCode.INVALID_ARGUMENT, "'request_time' has batch size 3"),
    ("negative lengths", _with(GOOD, lengths=np.array([-1, 2], np.int32)), {},
     grpc.StatusCode.INVALID_ARGUMENT, "lengths must be >= 0"),
    ("lengths > T", _with(GOOD, lengths=np.array([5, 2], np.int32)), {},
     grpc.StatusCode.INVALID_ARGUMENT, "lengths must be <= T"),
    ("beam_width > max", _with(GOOD, beam_width=np.array([9, 1], np.int32)),
     {}, grpc.StatusCode.INVALID_ARGUMENT, "beam_width must be <= "),
    ("unknown model", GOOD, {"model": "nope"}, grpc.StatusCode.NOT_FOUND,
     "'nope'"),
    ("unknown version", GOOD, {"version": 7}, grpc.StatusCode.NOT_FOUND,
     "version 7"),
    ("unknown label", GOOD, {"version_label": "canary"},
     grpc.StatusCode.INVALID_ARGUMENT, "'canary'"),
    ("unknown signature", GOOD, {"signature_name": "classify"},
     grpc.StatusCode.INVALID_ARGUMENT, "'classify'"),
]


@pytest.mark.parametrize("inputs,spec,code,message",
                         [r[1:] for r in BAD_REQUESTS],
                         ids=[r[0] for r in BAD_REQUESTS])
def test_bad_request_gets_status_naming_the_field(served, inputs, spec, code,
                                                  message):
  _, channel, path, _, _ = served
  with pytest.raises(grpc.RpcError) as error:
    _predict(channel, inputs, **spec)
  assert error.value.code() == code
  assert message in error.value.details()
  assert not error.value.details().startswith("Graph execution error")
  # The server keeps serving correct answers afterwards.
  _, outputs = _predict(channel, GOOD)
  np.testing.assert_array_equal(outputs["item_ids"],
                                tl.in_process(path, GOOD)["item_ids"])


def test_malformed_tensor_proto_is_invalid_argument(served):
  server, channel, _, _, _ = served
  request = client_lib.build_predict_request(GOOD, "toy")
  request.inputs["item_ids"].tensor_content = (
      request.inputs["item_ids"].tensor_content[:-3])
  before = _error_count(server, "INVALID_ARGUMENT")
  with pytest.raises(grpc.RpcError) as error:
    tl.prediction_stub(channel).Predict(request, 10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "'item_ids'" in error.value.details()
  assert _error_count(server, "INVALID_ARGUMENT") == before + 1


def _error_count(server, status):
  prefix = ('tf_genrec_serving_request_count{model_name="toy",api="predict",'
            f'status="{status}"}} ')
  for line in server.metrics.render().splitlines():
    if line.startswith(prefix):
      return int(line[len(prefix):])
  return 0


def test_get_model_metadata_lists_the_signature(served):
  _, channel, _, _, _ = served
  request = get_model_metadata_pb2.GetModelMetadataRequest(
      metadata_field=["signature_def"])
  request.model_spec.name = "toy"
  response = tl.prediction_stub(channel).GetModelMetadata(request, 10)
  assert response.model_spec.version.value == 1
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  assert response.metadata["signature_def"].Unpack(signature_map)
  signature = signature_map.signature_def["serving_default"]
  assert set(signature.inputs) == {"item_ids", "timestamps", "action_types",
                                   "lengths", "request_time", "beam_width",
                                   "top_n"}
  assert set(signature.outputs) == {"item_ids", "scores", "semantic_ids"}
  assert set(signature.defaults) == {"beam_width", "top_n"}
  request.metadata_field[:] = ["graph"]
  with pytest.raises(grpc.RpcError) as error:
    tl.prediction_stub(channel).GetModelMetadata(request, 10)
  assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "metadata_field" in error.value.details()


@pytest.mark.parametrize("method,request_class", [
    ("Classify", classification_pb2.ClassificationRequest),
    ("Regress", regression_pb2.RegressionRequest),
    ("MultiInference", inference_pb2.MultiInferenceRequest),
])
def test_classify_regress_multiinference_unimplemented(served, method,
                                                       request_class):
  _, channel, _, _, _ = served
  with pytest.raises(grpc.RpcError) as error:
    getattr(tl.prediction_stub(channel), method)(request_class(), 10)
  assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_model_status_and_health(served):
  _, channel, _, _, _ = served
  stub = model_service_pb2_grpc.ModelServiceStub(channel)
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = "toy"
  (status,) = stub.GetModelStatus(request, 10).model_version_status
  assert (status.version, status.state, status.status.error_code) == (
      1, State.AVAILABLE, 0)
  request.model_spec.name = "nope"
  with pytest.raises(grpc.RpcError) as error:
    stub.GetModelStatus(request, 10)
  assert error.value.code() == grpc.StatusCode.NOT_FOUND
  health = health_pb2_grpc.HealthStub(channel)
  for service in ("", "toy"):
    assert health.Check(health_pb2.HealthCheckRequest(service=service),
                        10).status == health_pb2.HealthCheckResponse.SERVING


def test_reload_config_adds_and_removes_a_model(served):
  _, channel, _, tmp_path_factory, base = served
  other_base = tmp_path_factory.mktemp("other")
  other_path = tl.export_toy_model(str(other_base), 5)
  stub = model_service_pb2_grpc.ModelServiceStub(channel)
  both = config.single_model_config("toy", base)
  both.model_config_list.config[0].version_labels["stable"] = 1
  both.model_config_list.config.add(
      name="other", base_path=str(other_base), model_platform="tensorflow")
  response = stub.HandleReloadConfigRequest(
      model_management_pb2.ReloadConfigRequest(config=both), 60)
  assert response.status.error_code == 0, response.status.error_message
  inputs = tl.sample_inputs(seed=5)
  reply, outputs = _predict(channel, inputs, model="other")
  assert reply.model_spec.version.value == 5
  np.testing.assert_array_equal(outputs["item_ids"],
                                tl.in_process(other_path, inputs)["item_ids"])
  # Removing it again: the model is gone, "toy" still serves.
  del both.model_config_list.config[1]
  response = stub.HandleReloadConfigRequest(
      model_management_pb2.ReloadConfigRequest(config=both), 60)
  assert response.status.error_code == 0, response.status.error_message
  with pytest.raises(grpc.RpcError) as error:
    _predict(channel, inputs, model="other")
  assert error.value.code() == grpc.StatusCode.NOT_FOUND
  _predict(channel, inputs, model="toy")


def test_reload_with_label_to_missing_version_fails(served):
  _, channel, _, _, base = served
  bad = config.single_model_config("toy", base)
  bad.model_config_list.config[0].version_labels["stable"] = 1
  bad.model_config_list.config[0].version_labels["canary"] = 9
  response = model_service_pb2_grpc.ModelServiceStub(
      channel).HandleReloadConfigRequest(
          model_management_pb2.ReloadConfigRequest(config=bad), 60)
  assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
  assert "canary" in response.status.error_message
  # The rejected label is not applied; the old one still works.
  for label, code in (("canary", grpc.StatusCode.INVALID_ARGUMENT),
                      ("stable", None)):
    try:
      _predict(channel, GOOD, version_label=label)
      assert code is None
    except grpc.RpcError as error:
      assert error.code() == code
