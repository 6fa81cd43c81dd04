"""REST API (TF Serving JSON) and the Prometheus metrics endpoint."""
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

import serving_testlib as tl


@pytest.fixture(scope="module")
def rest(tmp_path_factory):
  with tl.serving_toy_model(str(tmp_path_factory.mktemp("toy"))) as (
      server, _, path):
    yield f"http://localhost:{server.rest_port}", path


def _call(url, body=None):
  data = None if body is None else json.dumps(body).encode()
  try:
    with urllib.request.urlopen(url, data, timeout=30) as response:
      return response.status, response.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


@pytest.mark.parametrize("suffix", ["", "/versions/1", "/labels/stable"])
def test_status(rest, suffix):
  url, _ = rest
  code, body = _call(f"{url}/v1/models/toy{suffix}")
  assert code == 200
  assert json.loads(body) == {"model_version_status": [{
      "version": "1", "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}]}


def test_metadata(rest):
  url, _ = rest
  code, body = _call(f"{url}/v1/models/toy/metadata")
  assert code == 200
  metadata = json.loads(body)
  assert metadata["model_spec"]["version"] == "1"
  signature = metadata["metadata"]["signature_def"]["signature_def"][
      "serving_default"]
  assert set(signature["inputs"]) >= {"item_ids", "lengths", "beam_width"}
  assert signature["method_name"] == "tensorflow/serving/predict"


def test_predict_row_and_columnar_formats(rest):
  url, path = rest
  inputs = tl.sample_inputs(batch=2, seed=3, top_n=[3, 5])
  expected = tl.in_process(path, inputs)
  instances = [{k: v[i].tolist() for k, v in inputs.items()}
               for i in range(2)]
  code, body = _call(f"{url}/v1/models/toy:predict", {"instances": instances})
  assert code == 200, body
  predictions = json.loads(body)["predictions"]
  for i, row in enumerate(predictions):
    np.testing.assert_array_equal(row["item_ids"], expected["item_ids"][i])
    np.testing.assert_allclose(row["scores"], expected["scores"][i])
    np.testing.assert_array_equal(row["semantic_ids"],
                                  expected["semantic_ids"][i])
  columns = {k: v.tolist() for k, v in inputs.items()}
  code, body = _call(f"{url}/v1/models/toy/versions/1:predict",
                     {"signature_name": "serving_default", "inputs": columns})
  assert code == 200, body
  outputs = json.loads(body)["outputs"]
  np.testing.assert_array_equal(outputs["item_ids"], expected["item_ids"])


@pytest.mark.parametrize("path,body,code,message", [
    ("/v1/models/nope", None, 404, "'nope'"),
    ("/v1/models/toy/versions/4", None, 404, "version 4"),
    ("/v1/models/toy:predict", {"instances": [{"item_ids": [1]}]}, 400,
     "'timestamps'"),
    ("/v1/models/toy:predict", {"inputs": {
        "item_ids": [[1.5]], "timestamps": [[1]], "action_types": [[0]],
        "lengths": [1], "request_time": [1]}}, 400, "'item_ids' must be int64"),
    ("/v1/models/toy:predict", {"inputs": {
        "item_ids": [[1]], "timestamps": [[1]], "action_types": [[0]],
        "lengths": [2], "request_time": [1]}}, 400, "lengths must be <= T"),
    ("/v1/models/toy:predict", {"rows": []}, 400, '"instances"'),
])
def test_errors(rest, path, body, code, message):
  url, _ = rest
  got_code, got_body = _call(url + path, body)
  assert got_code == code
  assert message in json.loads(got_body)["error"]


def test_metrics_endpoint_counts_requests_by_status(rest):
  url, _ = rest
  _call(f"{url}/v1/models/toy:predict", {"instances": [{"item_ids": [1]}]})
  code, text = _call(url + tl.PROMETHEUS_PATH)
  assert code == 200
  assert ('tf_genrec_serving_request_count{model_name="toy",'
          'api="rest_predict",status="INVALID_ARGUMENT"}') in text
  assert ("# TYPE tf_genrec_serving_request_latency_seconds histogram"
          in text)
  assert 'le="+Inf"' in text
