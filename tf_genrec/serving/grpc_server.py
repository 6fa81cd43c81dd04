"""The TF Serving gRPC API: PredictionService, ModelService, grpc.health.v1."""
import concurrent.futures
import functools

import grpc
from absl import logging
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (get_model_metadata_pb2,
                                     get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tf_genrec.serving import tensors
from tf_genrec.serving.errors import ServingError, invalid


def _spec_args(model_spec):
  """ModelSpec -> (name, version or None, label or None)."""
  choice = model_spec.WhichOneof("version_choice")
  version = model_spec.version.value if choice == "version" else None
  label = model_spec.version_label if choice == "version_label" else None
  return model_spec.name, version, label


def _rpc(method):
  """Maps ServingError (and surprises) to the gRPC status of the call."""

  @functools.wraps(method)
  def wrapper(self, request, context):
    try:
      return method(self, request, context)
    except ServingError as e:
      context.abort(e.code, e.message)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("%s failed", method.__name__)
      context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")

  return wrapper


def _parse_protos(protos, signature):
  """PredictRequest.inputs -> (declared dtypes/shapes, decode)."""
  del signature  # Protos carry their dtypes.
  return ({k: tensors.declared(v, k) for k, v in protos.items()},
          lambda: {k: tensors.to_numpy(v, k) for k, v in protos.items()})


def metadata_response(manager, name, version, label):
  """GetModelMetadataResponse with the SignatureDefMap (also REST's)."""
  with manager.servable(name, version, label) as servable:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = servable.version
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(signature_def)
    response.metadata["signature_def"].Pack(signature_map)
    return response


def status_response(manager, name, version, label):
  """GetModelStatusResponse (also REST's)."""
  response = get_model_status_pb2.GetModelStatusResponse()
  for v, status in manager.status(name, version, label):
    entry = response.model_version_status.add(version=v, state=status.state)
    entry.status.error_code = status.error_code.value[0]
    entry.status.error_message = status.error_message
  return response


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

  def __init__(self, server):
    self._server = server

  @_rpc
  def Predict(self, request, context):
    name, version, label = _spec_args(request.model_spec)
    result = self._server.predict(name, version, label,
                                  request.model_spec.signature_name,
                                  request.inputs,
                                  list(request.output_filter),
                                  parse=_parse_protos)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = result.model_name
    response.model_spec.version.value = result.version
    response.model_spec.signature_name = result.signature_name
    for key, value in result.outputs.items():
      response.outputs[key].CopyFrom(tensors.to_proto(value))
    return response

  @_rpc
  def GetModelMetadata(self, request, context):
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
      raise invalid(f"metadata_field must be ['signature_def'] (the only "
                    f"metadata served), got {fields}")
    return metadata_response(self._server.manager,
                             *_spec_args(request.model_spec))

  def _unimplemented(self, request, context):
    context.abort(grpc.StatusCode.UNIMPLEMENTED,
                  "only Predict and GetModelMetadata are served (the "
                  "recall model has a predict signature only)")

  Classify = Regress = MultiInference = _unimplemented


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

  def __init__(self, server):
    self._server = server

  @_rpc
  def GetModelStatus(self, request, context):
    return status_response(self._server.manager,
                           *_spec_args(request.model_spec))

  @_rpc
  def HandleReloadConfigRequest(self, request, context):
    response = model_management_pb2.ReloadConfigResponse()
    try:
      self._server.reload(request.config)
    except (ServingError, ValueError) as e:
      code = e.code if isinstance(e, ServingError) else (
          grpc.StatusCode.INVALID_ARGUMENT)
      response.status.error_code = code.value[0]
      response.status.error_message = str(e)
    return response


def set_health(health_servicer, manager):
  """'' is SERVING once any model is; each model name by its own state."""
  available = set(manager.available_models())
  for name in manager.model_names():
    health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING
                        if name in available else
                        health_pb2.HealthCheckResponse.NOT_SERVING)
  health_servicer.set("", health_pb2.HealthCheckResponse.SERVING if available
                      else health_pb2.HealthCheckResponse.NOT_SERVING)


def start(server):
  """Binds the gRPC port; returns (grpc.Server, health servicer, port)."""
  options = server.options
  grpc_server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(options.grpc_max_workers),
      options=[("grpc.max_receive_message_length", options.max_request_bytes),
               ("grpc.max_send_message_length", -1)],
      maximum_concurrent_rpcs=options.max_concurrent_rpcs)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionService(server), grpc_server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelService(server), grpc_server)
  health_servicer = health.HealthServicer()
  health_pb2_grpc.add_HealthServicer_to_server(health_servicer, grpc_server)
  address = f"{options.host}:{options.port}"
  ssl = options.ssl_config
  if ssl is None:
    port = grpc_server.add_insecure_port(address)
  else:
    port = grpc_server.add_secure_port(address, grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=ssl.custom_ca.encode() or None,
        require_client_auth=ssl.client_verify))
  if not port:
    raise OSError(f"--port={options.port}: cannot bind")
  grpc_server.start()
  return grpc_server, health_servicer, port
