"""tools/serve.py as a process (flags, SIGTERM) and tools/client.py."""
import ctypes
import os
import re
import signal
import subprocess
import sys
import time

import grpc
import pytest
from absl import flags

import serving_testlib as tl
from tf_genrec.serving import client_lib

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CATALOGUE = os.path.join(REPO, "..", "shared", "datasets", "amazon-scientific",
                         "Scientific.item.json")


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory):
  base = tmp_path_factory.mktemp("toy")
  path = tl.export_toy_model(str(base), 1)
  env = dict(os.environ, PYTHONPATH=REPO)
  process = subprocess.Popen(
      [sys.executable, "-m", "tools.serve", "--port=0",
       "--model_name=tf_genrec", f"--model_base_path={base}",
       "--enable_batching",
       f"--batching_parameters_file={REPO}/serving_config/batching_parameters.txt",
       f"--monitoring_config_file={REPO}/serving_config/monitoring.config",
       "--tensorflow_intra_op_parallelism=1"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
      text=True)
  try:
    line = process.stdout.readline()
    match = re.search(r"gRPC port (\d+)", line)
    assert match, f"serve printed {line!r}"
    yield process, int(match.group(1)), path
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()


def test_client_tool_prints_titled_recommendations(serve_process, capsys):
  _, port, path = serve_process
  from tools import client  # Flags are defined on import.
  record = {"item_ids": [10, 20], "timestamps": [1, 2],
            "action_types": [0, 0], "request_time": 3, "top_n": 3}
  flags.FLAGS(["client", f"--server=localhost:{port}",
               "--model_name=tf_genrec", f"--user_json={record}".replace(
                   "'", '"'), f"--catalogue={CATALOGUE}", "--top_k_print=2"])
  try:
    client.main([])
  finally:
    flags.FLAGS.unparse_flags()
  printed = capsys.readouterr().out
  expected = tl.in_process(path, client_lib.records_to_inputs([record]))
  titles = client_lib.load_catalogue(CATALOGUE)
  assert "model tf_genrec version 1" in printed
  for item, score in zip(expected["item_ids"][0][:2],
                         expected["scores"][0][:2]):
    assert f"item {item:>8d}  score {score:9.4f}  {titles.get(int(item), '')}" in printed
  assert f"item {expected['item_ids'][0][2]:>8d}" not in printed


def test_sigterm_drains_and_exits_cleanly(serve_process):
  process, port, _ = serve_process
  with grpc.insecure_channel(f"localhost:{port}") as channel:
    response = tl.prediction_stub(channel).Predict(
        client_lib.build_predict_request(tl.sample_inputs(), "tf_genrec"), 30)
  assert response.model_spec.version.value == 1
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=30) == 0


def test_sigterm_delivered_to_a_worker_thread_stops_the_server(tmp_path):
  # The kernel hands a process-directed SIGTERM to any thread; send it to a
  # non-main one on purpose (glibc's tgkill), the case that used to hang.
  tl.export_toy_model(str(tmp_path), 1)
  process = subprocess.Popen(
      [sys.executable, "-m", "tools.serve", "--port=0", "--model_name=toy",
       f"--model_base_path={tmp_path}"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  try:
    assert re.search(r"gRPC port \d+", process.stdout.readline())
    workers = [int(t) for t in os.listdir(f"/proc/{process.pid}/task")
               if int(t) != process.pid]
    assert workers
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.tgkill(process.pid, workers[-1], signal.SIGTERM) == 0
    assert process.wait(timeout=30) == 0
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()


def test_sigterm_waits_for_a_slow_in_flight_request(tmp_path):
  tl.export_toy_model(str(tmp_path), 1, delay_s=3.0)
  process = subprocess.Popen(
      [sys.executable, "-m", "tools.serve", "--port=0", "--model_name=slow",
       f"--model_base_path={tmp_path}", "--grace_period_seconds=30"],
      cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, text=True)
  try:
    port = int(re.search(r"gRPC port (\d+)", process.stdout.readline())[1])
    with grpc.insecure_channel(f"localhost:{port}") as channel:
      call = tl.prediction_stub(channel).Predict.future(
          client_lib.build_predict_request(tl.sample_inputs(), "slow"), 60)
      time.sleep(1.0)  # The request is now running on the 3 s model.
      process.send_signal(signal.SIGTERM)
      assert call.result().model_spec.version.value == 1
    assert process.wait(timeout=60) == 0
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
