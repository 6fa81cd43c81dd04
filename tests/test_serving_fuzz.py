"""Fuzzing the request decoding (bounded; tools/fuzz_serving.py runs long):
every malformed request is a clean status, never a crash or a hang."""
import grpc
import pytest
from hypothesis import strategies as st
from tensorflow_serving.apis import predict_pb2

import serving_testlib as tl
from tf_genrec.serving import config
from tools import fuzz_serving


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
  base = str(tmp_path_factory.mktemp("toy"))
  tl.export_toy_model(base, 1)
  with tl.running_server(config.single_model_config("toy", base),
                         **fuzz_serving.FUZZ_LIMITS) as (server, channel):
    yield fuzz_serving.make_targets(server, channel)


@pytest.mark.parametrize("name,examples", [
    ("tensor_proto", 200), ("predict_request", 60), ("json_body", 60)])
def test_fuzzed_requests_get_clean_statuses(targets, name, examples):
  strategy, check = targets[name]
  executions, findings = fuzz_serving.run_target(
      strategy, check, seconds=60, live_every=10, max_examples=examples)
  assert findings == []
  assert executions > examples // 2


def test_the_checks_catch_a_crash():
  """The harness reports an unclean status (so zero findings means none)."""
  error = fuzz_serving._Aborted(grpc.StatusCode.INTERNAL, "boom")  # pylint: disable=protected-access

  class Crashing:

    def Predict(self, request, context):  # pylint: disable=invalid-name
      raise error

  executions, findings = fuzz_serving.run_target(
      st.builds(predict_pb2.PredictRequest),  # Nothing to shrink.
      lambda r, live: fuzz_serving.check_predict_request(Crashing(), r),
      seconds=30, live_every=0, max_examples=5)
  assert executions >= 1 and findings and "INTERNAL" in findings[0]
