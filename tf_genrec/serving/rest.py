"""TF Serving's REST API on stdlib http.server (plus the metrics endpoint).

GET  /v1/models/<name>[/versions/<v>|/labels/<l>]            model status
GET  /v1/models/<name>[/versions/<v>|/labels/<l>]/metadata   signature defs
POST /v1/models/<name>[/versions/<v>|/labels/<l>]:predict    predict
  body {"signature_name"?, "instances": [...]} (row format, answered with
  "predictions") or {"signature_name"?, "inputs": {...} | value} (columnar,
  answered with "outputs"), as TF Serving's JSON API (no {"b64": ...}).
GET  <MonitoringConfig prometheus path>                       metrics
"""
import http.server
import json
import re
import threading

import grpc
import numpy as np
from absl import logging
from google.protobuf import json_format

from tf_genrec.serving.errors import (ServingError, exhausted, invalid,
                                     not_found)
from tf_genrec.serving.grpc_server import metadata_response, status_response

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>:predict|/metadata)?$")


def _to_array(key, value, signature):
  """JSON value -> numpy array of the signature's dtype (no silent casts)."""
  try:
    array = np.asarray(value)
  except ValueError as e:
    raise invalid(f"input '{key}' is not a rectangular array: {e}") from e
  if array.dtype == object:
    raise invalid(f"input '{key}' is not a rectangular array")
  if key not in signature.inputs:
    return array  # Validation names it as an unknown input.
  dtype = signature.inputs[key][0]
  if dtype.kind in "iu" and array.dtype.kind not in "iu" and array.size:
    raise invalid(f"input '{key}' must be {dtype.name}, got JSON "
                  f"{array.dtype.name} values")
  if dtype.kind in "SUO":
    return array.astype(object)
  try:
    converted = array.astype(dtype)
  except (TypeError, ValueError) as e:
    raise invalid(f"input '{key}' cannot be converted to {dtype.name}") from e
  if dtype.kind in "iu" and array.size and np.any(converted != array):
    raise invalid(f"input '{key}' has values out of range for {dtype.name}")
  return converted


def _parse_json(body, signature):
  """The request body -> (inputs, decode) for ModelServer.predict: JSON is
  already bounded by max_request_bytes, so it is converted right away."""
  inputs = _inputs_from_json(body, signature)
  return inputs, lambda: inputs


def _inputs_from_json(body, signature):
  """{input name: numpy array} from a row ("instances") or columnar body."""
  if ("instances" in body) == ("inputs" in body):
    raise invalid('request body needs exactly one of "instances" or "inputs"')
  required = [k for k in signature.inputs if k not in signature.defaults]
  if "instances" in body:
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
      raise invalid('"instances" must be a non-empty list')
    if all(isinstance(i, dict) for i in instances):
      keys = set(instances[0])
      for index, instance in enumerate(instances):
        if set(instance) != keys:
          raise invalid(f"instances[{index}] has inputs {sorted(instance)}, "
                        f"instances[0] has {sorted(keys)}")
      return {k: _to_array(k, [i[k] for i in instances], signature)
              for k in keys}
    if len(required) != 1:
      raise invalid(f'"instances" must be objects naming the inputs '
                    f'{sorted(signature.inputs)}')
    return {required[0]: _to_array(required[0], instances, signature)}
  inputs = body["inputs"]
  if isinstance(inputs, dict):
    return {k: _to_array(k, v, signature) for k, v in inputs.items()}
  if len(required) != 1:
    raise invalid(f'"inputs" must be an object naming the inputs '
                  f'{sorted(signature.inputs)}')
  return {required[0]: _to_array(required[0], inputs, signature)}


def _json_value(array):
  if array.dtype.kind in "SO":
    return np.vectorize(lambda b: b.decode("utf-8", "replace")
                        if isinstance(b, bytes) else b,
                        otypes=[object])(array).tolist()
  return array.tolist()


def _predict_json(result, row_format):
  outputs = {k: _json_value(v) for k, v in result.outputs.items()}
  if not row_format:
    return {"outputs": (next(iter(outputs.values())) if len(outputs) == 1
                        else outputs)}
  if len(outputs) == 1:
    return {"predictions": next(iter(outputs.values()))}
  rows = len(next(iter(result.outputs.values())))
  return {"predictions": [{k: v[i] for k, v in outputs.items()}
                          for i in range(rows)]}


def predict_body(model_server, name, version, label, data):
  """A :predict request's body (bytes) -> the JSON answer (a dict)."""
  try:
    body = json.loads(data or b"null")
  except (ValueError, RecursionError) as e:
    raise invalid(f"request body is not JSON: {type(e).__name__}: "
                  f"{str(e)[:200]}") from e
  if not isinstance(body, dict):
    raise invalid("request body must be a JSON object")
  signature_name = body.get("signature_name", "")
  if not isinstance(signature_name, str):
    raise invalid("signature_name must be a string")
  result = model_server.predict(name, version, label, signature_name, body,
                                api="rest_predict", parse=_parse_json)
  return _predict_json(result, "instances" in body)


class _Handler(http.server.BaseHTTPRequestHandler):
  server_version = "tf_genrec"
  protocol_version = "HTTP/1.1"
  model_server = None  # Set per server class in start().

  def log_message(self, fmt, *args):  # Route to absl instead of stderr.
    logging.debug("REST %s", fmt % args)

  def _send(self, code, body, content_type="application/json"):
    data = (body if isinstance(body, str) else
            json.dumps(body, indent=1)).encode("utf-8")
    self.send_response(code)
    if self.close_connection:  # E.g. an unread body: the stream is lost.
      self.send_header("Connection", "close")
    self.send_header("Content-Type", content_type)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _dispatch(self, method):
    if self.model_server.stopping:
      self.close_connection = True  # Refused below, body unread.
    try:
      with self.model_server.in_flight():
        self._send(200, self._route(method))
    except ServingError as e:
      self._send(e.http_code, {"error": e.message})
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("REST %s %s failed", method, self.path)
      self._send(500, {"error": f"{type(e).__name__}: {e}"})

  def _route(self, method):
    server = self.model_server
    path = self.path.split("?", 1)[0]
    match = _MODEL_PATH.match(path)
    if not match:
      raise not_found(f"no such endpoint: {method} {path}")
    name, verb = match["name"], match["verb"]
    version = int(match["version"]) if match["version"] else None
    label = match["label"]
    if method == "GET" and verb is None:
      return json_format.MessageToDict(
          status_response(server.manager, name, version, label),
          always_print_fields_with_no_presence=True,
          preserving_proto_field_name=True)
    if method == "GET" and verb == "/metadata":
      return json_format.MessageToDict(
          metadata_response(server.manager, name, version, label),
          preserving_proto_field_name=True)
    if method == "POST" and verb == ":predict":
      return self._predict(name, version, label)
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                       f"{method} {path} is not supported")

  def _body_length(self):
    """Content-Length, checked before anything is read; a refused body is
    left unread, so the connection is closed after the answer."""
    options = self.model_server.options
    raw = self.headers.get("Content-Length", "0")
    try:
      length = int(raw) if raw.strip().isdigit() else -1
    except ValueError:
      length = -1
    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
      length = -1
    if length < 0:
      self.close_connection = True
      raise invalid(f"Content-Length {raw!r} is not a byte count (a "
                    f"non-negative integer; chunked bodies are not accepted)")
    if length > options.max_request_bytes:
      self.close_connection = True
      raise exhausted(f"request body of {length} bytes (Content-Length) is "
                      f"larger than max_request_bytes="
                      f"{options.max_request_bytes}")
    return length

  def _predict(self, name, version, label):
    length = self._body_length()
    try:
      data = self.rfile.read(length)
    except OSError as e:  # E.g. rest_idle_timeout_seconds passed.
      self.close_connection = True
      raise invalid(f"request body not received: {e}") from e
    return predict_body(self.model_server, name, version, label, data)

  def do_GET(self):  # pylint: disable=invalid-name
    prometheus_path = self.model_server.options.prometheus_path
    if prometheus_path and self.path.split("?", 1)[0] == prometheus_path:
      self._send(200, self.model_server.metrics.render(),
                 "text/plain; version=0.0.4")
    else:
      self._dispatch("GET")

  def do_POST(self):  # pylint: disable=invalid-name
    self._dispatch("POST")


class _Server(http.server.ThreadingHTTPServer):
  """One thread per connection, at most max_rest_connections at a time;
  past that a connection gets 503 at once instead of a thread."""
  daemon_threads = True

  def __init__(self, address, handler, max_connections):
    self.max_connections = max_connections
    self._slots = threading.BoundedSemaphore(max_connections)
    # listen() backlog: socketserver's 5 resets clients that connect at once
    # while the accept loop is busy.
    self.request_queue_size = max_connections
    super().__init__(address, handler)

  def process_request(self, request, client_address):
    if not self._slots.acquire(blocking=False):
      body = json.dumps({"error": f"too many REST connections "
                                  f"(max_rest_connections="
                                  f"{self.max_connections})"}).encode()
      try:
        request.settimeout(1.0)
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                        b"Content-Type: application/json\r\n"
                        b"Connection: close\r\n" +
                        f"Content-Length: {len(body)}\r\n\r\n".encode() +
                        body)
      except OSError:
        pass  # The client went away; nothing to answer.
      self.shutdown_request(request)
      return
    try:
      super().process_request(request, client_address)
    except BaseException:
      self._slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()


def start(model_server):
  """Binds --rest_api_port (0 with rest_api_ephemeral: a free port)."""
  options = model_server.options
  handler = type("Handler", (_Handler,),
                 {"model_server": model_server,
                  "timeout": options.rest_idle_timeout_seconds})
  httpd = _Server((options.host, options.rest_api_port), handler,
                  options.max_rest_connections)
  threading.Thread(target=httpd.serve_forever, daemon=True,
                   name="rest").start()
  return httpd, httpd.server_address[1]
