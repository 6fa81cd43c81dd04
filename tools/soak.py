"""Soak test: concurrent gRPC + REST clients against `tf-genrec serve` for a
long time while new model versions roll out.

--clients closed-loop clients (--rest_fraction of them on REST) send random
recall requests (tools/benchmark_serving.py's generator and flags) for
--minutes; every --new_version_every_s seconds a copy of
--source_version_dir is exported into --model_base_path as the next version
(copy to a temporary directory + rename, as exporters must), so the server
loads it and unloads the previous one under load. Reports requests, failed
requests (with their statuses), p50/p99 per --bucket_s and the server's RSS
over time, as JSON and a PNG:

  nice -n 10 python -m tools.soak --source_version_dir=runs/soak_model/1 \
      --model_base_path=runs/soak/models --clients=64 --minutes=10 \
      --new_version_every_s=60 --output_json=docs/soak.json \
      --plot=docs/soak.png
"""
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import threading
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

from tools import benchmark_serving

FLAGS = flags.FLAGS
flags.DEFINE_string("source_version_dir", None,
                    "A SavedModel version directory, copied as each version.")
flags.DEFINE_integer("clients", 64, "Concurrent closed-loop clients.")
flags.DEFINE_float("rest_fraction", 0.5, "Share of the clients on REST.")
flags.DEFINE_float("minutes", 10.0, "How long the clients run.")
flags.DEFINE_float("new_version_every_s", 60.0,
                   "Export the next version this often.")
flags.DEFINE_float("bucket_s", 60.0, "Statistics per this many seconds.")
flags.DEFINE_float("warmup_s", 120.0,
                   "RSS growth is measured from the first sample after this.")
flags.DEFINE_bool("batching", True, "Serve with server-side batching.")
flags.DEFINE_string("output_json", "", "Where the report goes (--plot: the PNG).")
flags.mark_flag_as_required("source_version_dir")

KEEP_VERSIONS = 2  # Older version directories are deleted (disk stays flat).


class _Record:
  """Every request's (end time, latency, api, status, served version)."""

  def __init__(self):
    self.rows = []
    self.failures = collections.Counter()
    self.messages = {}
    self._lock = threading.Lock()

  def add(self, end, latency, api, status, version=0, message=""):
    with self._lock:
      self.rows.append((end, latency, api, status == "OK", version))
      if status != "OK":
        self.failures[f"{api} {status}"] += 1
        self.messages.setdefault(f"{api} {status}", message[:300])


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _rss_mb(pid):
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _export_next(base_path):
  """Copies the source as the next version; deletes all but the newest
  KEEP_VERSIONS + 1. Returns the new version."""
  versions = sorted(int(n) for n in os.listdir(base_path) if n.isdigit())
  version = (versions[-1] + 1) if versions else 1
  tmp = os.path.join(base_path, f".tmp-{version}")
  shutil.copytree(FLAGS.source_version_dir, tmp)
  os.rename(tmp, os.path.join(base_path, str(version)))
  for old in versions[:-KEEP_VERSIONS]:
    shutil.rmtree(os.path.join(base_path, str(old)), ignore_errors=True)
  return version


def _grpc_client(port, requests, record, stop, seed):
  import grpc
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  with grpc.insecure_channel(f"localhost:{port}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    rng = np.random.default_rng(seed)
    while not stop.is_set():
      request = requests[rng.integers(len(requests))]
      start = time.perf_counter()
      try:
        response = stub.Predict(request, 60)
        record.add(time.time(), time.perf_counter() - start, "grpc", "OK",
                   response.model_spec.version.value)
      except grpc.RpcError as e:
        record.add(time.time(), time.perf_counter() - start, "grpc",
                   e.code().name, message=e.details() or "")


def _rest_client(port, bodies, record, stop, seed):
  rng = np.random.default_rng(seed)
  path = f"/v1/models/{FLAGS.model_name}:predict"
  connection = http.client.HTTPConnection("localhost", port, timeout=60)
  while not stop.is_set():
    body = bodies[rng.integers(len(bodies))]
    start = time.perf_counter()
    try:
      connection.request("POST", path, body,
                         {"Content-Type": "application/json"})
      response = connection.getresponse()
      data = response.read()
      status = "OK" if response.status == 200 else f"HTTP{response.status}"
      record.add(time.time(), time.perf_counter() - start, "rest", status,
                 message=data.decode("utf-8", "replace"))
    except (OSError, http.client.HTTPException) as e:
      record.add(time.time(), time.perf_counter() - start, "rest",
                 type(e).__name__, message=str(e))
      connection.close()
      connection = http.client.HTTPConnection("localhost", port, timeout=60)
  connection.close()


def _buckets(record, start, rss, swaps):
  rows = sorted(record.rows)
  out = []
  end = max([r[0] for r in rows] + [start])
  edges = np.arange(start, end + FLAGS.bucket_s, FLAGS.bucket_s)
  for lo, hi in zip(edges[:-1], edges[1:]):
    chunk = [r for r in rows if lo <= r[0] < hi]
    latencies = np.array([r[1] for r in chunk if r[3]]) * 1e3
    out.append({
        "t_start_s": round(lo - start, 1),
        "requests": len(chunk),
        "failed": sum(1 for r in chunk if not r[3]),
        "grpc": sum(1 for r in chunk if r[2] == "grpc"),
        "rest": sum(1 for r in chunk if r[2] == "rest"),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2)
                  if len(latencies) else None,
        "p99_ms": round(float(np.percentile(latencies, 99)), 2)
                  if len(latencies) else None,
        "versions_served": sorted({r[4] for r in chunk if r[4]}),
        "versions_exported": [v for t, v in swaps if lo <= t < hi],
        "rss_mb_max": round(max([m for t, m in rss if lo <= t < hi] or
                                [float("nan")]), 1),
    })
  return out


def _plot(report, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  buckets = report["buckets"]
  t = [(b["t_start_s"] + FLAGS.bucket_s / 2) / 60 for b in buckets]
  fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
  axes[0].plot(t, [b["requests"] / FLAGS.bucket_s for b in buckets], "-o",
               label="requests/s")
  axes[0].plot(t, [b["failed"] / FLAGS.bucket_s for b in buckets], "-x",
               color="red", label="failed/s")
  axes[0].legend(fontsize=8)
  axes[0].set_ylabel("requests/s")
  for key in ("p50_ms", "p99_ms"):
    axes[1].plot(t, [b[key] for b in buckets], "-o", label=key[:3])
  axes[1].set_ylabel("latency (ms)")
  axes[1].legend(fontsize=8)
  axes[2].plot([s / 60 for s, _ in report["rss_mb"]],
               [m for _, m in report["rss_mb"]], "-", lw=1)
  axes[2].set_ylabel("server RSS (MiB)")
  axes[2].set_xlabel("minutes")
  for ax in axes:
    for s, _ in report["exports_s"]:
      ax.axvline(s / 60, color="grey", lw=0.5, ls=":")
  fig.suptitle(f"soak: {report['clients']} clients "
               f"({report['rest_clients']} REST), new version every "
               f"{report['new_version_every_s']:.0f} s (dotted)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  logging.info("wrote %s", path)


def soak():
  """Runs the soak; returns the report dict."""
  from tf_genrec.serving import client_lib
  base = os.path.abspath(FLAGS.model_base_path)
  shutil.rmtree(base, ignore_errors=True)
  os.makedirs(base)
  _export_next(base)
  rng = np.random.default_rng(0)
  generate = benchmark_serving._generator()  # pylint: disable=protected-access
  inputs = [generate(rng, FLAGS.rows_per_request)
            for _ in range(FLAGS.num_distinct_requests)]
  requests = [client_lib.build_predict_request(x, FLAGS.model_name)
              for x in inputs]
  bodies = [json.dumps({"inputs": {k: v.tolist() for k, v in x.items()}})
            for x in inputs]
  rest_port = _free_port()
  process, port = benchmark_serving.start_server(
      FLAGS.batching, [f"--rest_api_port={rest_port}",
                       "--file_system_poll_wait_seconds=1"])
  record, stop = _Record(), threading.Event()
  rss, swaps = [], []
  num_rest = int(round(FLAGS.clients * FLAGS.rest_fraction))
  try:
    clients = [threading.Thread(
        target=_rest_client if i < num_rest else _grpc_client,
        args=(rest_port if i < num_rest else port,
              bodies if i < num_rest else requests, record, stop, i),
        daemon=True) for i in range(FLAGS.clients)]
    start = time.time()
    for thread in clients:
      thread.start()
    end = start + FLAGS.minutes * 60
    next_export = start + FLAGS.new_version_every_s
    with tqdm(total=int(FLAGS.minutes * 60), unit="s", desc="soak") as bar:
      while time.time() < end:
        time.sleep(1.0)
        now = time.time()
        rss.append((round(now - start, 1), round(_rss_mb(process.pid), 1)))
        if now >= next_export:
          swaps.append((round(now - start, 1), _export_next(base)))
          next_export += FLAGS.new_version_every_s
        bar.update(int(now - start) - bar.n)
    stop.set()
    for thread in clients:
      thread.join(90)
  finally:
    stop.set()
    process.send_signal(signal.SIGTERM)
    exit_code = process.wait(120)
  after = [m for t, m in rss if t >= FLAGS.warmup_s]
  report = {
      "command_flags": {k: FLAGS[k].value for k in (
          "source_version_dir", "clients", "rest_fraction", "minutes",
          "new_version_every_s", "batching", "rows_per_request")},
      "clients": FLAGS.clients, "rest_clients": num_rest,
      "new_version_every_s": FLAGS.new_version_every_s,
      "requests": len(record.rows),
      "failed": sum(record.failures.values()),
      "failures": dict(record.failures),
      "failure_examples": record.messages,
      "versions_exported": len(swaps) + 1,
      "versions_served": sorted({r[4] for r in record.rows if r[4]}),
      "rss_mb_after_warmup": after[0] if after else None,
      "rss_mb_end": rss[-1][1] if rss else None,
      "rss_growth_after_warmup": (round(after[-1] / after[0] - 1, 4)
                                  if after else None),
      "rss_max_growth_after_warmup": (round(max(after) / after[0] - 1, 4)
                                      if after else None),
      "server_exit_code": exit_code,
      "buckets": _buckets(record, start, [(start + t, m) for t, m in rss],
                          [(start + t, v) for t, v in swaps]),
      "rss_mb": rss,
      "exports_s": swaps,
  }
  return report


def main(argv):
  del argv
  report = soak()
  for bucket in report["buckets"]:
    logging.info("t=%5.0fs requests %6d failed %d p50 %s ms p99 %s ms "
                 "RSS %s MiB versions %s", bucket["t_start_s"],
                 bucket["requests"], bucket["failed"], bucket["p50_ms"],
                 bucket["p99_ms"], bucket["rss_mb_max"],
                 bucket["versions_served"])
  logging.info("requests %d failed %d %s; RSS growth after warm-up %s",
               report["requests"], report["failed"], report["failures"],
               report["rss_growth_after_warmup"])
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(report, f, indent=1)
  if FLAGS.plot:
    _plot(report, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
