"""TLS on the gRPC port from TF Serving's SSLConfig (--ssl_config_file),
with a self-signed certificate made here by the openssl CLI."""
import subprocess

import grpc
import pytest
from google.protobuf import text_format

import serving_testlib as tl
from tf_genrec.serving import client_lib, config


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
  """(key PEM, certificate PEM) for localhost, its own CA."""
  directory = tmp_path_factory.mktemp("tls")
  subprocess.run(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
       "-keyout", str(directory / "key.pem"), "-out",
       str(directory / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
       "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
       "-addext", "basicConstraints=critical,CA:TRUE"],
      check=True, capture_output=True)
  return ((directory / "key.pem").read_text(),
          (directory / "cert.pem").read_text())


def _ssl_config_file(path, **fields):
  path.write_text(text_format.MessageToString(config.SSLConfig(**fields)))
  return config.read_ssl_config(str(path))


def _predict(port, credentials):
  with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
    return tl.prediction_stub(channel).Predict(
        client_lib.build_predict_request(tl.sample_inputs(), "toy"), 10)


@pytest.mark.parametrize("client_verify", [False, True])
def test_grpc_over_tls(tmp_path, certificate, client_verify):
  key, cert = certificate
  ssl = _ssl_config_file(tmp_path / "ssl.config", server_key=key,
                         server_cert=cert, custom_ca=cert if client_verify
                         else "", client_verify=client_verify)
  tl.export_toy_model(str(tmp_path / "toy"), 1)
  with tl.running_server(config.single_model_config("toy",
                                                    str(tmp_path / "toy")),
                         ssl_config=ssl) as (server, plaintext):
    with_client_cert = grpc.ssl_channel_credentials(
        cert.encode(), key.encode(), cert.encode())
    assert _predict(server.grpc_port,
                    with_client_cert).model_spec.version.value == 1
    without = grpc.ssl_channel_credentials(cert.encode())
    if client_verify:  # The server demands a certificate from its CA.
      with pytest.raises(grpc.RpcError):
        _predict(server.grpc_port, without)
    else:
      assert _predict(server.grpc_port, without).outputs
    with pytest.raises(grpc.RpcError) as error:  # No plaintext on the port.
      tl.prediction_stub(plaintext).Predict(
          client_lib.build_predict_request(tl.sample_inputs(), "toy"), 5)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("fields,message", [
    ({"server_cert": "x"}, "server_key and server_cert"),
    ({"server_key": "k", "server_cert": "c", "client_verify": True},
     "client_verify needs custom_ca"),
])
def test_incomplete_ssl_config_names_the_field(tmp_path, fields, message):
  with pytest.raises(ValueError, match=message):
    _ssl_config_file(tmp_path / "ssl.config", **fields)
