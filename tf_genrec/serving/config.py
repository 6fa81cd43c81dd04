"""Readers of TF Serving's own config files (text protos).

ModelServerConfig comes from tensorflow-serving-api. BatchingParameters,
MonitoringConfig and SSLConfig are not shipped in that pip package, so their
messages are declared here field-for-field as in tensorflow_serving's
session_bundle_config.proto, monitoring_config.proto and ssl_config.proto
(same package, names and numbers): a file that parses here parses in
tensorflow_model_server.
"""
import dataclasses
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


def _declare_messages():
  """Builds the upstream protos in a private pool (no global clash)."""
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  f = descriptor_pb2.FieldDescriptorProto

  def add_file(name, messages, dependency=()):
    """messages: [(name, [(field, number, type, type_name, label)])]."""
    file = descriptor_pb2.FileDescriptorProto(
        name=name, package="tensorflow.serving", syntax="proto3",
        dependency=list(dependency))
    for message_name, fields in messages:
      message = file.message_type.add(name=message_name)
      for field_name, number, ftype, type_name, label in fields:
        field = message.field.add(name=field_name, number=number,
                                  type=ftype, label=label)
        if type_name:
          field.type_name = type_name
    pool.Add(file)

  opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
  i64 = ".google.protobuf.Int64Value"
  add_file(
      "tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
      [("BatchingParameters", [
          ("max_batch_size", 1, f.TYPE_MESSAGE, i64, opt),
          ("batch_timeout_micros", 2, f.TYPE_MESSAGE, i64, opt),
          ("max_enqueued_batches", 3, f.TYPE_MESSAGE, i64, opt),
          ("num_batch_threads", 4, f.TYPE_MESSAGE, i64, opt),
          ("thread_pool_name", 5, f.TYPE_MESSAGE,
           ".google.protobuf.StringValue", opt),
          ("allowed_batch_sizes", 6, f.TYPE_INT64, None, rep),
          ("pad_variable_length_inputs", 7, f.TYPE_BOOL, None, opt),
      ])], dependency=["google/protobuf/wrappers.proto"])
  add_file("tensorflow_serving/config/monitoring_config.proto", [
      ("PrometheusConfig", [
          ("enable", 1, f.TYPE_BOOL, None, opt),
          ("path", 2, f.TYPE_STRING, None, opt),
      ]),
      ("MonitoringConfig", [
          ("prometheus_config", 1, f.TYPE_MESSAGE,
           ".tensorflow.serving.PrometheusConfig", opt),
      ])])
  add_file("tensorflow_serving/config/ssl_config.proto", [
      ("SSLConfig", [
          ("server_key", 1, f.TYPE_STRING, None, opt),
          ("server_cert", 2, f.TYPE_STRING, None, opt),
          ("custom_ca", 3, f.TYPE_STRING, None, opt),
          ("client_verify", 4, f.TYPE_BOOL, None, opt),
      ])])
  return tuple(
      message_factory.GetMessageClass(
          pool.FindMessageTypeByName("tensorflow.serving." + name))
      for name in ("BatchingParameters", "MonitoringConfig", "SSLConfig"))


BatchingParameters, MonitoringConfig, SSLConfig = _declare_messages()


def _parse_file(path, message, flag):
  try:
    with open(path) as f:
      return text_format.Parse(f.read(), message)
  except (OSError, text_format.ParseError) as e:
    raise ValueError(f"--{flag}={path}: {e}") from e


def read_model_server_config(path):
  """--model_config_file -> ModelServerConfig (model_config_list only)."""
  config = _parse_file(path, model_server_config_pb2.ModelServerConfig(),
                       "model_config_file")
  validate_model_server_config(config)
  return config


def single_model_config(model_name, model_base_path):
  """The config --model_name/--model_base_path stand for."""
  config = model_server_config_pb2.ModelServerConfig()
  model = config.model_config_list.config.add()
  model.name = model_name
  model.base_path = model_base_path
  model.model_platform = "tensorflow"
  return config


def validate_model_server_config(config):
  if config.WhichOneof("config") != "model_config_list":
    raise ValueError("ModelServerConfig: only model_config_list is supported "
                     "(custom_model_config is not)")
  names = set()
  for model in config.model_config_list.config:
    if not model.name:
      raise ValueError("ModelConfig.name must be set")
    if model.name in names:
      raise ValueError(f"ModelConfig.name {model.name!r} appears twice")
    names.add(model.name)
    if not model.base_path:
      raise ValueError(f"ModelConfig.base_path of {model.name!r} must be set")
    if model.model_platform not in ("", "tensorflow"):
      raise ValueError(f"ModelConfig.model_platform of {model.name!r} is "
                       f"{model.model_platform!r}; only 'tensorflow' is served")
    policy = model.model_version_policy
    if (policy.WhichOneof("policy_choice") == "latest" and
        policy.latest.num_versions < 0):
      raise ValueError(f"model_version_policy.latest.num_versions of "
                       f"{model.name!r} must be >= 1")


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
  """BatchingParameters with TF Serving's defaults for unset fields."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: tuple = ()
  pad_variable_length_inputs: bool = False

  def __post_init__(self):
    if self.max_batch_size < 1:
      raise ValueError(f"max_batch_size must be >= 1, got "
                       f"{self.max_batch_size}")
    if self.batch_timeout_micros < 0:
      raise ValueError(f"batch_timeout_micros must be >= 0, got "
                       f"{self.batch_timeout_micros}")
    if self.max_enqueued_batches < 1:
      raise ValueError(f"max_enqueued_batches must be >= 1, got "
                       f"{self.max_enqueued_batches}")
    if self.num_batch_threads < 1:
      raise ValueError(f"num_batch_threads must be >= 1, got "
                       f"{self.num_batch_threads}")
    sizes = self.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or
                  sizes[-1] != self.max_batch_size or sizes[0] < 1):
      raise ValueError(f"allowed_batch_sizes must be increasing, >= 1 and end "
                       f"with max_batch_size={self.max_batch_size}, got "
                       f"{list(sizes)}")

  @classmethod
  def from_proto(cls, params):
    kwargs = {}
    for name in ("max_batch_size", "batch_timeout_micros",
                 "max_enqueued_batches", "num_batch_threads"):
      if params.HasField(name):
        kwargs[name] = getattr(params, name).value
    kwargs["allowed_batch_sizes"] = tuple(params.allowed_batch_sizes)
    kwargs["pad_variable_length_inputs"] = params.pad_variable_length_inputs
    return cls(**kwargs)


def read_batching_parameters(path):
  """--batching_parameters_file -> BatchingConfig."""
  params = _parse_file(path, BatchingParameters(), "batching_parameters_file")
  try:
    return BatchingConfig.from_proto(params)
  except ValueError as e:
    raise ValueError(f"--batching_parameters_file={path}: {e}") from e


def read_prometheus_path(path):
  """--monitoring_config_file -> the metrics URL path, or None if disabled."""
  config = _parse_file(path, MonitoringConfig(), "monitoring_config_file")
  prometheus = config.prometheus_config
  if not prometheus.enable:
    return None
  return prometheus.path or DEFAULT_PROMETHEUS_PATH


def read_ssl_config(path):
  """--ssl_config_file -> SSLConfig (PEM text inline, as TF Serving's)."""
  ssl = _parse_file(path, SSLConfig(), "ssl_config_file")
  if not ssl.server_key or not ssl.server_cert:
    raise ValueError(f"--ssl_config_file={path}: server_key and server_cert "
                     f"must both be set (PEM text)")
  if ssl.client_verify and not ssl.custom_ca:
    raise ValueError(f"--ssl_config_file={path}: client_verify needs "
                     f"custom_ca (the PEM of the clients' CA)")
  return ssl
