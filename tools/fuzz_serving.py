"""Fuzzes the server's request decoding with hypothesis, for a time budget.

Targets (each gets --seconds_per_target):
  tensor_proto     random TensorProtos -> tensors.declared + to_numpy
  predict_request  random PredictRequests -> PredictionService.Predict
                   (decode, admission, the model, response encoding), every
                   --live_every-th one also over gRPC to a live server
  json_body        random JSON bodies (and raw bytes) -> REST :predict,
                   every --live_every-th one also over HTTP
A finding is a crash (any exception but a clean rejection: INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, NOT_FOUND, FAILED_PRECONDITION), a decoded tensor whose
shape is not the declared one, or a hang (--hang_seconds per example; the
process then dumps its stacks and exits 1). The report lists executions and
findings per target:

  nice -n 10 python -m tools.fuzz_serving --model_base_path=runs/fuzz/toy \
      --seconds_per_target=600 --output_json=runs/fuzz/report.json
"""
import faulthandler
import http.client
import json
import time

import grpc
import numpy as np
from absl import app, flags, logging
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2
from tqdm import tqdm

from tf_genrec.serving import config, grpc_server, rest, tensors
from tf_genrec.serving.errors import ServingError

FLAGS = flags.FLAGS

CLEAN_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT,
                         grpc.StatusCode.RESOURCE_EXHAUSTED,
                         grpc.StatusCode.NOT_FOUND,
                         grpc.StatusCode.FAILED_PRECONDITION})
# Small enough that random shapes reach every limit.
FUZZ_LIMITS = dict(max_batch_rows=8, max_history_length=32,
                   max_context_length=8, max_tensor_elements=512,
                   max_request_bytes=1 << 20)
ROUND_EXAMPLES = 200  # Per hypothesis run; runs repeat until the budget ends.
INPUT_NAMES = ("item_ids", "timestamps", "action_types", "lengths",
               "request_time", "beam_width", "top_n", "context_ids", "bogus",
               "")

_I64 = st.integers(-2**63, 2**63 - 1)
_VALUES = {
    "int_val": st.lists(st.integers(-2**31, 2**31 - 1), max_size=12),
    "int64_val": st.lists(_I64, max_size=12),
    "uint32_val": st.lists(st.integers(0, 2**32 - 1), max_size=12),
    "uint64_val": st.lists(st.integers(0, 2**64 - 1), max_size=12),
    "float_val": st.lists(st.floats(width=32), max_size=12),
    "double_val": st.lists(st.floats(), max_size=12),
    "bool_val": st.lists(st.booleans(), max_size=12),
    "half_val": st.lists(st.integers(-2**31, 2**31 - 1), max_size=12),
    "string_val": st.lists(st.binary(max_size=8), max_size=12),
    "scomplex_val": st.lists(st.floats(width=32), max_size=12),
    "dcomplex_val": st.lists(st.floats(), max_size=12),
}
_DIM = st.one_of(st.integers(-3, 8), _I64,
                 st.sampled_from([2**31, 2**40, 2**62]))


@st.composite
def random_tensor_protos(draw):
  """Anything a client can put in a TensorProto's dtype, shape and values."""
  proto = tensor_pb2.TensorProto()
  proto.dtype = draw(st.one_of(
      st.sampled_from(sorted(types_pb2.DataType.values())),
      st.integers(-5, 400)))
  for size in draw(st.lists(_DIM, max_size=5)):
    proto.tensor_shape.dim.add(size=size)
  proto.tensor_shape.unknown_rank = draw(st.booleans()) and draw(
      st.booleans()) and draw(st.booleans())
  content = draw(st.one_of(st.just(b""), st.binary(max_size=96)))
  if content:
    proto.tensor_content = content
  for field in draw(st.sets(st.sampled_from(sorted(_VALUES)), max_size=2)):
    getattr(proto, field).extend(draw(_VALUES[field]))
  return proto


@st.composite
def mutated_valid_protos(draw):
  """A well-formed tensor, then maybe one field of it broken."""
  array = draw(hnp.arrays(
      st.sampled_from([np.int32, np.int64, np.float32]),
      hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
      elements=st.integers(-3, 5000)))
  proto = tensors.to_proto(array)
  mutation = draw(st.sampled_from(["none", "dtype", "dim", "content",
                                   "typed"]))
  if mutation == "dtype":
    proto.dtype = draw(st.sampled_from([types_pb2.DT_INT32,
                                        types_pb2.DT_INT64,
                                        types_pb2.DT_STRING,
                                        types_pb2.DT_HALF]))
  elif mutation == "dim" and proto.tensor_shape.dim:
    dim = draw(st.integers(0, len(proto.tensor_shape.dim) - 1))
    proto.tensor_shape.dim[dim].size = draw(_DIM)
  elif mutation == "content":
    proto.tensor_content = draw(st.binary(max_size=64))
  elif mutation == "typed":
    proto.ClearField("tensor_content")
    proto.int64_val.extend(draw(_VALUES["int64_val"]))
  return proto


def tensor_protos():
  return st.one_of(random_tensor_protos(), mutated_valid_protos())


@st.composite
def predict_requests(draw, model_name):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = draw(st.sampled_from([model_name, model_name,
                                                  "nope", ""]))
  if draw(st.booleans()) and draw(st.booleans()):
    request.model_spec.version.value = draw(st.integers(-2, 3))
  request.model_spec.signature_name = draw(st.sampled_from(
      ["", "", "serving_default", "nope"]))
  names = draw(st.lists(st.sampled_from(INPUT_NAMES), max_size=7,
                        unique=True))
  rows = draw(st.integers(0, 10))
  for name in names:
    if draw(st.booleans()):
      request.inputs[name].CopyFrom(draw(tensor_protos()))
    else:  # Plausible: the signature's shape family, random sizes/values.
      width = draw(st.integers(0, 40))
      shape = ((rows, width) if name in ("item_ids", "timestamps",
                                         "action_types", "context_ids")
               else (rows,))
      dtype = (np.int64 if name in ("item_ids", "timestamps", "request_time")
               else np.int32)
      array = draw(hnp.arrays(dtype, shape, elements=st.integers(-2, 60)))
      request.inputs[name].CopyFrom(tensors.to_proto(array))
  request.output_filter.extend(draw(st.lists(st.sampled_from(
      ["item_ids", "scores", "semantic_ids", "nope"]), max_size=2)))
  return request


_JSON_LEAF = st.one_of(st.none(), st.booleans(), _I64,
                       st.integers(-2**70, 2**70), st.floats(),
                       st.text(max_size=6))


def _nested(leaf):
  return st.recursive(leaf, lambda inner: st.lists(inner, max_size=6),
                      max_leaves=40)


@st.composite
def json_bodies(draw):
  """Bytes of a :predict body: mostly the row/columnar forms, some junk."""
  kind = draw(st.sampled_from(["inputs", "instances", "json", "bytes"]))
  if kind == "bytes":
    return draw(st.binary(max_size=200))
  if kind == "json":
    value = draw(st.recursive(
        _JSON_LEAF, lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from(INPUT_NAMES + (
                "inputs", "instances", "signature_name")), inner,
                            max_size=4)), max_leaves=30))
    return json.dumps(value).encode()
  columns = draw(st.dictionaries(st.sampled_from(INPUT_NAMES),
                                 _nested(st.integers(-3, 60)), max_size=7))
  body = {}
  if draw(st.booleans()):
    body["signature_name"] = draw(st.one_of(st.sampled_from(
        ["", "serving_default", "nope"]), _JSON_LEAF))
  if kind == "inputs":
    body["inputs"] = columns
  else:
    rows = draw(st.integers(0, 4))
    body["instances"] = [{k: v for k, v in columns.items()}
                         for _ in range(rows)]
  return json.dumps(body).encode()


class _Aborted(Exception):

  def __init__(self, code, details):
    super().__init__(f"{code}: {details}")
    self.code = code


class _Context:
  """The part of grpc.ServicerContext the servicer uses."""

  def abort(self, code, details):
    raise _Aborted(code, details)


def check_tensor_proto(proto):
  """Decodes one proto; raises AssertionError on a finding."""
  try:
    spec = tensors.declared(proto, "x")
    array = tensors.to_numpy(proto, "x")
  except ServingError as e:
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT and e.message, e
    return
  assert tuple(array.shape) == spec.shape, (array.shape, spec.shape)


def check_predict_request(service, request):
  try:
    response = service.Predict(request, _Context())
  except _Aborted as e:
    assert e.code in CLEAN_CODES, str(e)
    return
  assert response.outputs, response


def check_json_body(server, name, data):
  try:
    answer = rest.predict_body(server, name, None, None, data)
  except ServingError as e:
    assert e.code in CLEAN_CODES, f"{e.code}: {e.message}"
    return
  json.dumps(answer)


def check_live_grpc(stub, request):
  try:
    stub.Predict(request, 30)
  except grpc.RpcError as e:
    assert e.code() in CLEAN_CODES, f"{e.code()}: {e.details()}"


def check_live_rest(port, name, data):
  connection = http.client.HTTPConnection("localhost", port, timeout=30)
  try:
    connection.request("POST", f"/v1/models/{name}:predict", data)
    response = connection.getresponse()
    answer = response.read()
  finally:
    connection.close()
  assert response.status in (200, 400, 404, 429), (response.status, answer)
  json.loads(answer)


def make_targets(server, channel):
  """name -> (strategy, check(example, live))."""
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  service = grpc_server.PredictionService(server)
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
  name = server.manager.model_names()[0]

  def predict(request, live):
    check_predict_request(service, request)
    if live:
      check_live_grpc(stub, request)

  def body(data, live):
    check_json_body(server, name, data)
    if live:
      check_live_rest(server.rest_port, name, data)

  return {
      "tensor_proto": (tensor_protos(), lambda p, live: check_tensor_proto(p)),
      "predict_request": (predict_requests(name), predict),
      "json_body": (json_bodies(), body),
  }


def run_target(strategy, check, seconds, live_every, hang_seconds=None,
               max_examples=None):
  """Runs hypothesis on `check` until `seconds` pass (rounds of
  ROUND_EXAMPLES fresh random examples), or once for `max_examples`;
  returns (executions, findings [str])."""
  executions, findings = [0], []
  deadline = time.monotonic() + seconds

  @settings(max_examples=max_examples or ROUND_EXAMPLES, deadline=None,
            database=None, derandomize=False, print_blob=False,
            suppress_health_check=list(HealthCheck))
  @given(strategy)
  def fuzz(example):
    if time.monotonic() > deadline:
      return
    executions[0] += 1
    if hang_seconds:
      faulthandler.dump_traceback_later(hang_seconds, exit=True)
    try:
      check(example, live_every and executions[0] % live_every == 0)
    finally:
      if hang_seconds:
        faulthandler.cancel_dump_traceback_later()

  while time.monotonic() < deadline:
    try:
      fuzz()  # pylint: disable=no-value-for-parameter
    except Exception as e:  # pylint: disable=broad-except
      findings.append(f"{type(e).__name__}: {str(e)[:2000]}")
      logging.error("finding: %s", findings[-1])
    if max_examples:
      break
  return executions[0], findings


def _define_flags():
  """Only when run as a tool: tests import this module with other tools."""
  flags.DEFINE_string("model_base_path", None,
                      "Versions of the model to serve (e.g. a toy model).")
  flags.DEFINE_string("model_name", "toy", "Name it is served under.")
  flags.DEFINE_list("targets", ["tensor_proto", "predict_request", "json_body"],
                    "Targets to fuzz.")
  flags.DEFINE_float("seconds_per_target", 600, "Time budget per target.")
  flags.DEFINE_integer("live_every", 20, "Every n-th example also goes over "
                       "the network to the running server.")
  flags.DEFINE_float("hang_seconds", 120, "An example running this long is a "
                     "hang.")
  flags.DEFINE_string("output_json", "", "Where the report goes.")
  flags.mark_flag_as_required("model_base_path")


def main(argv):
  del argv
  from tf_genrec.serving.server import ModelServer, ServerOptions
  server = ModelServer(
      config.single_model_config(FLAGS.model_name, FLAGS.model_base_path),
      ServerOptions(port=0, host="localhost", rest_api_ephemeral=True,
                    file_system_poll_wait_seconds=0, **FUZZ_LIMITS)).start()
  channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
  report = {}
  try:
    targets = make_targets(server, channel)
    for name in tqdm(FLAGS.targets, desc="targets"):
      strategy, check = targets[name]
      start = time.monotonic()
      executions, findings = run_target(
          strategy, check, FLAGS.seconds_per_target, FLAGS.live_every,
          FLAGS.hang_seconds)
      report[name] = {"executions": executions, "findings": len(findings),
                      "finding_examples": findings[:10],
                      "seconds": round(time.monotonic() - start, 1)}
      logging.info("%s: %d executions, %d findings in %.0f s", name,
                   executions, len(findings), report[name]["seconds"])
  finally:
    channel.close()
    server.stop(grace=5)
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(report, f, indent=1)
  print(json.dumps({k: {"executions": v["executions"],
                        "findings": v["findings"]}
                    for k, v in report.items()}))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
