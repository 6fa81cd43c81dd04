"""Serving benchmark: `tf-genrec serve` over gRPC vs the in-process SavedModel.

Closed-loop load (each of N clients sends its next request when the previous
answer arrives) for N in --concurrency, with server-side batching off and on.
Reports throughput, p50/p99 latency, the server's overhead over calling the
SavedModel in-process (p50, one client, batching off; the two calls alternate
so both see the same machine load) and the throughput
reachable with p99 <= --latency_budget_ms; plots latency vs throughput.

  python tools/benchmark_serving.py --model_base_path=exported/tf_genrec \
      --plot=docs/serving_latency_throughput.png

With --compare_model_base_path, a second model (e.g. the same weights
exported with another --engine) is served beside the first and measured in
the same run, level by level in turn, so both see the same machine load.

The server runs as a separate process (tools/serve.py) so client and server
do not share a Python interpreter. Requests come from --request_generator
(`module:function`, called as function(rng, rows) -> {input: numpy array}),
by default random histories in the recall model's signature.
"""
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

FLAGS = flags.FLAGS
flags.DEFINE_string("model_base_path", None,
                    "Base path of numbered SavedModel versions.")
flags.DEFINE_string("model_name", "tf_genrec", "Served model name.")
flags.DEFINE_string("compare_model_base_path", "",
                    "A second model measured in the same run (same "
                    "--model_name and requests).")
flags.DEFINE_list("labels", ["model", "compare"],
                  "Names of --model_base_path and --compare_model_base_path "
                  "in the table and plot.")
flags.DEFINE_list("concurrency", ["1", "2", "4", "8", "16", "32", "64"],
                  "Closed-loop client counts.")
flags.DEFINE_list("modes", ["off", "on"], "Server-side batching off / on.")
flags.DEFINE_float("seconds_per_level", 5.0, "Measurement time per level.")
flags.DEFINE_string("batching_parameters_file",
                    os.path.join(os.path.dirname(__file__), "..",
                                 "serving_config", "batching_parameters.txt"),
                    "BatchingParameters for mode 'on'.")
flags.DEFINE_string("request_generator", "",
                    "module:function(rng, rows) -> inputs; default: random "
                    "recall histories.")
flags.DEFINE_integer("rows_per_request", 1, "Users per Predict request.")
flags.DEFINE_integer("num_distinct_requests", 256,
                     "Pre-built requests cycled through.")
flags.DEFINE_integer("max_history", 50, "Max events per random history.")
flags.DEFINE_integer("num_items", 4344, "Item id range of random histories.")
flags.DEFINE_float("latency_budget_ms", 100.0,
                   "p99 budget for the 'throughput at p99' figure.")
flags.DEFINE_string("plot", "", "PNG path for latency vs throughput.")
flags.DEFINE_integer("server_intra_op_threads", 0,
                     "--tensorflow_intra_op_parallelism of the server.")
flags.DEFINE_integer("beam_width", 0, "beam_width of every request (0: the "
                     "model's default).")
flags.DEFINE_string("json_output", "", "Also write the figures, the server's "
                    "peak RSS and the model's size as JSON here (the input "
                    "of tools/capacity_plan.py).")
flags.mark_flag_as_required("model_base_path")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_recall_requests(rng, rows):
  """Histories in the recall model's signature (oldest first, -1 padded)."""
  lengths = rng.integers(5, FLAGS.max_history + 1, rows).astype(np.int32)
  width = int(lengths.max())
  items = rng.integers(0, FLAGS.num_items, (rows, width)).astype(np.int64)
  items[np.arange(width)[None, :] >= lengths[:, None]] = -1
  now = 1_700_000_000
  times = np.sort(rng.integers(now - 86_400 * 30, now, (rows, width)), 1)
  return {"item_ids": items, "timestamps": times.astype(np.int64),
          "action_types": np.zeros((rows, width), np.int32),
          "lengths": lengths,
          "request_time": np.full([rows], now, np.int64)}


def _generator():
  if not FLAGS.request_generator:
    return random_recall_requests
  module, function = FLAGS.request_generator.split(":")
  return getattr(importlib.import_module(module), function)


def start_server(batching, extra_args=(), model_base_path=None):
  """tools/serve.py over model_base_path (default --model_base_path) as a
  process; (process, port)."""
  model_base_path = model_base_path or FLAGS.model_base_path
  command = [sys.executable, os.path.join(REPO, "tools", "serve.py"),
             "--port=0", f"--model_name={FLAGS.model_name}",
             f"--model_base_path={os.path.abspath(model_base_path)}",
             f"--tensorflow_intra_op_parallelism="
             f"{FLAGS.server_intra_op_threads}"]
  if batching:
    command += ["--enable_batching", "--batching_parameters_file="
                f"{os.path.abspath(FLAGS.batching_parameters_file)}"]
  command += list(extra_args)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO] + [p for p in [env.get("PYTHONPATH")] if p])
  process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
  line = process.stdout.readline()
  match = re.search(r"gRPC port (\d+)", line)
  if not match:
    process.kill()
    raise RuntimeError(f"server did not start: {line!r}")
  return process, int(match.group(1))


def closed_loop(stub, requests, concurrency, seconds):
  """Returns (latencies in s, errors, elapsed s)."""
  latencies, errors = [], [0]
  lock = threading.Lock()
  outstanding = [concurrency]
  finished = threading.Event()
  start = time.perf_counter()
  end = start + seconds
  last = [start]

  def issue(i):
    sent = time.perf_counter()
    future = stub.Predict.future(requests[i % len(requests)], timeout=60)
    future.add_done_callback(lambda f: done(f, sent, i))

  def done(future, sent, i):
    now = time.perf_counter()
    with lock:
      if future.exception() is None:
        latencies.append(now - sent)
      else:
        errors[0] += 1
      last[0] = max(last[0], now)
      if now >= end:
        outstanding[0] -= 1
        if not outstanding[0]:
          finished.set()
        return
    issue(i + concurrency)

  for i in range(concurrency):
    issue(i)
  finished.wait()
  return np.array(latencies), errors[0], last[0] - start


def load_in_process():
  """The latest version loaded in this process (Servable.run is the bare
  signature call plus the signature's defaults)."""
  from tf_genrec.serving.manager import versions_on_disk
  from tf_genrec.serving.servable import Servable
  version = max(versions_on_disk(FLAGS.model_base_path))
  return Servable(FLAGS.model_name, version,
                  os.path.join(FLAGS.model_base_path, str(version)))


def overhead_pairs(stub, servable, inputs, requests, seconds):
  """Alternates one in-process call and one Predict RPC of the same request,
  so both see the same machine load; returns (in-process, served) seconds."""
  signature = servable.signature("")
  local, served = [], []
  end = time.perf_counter() + seconds
  i = 0
  while time.perf_counter() < end:
    start = time.perf_counter()
    servable.run(signature, inputs[i % len(inputs)])
    middle = time.perf_counter()
    stub.Predict(requests[i % len(requests)], 60)
    local.append(middle - start)
    served.append(time.perf_counter() - middle)
    i += 1
  return np.array(local), np.array(served)


def _peak_rss_bytes(pid):
  """VmHWM of a live process (Linux): the memory a replica needs."""
  with open(f"/proc/{pid}/status", encoding="utf-8") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  return None


def _write_json(path, results, peak_rss, servable):
  model_bytes = sum(os.path.getsize(os.path.join(d, name))
                    for d, _, names in os.walk(servable.path) for name in names)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"model_base_path": os.path.abspath(FLAGS.model_base_path),
               "model_name": FLAGS.model_name, "version": servable.version,
               "saved_model_bytes": model_bytes,
               "beam_width": FLAGS.beam_width,
               "rows_per_request": FLAGS.rows_per_request,
               "seconds_per_level": FLAGS.seconds_per_level,
               "server_intra_op_threads": FLAGS.server_intra_op_threads,
               "cpu_count": os.cpu_count(),
               "modes": {mode: {"levels": rows,
                                "server_peak_rss_bytes": peak_rss[mode]}
                         for mode, rows in results.items()}}, f, indent=2)
  logging.info("wrote %s", path)


def _plot(runs, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for name, rows in runs.items():
    qps = [r["qps"] for r in rows]
    for key, style in (("p50_ms", "-o"), ("p99_ms", "--s")):
      ax.plot(qps, [r[key] for r in rows], style, label=f"{name}, {key[:3]}")
    for r in rows:
      ax.annotate(str(r["concurrency"]), (r["qps"], r["p99_ms"]),
                  fontsize=7, textcoords="offset points", xytext=(3, 3))
  ax.axhline(FLAGS.latency_budget_ms, color="grey", lw=0.8, ls=":")
  ax.set_xlabel("throughput (requests/s)")
  ax.set_ylabel("latency (ms)")
  ax.set_yscale("log")
  ax.set_title("tf-genrec serve: latency vs throughput "
               "(labels: concurrent clients)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  logging.info("wrote %s", path)


def main(argv):
  del argv
  import grpc
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  from tf_genrec.serving import client_lib

  rng = np.random.default_rng(0)
  generate = _generator()
  inputs = [generate(rng, FLAGS.rows_per_request)
            for _ in range(FLAGS.num_distinct_requests)]
  if FLAGS.beam_width:
    for x in inputs:
      x["beam_width"] = np.full([FLAGS.rows_per_request], FLAGS.beam_width,
                                np.int32)
  requests = [client_lib.build_predict_request(x, FLAGS.model_name)
              for x in inputs]
  levels = [int(c) for c in FLAGS.concurrency]
  servable = load_in_process()
  for feed in inputs[:20]:  # Warm-up.
    servable.run(servable.signature(""), feed)
  models = [FLAGS.model_base_path] + ([FLAGS.compare_model_base_path]
                                      if FLAGS.compare_model_base_path else [])
  labels = FLAGS.labels[:len(models)]
  # results[label][mode] = one row per concurrency level.
  results = {label: {} for label in labels}
  peak_rss = {label: {} for label in labels}
  overhead = None
  progress = tqdm(total=len(models) * len(FLAGS.modes) * len(levels),
                  desc="levels")
  for mode in FLAGS.modes:
    servers, channels, stubs = [], [], []
    try:
      for path in models:
        servers.append(start_server(batching=mode == "on",
                                    model_base_path=path))
        channels.append(grpc.insecure_channel(f"localhost:{servers[-1][1]}"))
        stubs.append(prediction_service_pb2_grpc.PredictionServiceStub(
            channels[-1]))
        for request in requests[:20]:  # Warm-up.
          stubs[-1].Predict(request, 60)
      if mode == "off":
        overhead = overhead_pairs(stubs[0], servable, inputs, requests,
                                  FLAGS.seconds_per_level)
      for label in labels:
        results[label][mode] = []
      for concurrency in levels:
        for label, stub in zip(labels, stubs):
          latencies, errors, elapsed = closed_loop(
              stub, requests, concurrency, FLAGS.seconds_per_level)
          row = {"concurrency": concurrency,
                 "qps": len(latencies) / elapsed,
                 "p50_ms": 1e3 * np.percentile(latencies, 50),
                 "p99_ms": 1e3 * np.percentile(latencies, 99),
                 "errors": errors}
          results[label][mode].append(row)
          logging.info("%s, batching %s: %s", label, mode, row)
          progress.update()
      for label, (process, _) in zip(labels, servers):
        peak_rss[label][mode] = _peak_rss_bytes(process.pid)
    finally:
      for channel in channels:
        channel.close()
      for process, _ in servers:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
  progress.close()
  # Table and plot rows: "batching off", or "cpu, batching off" for two.
  runs = {(f"{label}, " if len(labels) > 1 else "") + f"batching {mode}": rows
          for label, by_mode in results.items()
          for mode, rows in by_mode.items()}

  print("| run | clients | req/s | p50 ms | p99 ms | errors |")
  print("| --- | ---: | ---: | ---: | ---: | ---: |")
  for name, rows in runs.items():
    for r in rows:
      print(f"| {name} | {r['concurrency']} | {r['qps']:.1f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
  for name, rows in runs.items():
    within = [r["qps"] for r in rows if r["p99_ms"] <= FLAGS.latency_budget_ms]
    print(f"{name}: max throughput with p99 <= "
          f"{FLAGS.latency_budget_ms:g} ms: "
          + (f"{max(within):.1f} req/s" if within else "none"))
  if overhead is not None:
    local_p50, served_p50 = (1e3 * np.percentile(x, 50) for x in overhead)
    print(f"side by side ({len(overhead[0])} pairs, 1 client, no batching): "
          f"in-process p50 {local_p50:.2f} ms, served p50 {served_p50:.2f} "
          f"ms: server overhead {served_p50 - local_p50:.2f} ms")
  if FLAGS.plot:
    _plot(runs, FLAGS.plot)
  if FLAGS.json_output:  # the first model's
    _write_json(FLAGS.json_output, results[labels[0]], peak_rss[labels[0]],
                servable)


if __name__ == "__main__":
  app.run(main)
