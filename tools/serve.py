"""`tf-genrec serve`: a model server speaking the TF Serving gRPC/REST API.

Flags are named (and default) as tensorflow_model_server's, so a deployment
can switch between the two binaries without changing its command line:

  tf-genrec serve --port=8500 --rest_api_port=8501 \
      --model_config_file=serving_config/models.config \
      --enable_batching --batching_parameters_file=serving_config/batching_parameters.txt \
      --monitoring_config_file=serving_config/monitoring.config
"""
import signal
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer("port", 8500, "gRPC port (0: pick a free port).")
flags.DEFINE_integer("rest_api_port", 0,
                     "REST (HTTP/JSON) port; 0 disables the REST API.")
flags.DEFINE_string("model_name", "default",
                    "Model name when serving one model via --model_base_path.")
flags.DEFINE_string("model_base_path", "",
                    "Directory of numbered SavedModel versions of one model.")
flags.DEFINE_string("model_config_file", "",
                    "ModelServerConfig text proto; overrides --model_name and "
                    "--model_base_path.")
flags.DEFINE_float("model_config_file_poll_wait_seconds", 0,
                   "Re-read --model_config_file this often (0: read once).")
flags.DEFINE_float("file_system_poll_wait_seconds", 1,
                   "Poll the base paths for new versions this often "
                   "(<= 0: poll once at start-up).")
flags.DEFINE_bool("enable_batching", False, "Server-side dynamic batching.")
flags.DEFINE_string("batching_parameters_file", "",
                    "BatchingParameters text proto (with --enable_batching; "
                    "unset fields take TF Serving's defaults).")
flags.DEFINE_string("monitoring_config_file", "",
                    "MonitoringConfig text proto (Prometheus metrics on the "
                    "REST port).")
flags.DEFINE_string("ssl_config_file", "",
                    "SSLConfig text proto (server_key, server_cert, custom_ca, "
                    "client_verify): TLS on the gRPC port.")
# Limits and lifecycle (ServerOptions fields; unset: its defaults, tabled in
# docs/reliability.md). Floats are seconds.
_OPTION_FLAGS = {
    "max_request_bytes": "Largest gRPC message / REST body accepted.",
    "max_batch_rows": "Most rows (dim 0) in one request.",
    "max_history_length": "Longest history T (dim 1 of item_ids etc.).",
    "max_context_length": "Longest context (dim 1 of context_ids).",
    "max_tensor_elements": "Most elements in one input tensor.",
    "max_concurrent_rpcs": "gRPC calls in progress; more get "
                           "RESOURCE_EXHAUSTED.",
    "max_rest_connections": "Open REST connections; more get HTTP 503.",
    "rest_idle_timeout_seconds": "A REST connection silent this long is "
                                 "closed.",
    "grace_period_seconds": "On SIGTERM, wait this long for in-flight "
                            "requests.",
    "unload_timeout_seconds": "An unloaded version waits this long for its "
                              "in-flight requests.",
}
for _name, _help in _OPTION_FLAGS.items():
  (flags.DEFINE_float if _name.endswith("_seconds") else flags.DEFINE_integer)(
      _name, None, _help + " Unset: ServerOptions' default.")
flags.DEFINE_integer("tensorflow_intra_op_parallelism", 0,
                     "Threads per op (0: TensorFlow chooses).")
flags.DEFINE_integer("tensorflow_inter_op_parallelism", 0,
                     "Ops run in parallel (0: TensorFlow chooses).")


def server_options():
  """Flags -> (ModelServerConfig, ServerOptions); raises on bad configs."""
  from tf_genrec.serving import config as config_lib
  from tf_genrec.serving.server import ServerOptions
  if FLAGS.model_config_file:
    model_config = config_lib.read_model_server_config(FLAGS.model_config_file)
  elif FLAGS.model_base_path:
    model_config = config_lib.single_model_config(FLAGS.model_name,
                                                  FLAGS.model_base_path)
  else:
    raise app.UsageError("give --model_config_file or --model_base_path")
  batching = None
  if FLAGS.enable_batching:
    batching = (config_lib.read_batching_parameters(
        FLAGS.batching_parameters_file) if FLAGS.batching_parameters_file
                else config_lib.BatchingConfig())
  elif FLAGS.batching_parameters_file:
    logging.warning("--batching_parameters_file is ignored without "
                    "--enable_batching")
  prometheus_path = (config_lib.read_prometheus_path(
      FLAGS.monitoring_config_file) if FLAGS.monitoring_config_file else None)
  if prometheus_path and not FLAGS.rest_api_port:
    logging.warning("metrics need the REST port: set --rest_api_port")
  ssl_config = (config_lib.read_ssl_config(FLAGS.ssl_config_file)
                if FLAGS.ssl_config_file else None)
  given = {name: FLAGS[name].value for name in _OPTION_FLAGS
           if FLAGS[name].value is not None}
  try:
    options = ServerOptions(
        port=FLAGS.port,
        rest_api_port=FLAGS.rest_api_port,
        file_system_poll_wait_seconds=FLAGS.file_system_poll_wait_seconds,
        model_config_file=FLAGS.model_config_file,
        model_config_file_poll_wait_seconds=(
            FLAGS.model_config_file_poll_wait_seconds),
        batching=batching,
        prometheus_path=prometheus_path,
        ssl_config=ssl_config,
        **given)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  return model_config, options


def main(argv):
  del argv
  import tensorflow as tf
  # Must happen before TensorFlow runs its first op.
  tf.config.threading.set_intra_op_parallelism_threads(
      FLAGS.tensorflow_intra_op_parallelism)
  tf.config.threading.set_inter_op_parallelism_threads(
      FLAGS.tensorflow_inter_op_parallelism)
  from tf_genrec.serving.server import ModelServer
  model_config, options = server_options()
  received = []
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda signum, frame: received.append(signum))
  server = ModelServer(model_config, options).start()
  print(f"tf-genrec serve: gRPC port {server.grpc_port}"
        + (f", REST port {server.rest_port}" if server.rest_port else ""),
        flush=True)
  # The kernel may deliver the signal to any of TF's or gRPC's threads; Python
  # then runs the handler only when the main thread next executes bytecode, so
  # an untimed wait here could sleep through SIGTERM (it did, ~1 run in 6). The
  # handler takes no lock, so it cannot deadlock against the main thread.
  while not received:
    time.sleep(0.2)
  logging.info("shutting down: draining in-flight requests (up to %.1f s)",
               options.grace_period_seconds)
  server.stop()
  logging.info("stopped")


if __name__ == "__main__":
  app.run(main)
