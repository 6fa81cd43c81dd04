"""The shipped serving_config/ files parse with TF Serving's message classes,
and bad configs fail naming the field."""
import os

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tf_genrec.serving import config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "serving_config")


def test_models_config_parses_with_tf_serving_classes():
  parsed = config.read_model_server_config(
      os.path.join(CONFIG_DIR, "models.config"))
  assert isinstance(parsed, model_server_config_pb2.ModelServerConfig)
  (model,) = parsed.model_config_list.config
  assert model.name == "tf_genrec"
  assert model.model_platform == "tensorflow"
  assert model.model_version_policy.latest.num_versions == 1


def test_batching_parameters_file():
  batching = config.read_batching_parameters(
      os.path.join(CONFIG_DIR, "batching_parameters.txt"))
  assert batching == config.BatchingConfig(
      max_batch_size=32, batch_timeout_micros=2000, max_enqueued_batches=64,
      num_batch_threads=2, pad_variable_length_inputs=True)


def test_monitoring_config_file():
  assert (config.read_prometheus_path(
      os.path.join(CONFIG_DIR, "monitoring.config")) ==
          "/monitoring/prometheus/metrics")


def test_declared_messages_match_upstream_names_and_numbers():
  # Field numbers from tensorflow_serving's .proto files: the wire format and
  # text format must be the ones tensorflow_model_server reads.
  fields = config.BatchingParameters.DESCRIPTOR.fields_by_name
  assert config.BatchingParameters.DESCRIPTOR.full_name == (
      "tensorflow.serving.BatchingParameters")
  assert {n: f.number for n, f in fields.items()} == {
      "max_batch_size": 1, "batch_timeout_micros": 2,
      "max_enqueued_batches": 3, "num_batch_threads": 4,
      "thread_pool_name": 5, "allowed_batch_sizes": 6,
      "pad_variable_length_inputs": 7}
  monitoring = config.MonitoringConfig()
  text_format.Parse('prometheus_config { enable: true path: "/m" }',
                    monitoring)
  assert monitoring.prometheus_config.path == "/m"
  assert config.SSLConfig.DESCRIPTOR.full_name == "tensorflow.serving.SSLConfig"
  assert {n: f.number for n, f in
          config.SSLConfig.DESCRIPTOR.fields_by_name.items()} == {
              "server_key": 1, "server_cert": 2, "custom_ca": 3,
              "client_verify": 4}


def test_defaults_are_tf_servings(tmp_path):
  path = tmp_path / "b.txt"
  path.write_text("max_batch_size { value: 8 }\n")
  batching = config.read_batching_parameters(str(path))
  assert batching.max_batch_size == 8
  assert batching.batch_timeout_micros == 0
  assert batching.max_enqueued_batches == 10
  assert not batching.pad_variable_length_inputs
  disabled = tmp_path / "m.config"
  disabled.write_text("prometheus_config { enable: false }\n")
  assert config.read_prometheus_path(str(disabled)) is None


@pytest.mark.parametrize("text,field", [
    ("max_batch_size { value: 0 }", "max_batch_size"),
    ("num_batch_threads { value: 0 }", "num_batch_threads"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 2 "
     "allowed_batch_sizes: 4", "allowed_batch_sizes"),
    ("max_batch_sise { value: 8 }", "max_batch_sise"),
])
def test_bad_batching_parameters_name_the_field(tmp_path, text, field):
  path = tmp_path / "b.txt"
  path.write_text(text)
  with pytest.raises(ValueError, match=field):
    config.read_batching_parameters(str(path))


@pytest.mark.parametrize("text,field", [
    ('model_config_list { config { base_path: "/m" } }', "name"),
    ('model_config_list { config { name: "a" } }', "base_path"),
    ('model_config_list { config { name: "a" base_path: "/m" } '
     'config { name: "a" base_path: "/n" } }', "twice"),
    ('model_config_list { config { name: "a" base_path: "/m" '
     'model_platform: "pytorch" } }', "model_platform"),
])
def test_bad_model_config_names_the_field(tmp_path, text, field):
  path = tmp_path / "models.config"
  path.write_text(text)
  with pytest.raises(ValueError, match=field):
    config.read_model_server_config(str(path))
