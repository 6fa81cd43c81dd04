"""tf-genrec capacity_plan: replicas for a target QPS from measured figures.

  tf-genrec capacity_plan --benchmarks=runs/bench/small_w16.json,runs/bench/small_w50.json \
      --target_qps=2000

Each input is the --json_output of tools/benchmark_serving.py (one model at
one beam width). Per benchmark and batching mode, a replica's capacity is the
highest measured throughput whose p99 <= --latency_budget_ms with no errors;
replicas = ceil(target / (capacity * --utilization)) + --spare_replicas, and
memory = the server's peak RSS (VmHWM) per replica. Prints a markdown table
(docs/scaling.md).
"""
import json
import math
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("benchmarks", [], "benchmark_serving --json_output files.")
flags.DEFINE_float("target_qps", 1000.0, "Requests per second to serve.")
flags.DEFINE_float("latency_budget_ms", 100.0, "p99 a replica must keep.")
flags.DEFINE_float("utilization", 0.7, "Fraction of a replica's measured "
                   "capacity to plan for (headroom for spikes, noisy "
                   "neighbours and uneven balancing).")
flags.DEFINE_integer("spare_replicas", 1, "Extra replicas so that losing "
                     "this many (a node, a rollout) keeps the budget.")

MIB = 1 << 20


def replica_capacity(levels, latency_budget_ms):
  """-> (req/s, clients) of the best level within budget, or (0.0, None)."""
  within = [level for level in levels
            if level["p99_ms"] <= latency_budget_ms and not level["errors"]]
  if not within:
    return 0.0, None
  best = max(within, key=lambda level: level["qps"])
  return float(best["qps"]), best["concurrency"]


def plan(benchmark: dict, target_qps: float, latency_budget_ms: float,
         utilization: float, spare_replicas: int) -> list:
  """One row per batching mode of one benchmark_serving JSON."""
  if target_qps <= 0:
    raise ValueError(f"target_qps must be > 0, got {target_qps}")
  if not 0 < utilization <= 1:
    raise ValueError(f"utilization must be in (0, 1], got {utilization}")
  if spare_replicas < 0:
    raise ValueError(f"spare_replicas must be >= 0, got {spare_replicas}")
  rows = []
  for mode, measured in benchmark["modes"].items():
    capacity, clients = replica_capacity(measured["levels"],
                                         latency_budget_ms)
    rss = measured.get("server_peak_rss_bytes")
    replicas = (math.ceil(target_qps / (capacity * utilization))
                + spare_replicas if capacity else None)
    rows.append({
        # The base path's last two parts: e.g. "small/models".
        "model": "/".join(os.path.normpath(
            benchmark["model_base_path"]).split(os.sep)[-2:]),
        "saved_model_mib": benchmark["saved_model_bytes"] / MIB,
        "beam_width": benchmark["beam_width"],
        "batching": mode,
        "qps_per_replica": capacity,
        "clients": clients,
        "replicas": replicas,
        "rss_mib_per_replica": rss / MIB if rss else None,
        "total_rss_gib": (replicas * rss / 1024 / MIB
                          if replicas and rss else None),
    })
  return rows


def _fmt(value, spec):
  return "n/a" if value is None else format(value, spec)


def markdown(rows, target_qps, latency_budget_ms) -> str:
  lines = [
      f"| model | SavedModel MiB | beam width | batching | req/s per replica "
      f"at p99 <= {latency_budget_ms:g} ms (clients) | replicas for "
      f"{target_qps:g} req/s | peak RSS MiB per replica | total GiB |",
      "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
  for r in rows:
    capacity = (f"{r['qps_per_replica']:.1f} ({r['clients']})"
                if r["clients"] else "budget not met")
    lines.append(
        f"| {r['model']} | {r['saved_model_mib']:.1f} | "
        f"{r['beam_width'] or 'default'} | {r['batching']} | {capacity} | "
        f"{_fmt(r['replicas'], 'd')} | {_fmt(r['rss_mib_per_replica'], '.0f')}"
        f" | {_fmt(r['total_rss_gib'], '.1f')} |")
  return "\n".join(lines)


def main(argv):
  del argv
  if not FLAGS.benchmarks:
    raise app.UsageError("--benchmarks: give at least one JSON file")
  rows = []
  for path in FLAGS.benchmarks:
    with open(path, encoding="utf-8") as f:
      rows += plan(json.load(f), FLAGS.target_qps, FLAGS.latency_budget_ms,
                   FLAGS.utilization, FLAGS.spare_replicas)
  print(markdown(rows, FLAGS.target_qps, FLAGS.latency_budget_ms))


if __name__ == "__main__":
  app.run(main)
