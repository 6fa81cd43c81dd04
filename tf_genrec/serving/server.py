"""The model server: manager + optional batching + metrics + gRPC/REST fronts."""
import contextlib
import dataclasses
import threading
import time
from typing import Optional

import grpc
from absl import logging

from tf_genrec.serving import config as config_lib
from tf_genrec.serving import grpc_server, limits, rest
from tf_genrec.serving.batching import BatchScheduler
from tf_genrec.serving.errors import ServingError
from tf_genrec.serving.manager import ModelManager
from tf_genrec.serving.metrics import ServerMetrics


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """What tools/serve.py's flags configure (names as tensorflow_model_server
  where it has them), validated here; docs/reliability.md tables the limits."""
  port: int = 8500  # gRPC; 0 picks a free port.
  rest_api_port: int = 0  # 0: no REST server (as TF Serving)...
  rest_api_ephemeral: bool = False  # ...unless tests ask for a free port.
  host: str = "0.0.0.0"
  file_system_poll_wait_seconds: float = 1.0
  model_config_file: str = ""
  model_config_file_poll_wait_seconds: float = 0.0
  batching: Optional[config_lib.BatchingConfig] = None  # None: no batching.
  prometheus_path: Optional[str] = None  # None: no metrics endpoint.
  ssl_config: Optional[object] = None  # SSLConfig; None: plaintext gRPC.
  grpc_max_workers: int = 128  # > max_batch_size so batches can fill.
  warmup: bool = True
  # Request limits, checked on the declared shapes before decoding.
  # Worst-case request memory is about max_concurrent_rpcs x max_request_bytes
  # (protos) plus max_rest_connections x ~10 x max_request_bytes (JSON).
  max_request_bytes: int = 16 << 20  # gRPC message / REST body.
  max_batch_rows: int = 1024  # Dim 0 of every input.
  max_history_length: int = 4096  # T: dim 1 of limits.HISTORY_INPUTS.
  max_context_length: int = 1024  # Dim 1 of limits.CONTEXT_INPUTS.
  max_tensor_elements: int = 1 << 22  # Per input tensor.
  max_concurrent_rpcs: int = 128  # gRPC calls in progress (incl. queued).
  max_rest_connections: int = 64  # Open REST connections (one thread each).
  rest_idle_timeout_seconds: float = 30.0  # Silent REST client: closed.
  # Lifecycle.
  grace_period_seconds: float = 30.0  # Shutdown waits for in-flight requests.
  unload_timeout_seconds: float = 60.0  # An unload waits for its requests.

  def __post_init__(self):
    for name in ("max_request_bytes", "max_batch_rows", "max_history_length",
                 "max_context_length", "max_tensor_elements",
                 "max_concurrent_rpcs", "max_rest_connections",
                 "grpc_max_workers"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.max_request_bytes >= 1 << 31:
      raise ValueError(f"max_request_bytes must be < 2 GiB (gRPC's limit), "
                       f"got {self.max_request_bytes}")
    for name in ("rest_idle_timeout_seconds", "grace_period_seconds",
                 "unload_timeout_seconds"):
      if getattr(self, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclasses.dataclass
class PredictResult:
  model_name: str
  version: int
  signature_name: str
  outputs: dict


class ModelServer:
  """Owns everything; `start()` binds the ports, `stop()` drains and exits."""

  def __init__(self, model_server_config, options=ServerOptions()):
    self.options = options
    self.metrics = ServerMetrics(
        engine_stats=lambda: self.manager.engine_stats())
    self.manager = ModelManager(model_server_config, warmup=options.warmup,
                                unload_timeout=options.unload_timeout_seconds,
                                on_change=self.update_health)
    self.batcher = (BatchScheduler(options.batching,
                                   on_batch=self.metrics.batch_size.observe)
                    if options.batching else None)
    self.grpc_port = None
    self.rest_port = None
    self._grpc = None
    self._rest = None
    self._health = None
    self._stop = threading.Event()
    self._config_thread = None
    self._config_text = None
    self._inflight = 0  # REST requests in progress (drained on stop).
    self._inflight_cond = threading.Condition()

  def start(self):
    self.manager.start(self.options.file_system_poll_wait_seconds)
    self._grpc, self._health, self.grpc_port = grpc_server.start(self)
    if self.options.rest_api_port or self.options.rest_api_ephemeral:
      self._rest, self.rest_port = rest.start(self)
    if (self.options.model_config_file and
        self.options.model_config_file_poll_wait_seconds > 0):
      with open(self.options.model_config_file) as f:
        self._config_text = f.read()
      self._config_thread = threading.Thread(target=self._watch_config,
                                             daemon=True, name="config-poller")
      self._config_thread.start()
    self.update_health()
    logging.info("serving gRPC on port %d%s", self.grpc_port,
                 f", REST on port {self.rest_port}" if self.rest_port else "")
    return self

  def stop(self, grace=None):
    """Refuses new requests, waits up to `grace` seconds (default
    grace_period_seconds) for in-flight ones, then unloads everything."""
    grace = self.options.grace_period_seconds if grace is None else grace
    deadline = time.monotonic() + grace
    self._stop.set()
    grpc_done = None
    if self._grpc:
      self._health.enter_graceful_shutdown()
      grpc_done = self._grpc.stop(grace)  # New RPCs are refused at once.
    if self._rest:
      self._rest.shutdown()  # Stops accepting; open connections finish.
    with self._inflight_cond:
      if not self._inflight_cond.wait_for(
          lambda: self._inflight == 0,
          max(deadline - time.monotonic(), 0)):
        logging.warning("grace period of %.1f s over with %d requests in "
                        "flight", grace, self._inflight)
    if grpc_done is not None:
      grpc_done.wait(max(deadline - time.monotonic(), 0))
    if self._rest:
      self._rest.server_close()
    if self._config_thread:
      self._config_thread.join()
    if self.batcher:
      self.batcher.stop()
    self.manager.stop()

  def _watch_config(self):
    """--model_config_file_poll_wait_seconds: re-read, reload on change."""
    path = self.options.model_config_file
    while not self._stop.wait(self.options.model_config_file_poll_wait_seconds):
      try:
        with open(path) as f:
          text = f.read()
        if text != self._config_text:
          self._config_text = text
          self.reload(config_lib.read_model_server_config(path))
      except (OSError, ValueError, ServingError) as e:
        logging.error("model config reload from %s failed: %s", path, e)

  def reload(self, model_server_config):
    self.manager.reload(model_server_config)

  def update_health(self):
    if self._health is not None:
      grpc_server.set_health(self._health, self.manager)

  def predict(self, model_name, version, label, signature_name, inputs,
              output_filter=(), api="predict", parse=None):
    """Pins one servable, admits the request, runs it (batched if enabled),
    records metrics.

    `parse(inputs, signature)`, if given, turns the request's own inputs into
    (declared, decode): {name: .dtype/.shape} checked against the signature
    and the limits first, then `decode()` -> {name: numpy array}. It runs
    inside the timed, counted region, so malformed inputs are counted too.
    """
    start = time.perf_counter()
    status = grpc.StatusCode.OK
    try:
      with self.manager.servable(model_name, version, label) as servable:
        signature = servable.signature(signature_name)
        declared, decode = (parse(inputs, signature) if parse is not None
                            else (inputs, lambda: inputs))
        batch_size = signature.validate(declared, output_filter)
        limits.check_request(self.options, declared)
        inputs = decode()
        output_filter = tuple(output_filter)
        if self.batcher is not None:
          outputs = self.batcher.run(servable, signature, inputs,
                                     output_filter, batch_size)
        else:
          outputs = servable.run(signature, inputs, output_filter)
        return PredictResult(model_name, servable.version, signature.name,
                             outputs)
    except ServingError as e:
      status = e.code
      raise
    except Exception:
      status = grpc.StatusCode.INTERNAL
      raise
    finally:
      self.metrics.record(self.manager.metric_label(model_name), api,
                          status.name, time.perf_counter() - start)

  @property
  def stopping(self):
    return self._stop.is_set()

  @contextlib.contextmanager
  def in_flight(self):
    """Counts a REST request that stop() must wait for (gRPC's own stop
    waits for RPCs); once stop() began, new requests get UNAVAILABLE."""
    with self._inflight_cond:
      if self._stop.is_set():
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is stopping")
      self._inflight += 1
    try:
      yield
    finally:
      with self._inflight_cond:
        self._inflight -= 1
        self._inflight_cond.notify_all()
