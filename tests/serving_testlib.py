"""Helpers of the serving tests: toy SavedModels with the recall model's
serving_default signature, and an in-process server on free ports."""
import contextlib
import os
import socket
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from tf_genrec.builders.export import write_warmup_requests
from tf_genrec.builders.recall_model import (BEHAVIOR_INPUT_SPECS,
                                             REQUEST_OPTION_SPECS)
from tf_genrec.serving import config
from tf_genrec.serving.server import ModelServer, ServerOptions

MAX_BEAM_WIDTH = 8
MAX_TOP_N = 16
NUM_LEVELS = 3
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ToyRecallModel(tf.Module):
  """Deterministic arithmetic over every input; `version` shifts the outputs
  so a test can tell which version answered. Row b's results depend only on
  row b's valid events (like the real model), which batching relies on.
  `delay_s` > 0 makes every call take that long (a slow model for drain
  tests; it spins on tf.timestamp, a SavedModel cannot sleep)."""

  def __init__(self, version, delay_s=0.0):
    super().__init__()
    self.version = tf.constant(version, tf.int64)
    self.delay_s = float(delay_s)

  @tf.function(input_signature=BEHAVIOR_INPUT_SPECS + REQUEST_OPTION_SPECS)
  def serve(self, item_ids, timestamps, action_types, lengths, request_time,
            beam_width=tf.constant([2]), top_n=tf.constant([4])):
    t = tf.shape(item_ids, out_type=tf.int32)[1]
    checks = [
        tf.debugging.assert_greater_equal(
            lengths, 0, message="lengths must be >= 0"),
        tf.debugging.assert_less_equal(
            lengths, t, message="lengths must be <= T (dim 1 of item_ids)"),
        tf.debugging.assert_greater_equal(
            beam_width, 1, message="beam_width must be >= 1"),
        tf.debugging.assert_less_equal(
            beam_width, MAX_BEAM_WIDTH,
            message=f"beam_width must be <= max_beam_width={MAX_BEAM_WIDTH}"),
        tf.debugging.assert_greater_equal(top_n, 1,
                                          message="top_n must be >= 1"),
        tf.debugging.assert_less_equal(
            top_n, MAX_TOP_N, message=f"top_n must be <= {MAX_TOP_N}"),
    ]
    if self.delay_s > 0:
      start = tf.timestamp()
      checks.append(tf.while_loop(lambda now: now < start + self.delay_s,
                                  lambda now: tf.timestamp(), [start])[0])
    with tf.control_dependencies(checks):
      b = tf.shape(item_ids)[0]
      mask = tf.sequence_mask(lengths, t)
      zero = tf.zeros_like(item_ids)
      s = (tf.reduce_sum(tf.where(mask, item_ids, zero), 1) +
           tf.reduce_sum(tf.where(mask, timestamps % 97, zero), 1) +
           tf.reduce_sum(tf.where(mask, tf.cast(action_types, tf.int64),
                                  zero), 1) + request_time % 13)
      top_n = tf.broadcast_to(top_n, [b])
      beam_width = tf.broadcast_to(beam_width, [b])
      n = tf.reduce_max(top_n)
      j = tf.range(n)
      valid = j[None, :] < top_n[:, None]
      items = s[:, None] * 100 + tf.cast(j, tf.int64)[None, :] + (
          self.version * 1_000_000)
      items = tf.where(valid, items, tf.constant(-1, tf.int64))
      scores = tf.cast(self.version, tf.float32) - 0.1 * tf.cast(
          j, tf.float32)[None, :]
      scores = tf.where(valid, scores, -np.inf)
      w = tf.range(tf.reduce_max(beam_width), dtype=tf.int64)
      l = tf.range(NUM_LEVELS, dtype=tf.int64)
      codes = (s[:, None, None] + w[None, :, None] + l[None, None, :] +
               self.version) % 7
      return {"item_ids": items, "scores": scores,
              "semantic_ids": tf.cast(codes, tf.int32)}


def sample_inputs(batch=2, length=5, seed=0, **extra):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, length + 1, batch).astype(np.int32)
  inputs = {
      "item_ids": rng.integers(0, 4344, (batch, length)).astype(np.int64),
      "timestamps": rng.integers(1_600_000_000, 1_700_000_000,
                                 (batch, length)).astype(np.int64),
      "action_types": rng.integers(0, 3, (batch, length)).astype(np.int32),
      "lengths": lengths,
      "request_time": np.full([batch], 1_700_000_000, np.int64),
  }
  for i, n in enumerate(lengths):  # Contract: right-padded with -1.
    inputs["item_ids"][i, n:] = -1
  inputs.update({k: np.asarray(v, np.int32) for k, v in extra.items()})
  return inputs


def export_toy_model(base_path, version, warmup_inputs=(), model_name="toy",
                     delay_s=0.0):
  """Writes base_path/<version> atomically (tmp dir + rename), as exporters
  must for a polling server. The tf.function (not a concrete function) is
  saved so beam_width/top_n defaults land in SignatureDef.defaults."""
  model = ToyRecallModel(version, delay_s)
  tmp = os.path.join(base_path, f".tmp-{version}")
  tf.saved_model.save(model, tmp, signatures={"serving_default": model.serve})
  if warmup_inputs:
    write_warmup_requests(tmp, warmup_inputs, model_name)
  path = os.path.join(base_path, str(version))
  os.rename(tmp, path)
  return path


def in_process(path, inputs):
  """The independent reference: the SavedModel called directly."""
  loaded = tf.saved_model.load(path)  # owns the resources fn uses
  fn = loaded.signatures["serving_default"]
  feeds = {k: tf.constant(v) for k, v in inputs.items()}
  feeds.setdefault("beam_width", tf.constant([2]))
  feeds.setdefault("top_n", tf.constant([4]))
  return {k: v.numpy() for k, v in fn(**feeds).items()}


@contextlib.contextmanager
def serving_toy_model(base_path):
  """A server over toy version 1 exported under base_path, labelled "stable";
  yields (server, channel, version path)."""
  path = export_toy_model(base_path, 1)
  model_config = config.single_model_config("toy", base_path)
  model_config.model_config_list.config[0].version_labels["stable"] = 1
  with running_server(model_config) as (server, channel):
    yield server, channel, path


def free_ports(n):
  """n distinct free ports of 127.0.0.1 (held together while picked)."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]


@contextlib.contextmanager
def running_server(model_server_config, **options):
  options.setdefault("port", 0)
  options.setdefault("host", "localhost")
  options.setdefault("rest_api_ephemeral", True)
  options.setdefault("prometheus_path", PROMETHEUS_PATH)
  options.setdefault("file_system_poll_wait_seconds", 0.2)
  server = ModelServer(model_server_config, ServerOptions(**options)).start()
  channel = grpc.insecure_channel(f"localhost:{server.grpc_port}")
  try:
    yield server, channel
  finally:
    channel.close()
    server.stop(grace=1.0)


def concurrently(functions):
  """Runs the callables at once; returns their results or exceptions."""
  results = [None] * len(functions)
  barrier = threading.Barrier(len(functions))

  def call(i):
    barrier.wait()
    try:
      results[i] = functions[i]()
    except Exception as e:  # pylint: disable=broad-except
      results[i] = e

  threads = [threading.Thread(target=call, args=(i,))
             for i in range(len(functions))]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  return results


def prediction_stub(channel):
  return prediction_service_pb2_grpc.PredictionServiceStub(channel)
