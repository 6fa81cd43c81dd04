"""Server metrics in the Prometheus text exposition format (no client lib)."""
import bisect
import threading

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(names, values):
  if not names:
    return ""
  escaped = (str(v).replace("\\", r"\\").replace('"', r"\"").replace(
      "\n", r"\n") for v in values)
  return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped)) + "}"


class Counter:

  def __init__(self, name, help_text, label_names=()):
    self.name, self.help, self.label_names = name, help_text, label_names
    self._values = {}
    self._lock = threading.Lock()

  def inc(self, *labels):
    with self._lock:
      self._values[labels] = self._values.get(labels, 0) + 1

  def render(self):
    lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
    with self._lock:
      for labels, value in sorted(self._values.items()):
        lines.append(f"{self.name}{_labels(self.label_names, labels)} {value}")
    return lines


class Histogram:

  def __init__(self, name, help_text, buckets, label_names=()):
    self.name, self.help, self.label_names = name, help_text, label_names
    self.buckets = tuple(buckets)
    self._series = {}  # labels -> [per-bucket counts + overflow, sum, count]
    self._lock = threading.Lock()

  def observe(self, value, *labels):
    with self._lock:
      series = self._series.setdefault(
          labels, [[0] * (len(self.buckets) + 1), 0, 0])
      series[0][bisect.bisect_left(self.buckets, value)] += 1
      series[1] += value
      series[2] += 1

  def count(self, *labels):
    with self._lock:
      return self._series.get(labels, [None, 0.0, 0])[2]

  def render(self):
    lines = [f"# HELP {self.name} {self.help}",
             f"# TYPE {self.name} histogram"]
    with self._lock:
      for labels, (counts, total, n) in sorted(self._series.items()):
        cumulative = 0
        for bound, c in zip(self.buckets + (float("inf"),), counts):
          cumulative += c
          le = "+Inf" if bound == float("inf") else repr(bound)
          lines.append(f"{self.name}_bucket"
                       f"{_labels(self.label_names + ('le',), labels + (le,))}"
                       f" {cumulative}")
        tag = _labels(self.label_names, labels)
        lines.append(f"{self.name}_sum{tag} {total}")
        lines.append(f"{self.name}_count{tag} {n}")
    return lines


# Engine counters that go up and down (the rest only grow).
ENGINE_GAUGES = ("queued", "max_step_requests", "prefix_cache_bytes",
                 "row_tile")


def render_engine_stats(engine_stats):
  """[(model name, version, {counter: value})] (ModelManager.engine_stats)
  as tf_genrec_engine_<counter>{model_name, version} lines."""
  by_name = {}
  for model_name, version, stats in engine_stats:
    for key, value in stats.items():
      by_name.setdefault(key, []).append((model_name, version, value))
  lines = []
  for key, series in by_name.items():
    name = f"tf_genrec_engine_{key}"
    kind = "gauge" if key in ENGINE_GAUGES else "counter"
    lines += [f"# HELP {name} Generation engine {key} (EngineStats).",
              f"# TYPE {name} {kind}"]
    lines += [f"{name}{_labels(('model_name', 'version'), (m, v))} {value}"
              for m, v, value in sorted(series)]
  return lines


class ServerMetrics:
  """The server's metrics; one instance per server."""

  def __init__(self, engine_stats=list):
    """engine_stats() -> what render_engine_stats takes, read per render."""
    self._engine_stats = engine_stats
    self.requests = Counter(
        "tf_genrec_serving_request_count",
        "Requests by model, API and final gRPC status code.",
        ("model_name", "api", "status"))
    self.latency = Histogram(
        "tf_genrec_serving_request_latency_seconds",
        "Server-side request latency (decode to encode) in seconds.",
        LATENCY_BUCKETS_S, ("model_name", "api"))
    self.batch_size = Histogram(
        "tf_genrec_serving_batch_size",
        "Rows per executed batch (server-side batching).", BATCH_SIZE_BUCKETS)

  def record(self, model_name, api, status, seconds):
    self.requests.inc(model_name, api, status)
    self.latency.observe(seconds, model_name, api)

  def render(self):
    lines = []
    for metric in (self.requests, self.latency, self.batch_size):
      lines += metric.render()
    lines += render_engine_stats(self._engine_stats())
    return "\n".join(lines) + "\n"
