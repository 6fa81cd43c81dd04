"""Benchmarks HSTU inference on CPU, each comparison side by side in one run.

1. M-FALCON: ranking C candidates (1,024 and 16,384) for one user with a
   history of --history events (2x tokens, items and actions interleaved):
   history encoded once + candidates in micro-batches of m (a curve over m),
   vs every candidate scored with the whole history recomputed, batched
   (--recompute_batch candidate sequences per call) and one at a time. The
   recompute baselines cost the same per candidate whatever C is, so they are
   timed on the first --recompute_sample candidates and reported as
   candidates/s.
2. Attention alone: HSTU's pointwise SiLU(QK^T + rab) / N vs softmax
   attention, causal, at sequence lengths 512..8192: time, and peak memory
   (each length and kind in a fresh subprocess; peak RSS over its baseline).

  python -m tools.benchmark_hstu --output_png=docs/hstu_mfalcon.png
"""
import json
import resource
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging
from tqdm import tqdm

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.ranking import HSTURanking, RankingTasks

FLAGS = flags.FLAGS
flags.DEFINE_integer("history", 256, "History events (tokens: 2x).")
flags.DEFINE_list("candidates", ["1024", "16384"], "Candidates per user.")
flags.DEFINE_list("micro_batches", ["16", "64", "256", "1024", "4096"],
                  "M-FALCON micro-batch sizes m.")
flags.DEFINE_integer("recompute_batch", 64, "Candidate sequences per call "
                     "of the batched recompute baseline.")
flags.DEFINE_integer("recompute_sample", 256, "Candidates the recompute "
                     "baselines are timed on.")
flags.DEFINE_integer("hidden_dim", 64, "Model width.")
flags.DEFINE_integer("num_layers", 2, "HSTU layers.")
flags.DEFINE_integer("num_items", 100_000, "Item vocabulary.")
flags.DEFINE_list("attention_lengths", ["512", "1024", "2048", "4096", "8192"],
                  "Sequence lengths of the attention comparison.")
flags.DEFINE_integer("attention_heads", 2, "Heads of the attention "
                     "comparison (32 dims each).")
flags.DEFINE_integer("repeats", 5, "Timed runs (median reported).")
flags.DEFINE_string("output_png", None, "Plot of the M-FALCON curve.")
flags.DEFINE_string("output_json", None, "All figures as JSON.")
flags.DEFINE_string("attention_worker", None, "Internal: 'kind,length' runs "
                    "one attention measurement and prints JSON.")


def median_seconds(fn, repeats):
  fn()  # warm-up: tracing and first allocations
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def ranking_model():
  config = HSTUConfig(max_len=2 * FLAGS.history + 1,
                      hidden_dim=FLAGS.hidden_dim,
                      num_layers=FLAGS.num_layers, num_heads=2,
                      attention_dim=FLAGS.hidden_dim // 2,
                      linear_dim=FLAGS.hidden_dim // 2, dropout=0.0)
  model = HSTURanking(config, FLAGS.num_items, RankingTasks())
  model(tf.ones([1, 1], tf.int32), tf.zeros([1, 1], tf.int32))
  return model


def m_falcon_benchmark():
  rng = np.random.default_rng(0)
  model = ranking_model()
  n = FLAGS.history
  tokens = tf.constant(rng.integers(1, FLAGS.num_items, (1, n)), tf.int32)
  actions = tf.constant(rng.integers(0, 3, (1, n)), tf.int32)
  lengths = tf.constant([n], tf.int32)
  rows = []

  for c in map(int, FLAGS.candidates):
    cands = tf.constant(rng.integers(1, FLAGS.num_items, (1, c)), tf.int32)
    for m in map(int, FLAGS.micro_batches):
      if m > c:
        continue

      @tf.function
      def m_falcon(m=m, cands=cands):
        cache = model.encode_history(tokens, actions)
        return model.rank(cache, lengths, cands, micro_batch=m)

      seconds = median_seconds(m_falcon, FLAGS.repeats)
      rows.append({"method": "m_falcon", "candidates": c, "m": m,
                   "seconds": seconds, "per_second": c / seconds})
      logging.info("%s", rows[-1])

  # Recompute baselines: history + one candidate as its own sequence.
  sample = FLAGS.recompute_sample
  cands = rng.integers(1, FLAGS.num_items, sample)
  seqs = np.concatenate([np.repeat(tokens.numpy(), sample, 0),
                         cands[:, None]], 1).astype(np.int32)
  acts = np.concatenate([np.repeat(actions.numpy(), sample, 0),
                         np.zeros([sample, 1])], 1).astype(np.int32)

  @tf.function(reduce_retracing=True)
  def full_pass(s, a):
    return model(s, a)[:, -1]

  for name, batch in (("recompute_batched", FLAGS.recompute_batch),
                      ("recompute_one_by_one", 1)):
    calls = [(tf.constant(seqs[i:i + batch]), tf.constant(acts[i:i + batch]))
             for i in range(0, sample if batch > 1 else 32, batch)]
    seconds = median_seconds(lambda: [full_pass(*x) for x in calls],
                             max(1, FLAGS.repeats // 2))
    scored = sum(int(x[0].shape[0]) for x in calls)
    rows.append({"method": name, "candidates": scored, "m": batch,
                 "seconds": seconds, "per_second": scored / seconds})
    logging.info("%s", rows[-1])
  return rows


def attention_worker(kind, length):
  """One causal attention of `kind` at `length`, in this process."""
  h, d = FLAGS.attention_heads, 32
  rng = np.random.default_rng(0)
  q, k, v = (tf.constant(rng.normal(size=(1, h, length, d)), tf.float32)
             for _ in range(3))
  bias = tf.constant(rng.normal(size=(length,)), tf.float32)
  idx = tf.range(length)
  causal = idx[:, None] >= idx[None, :]
  rab = tf.gather(bias, tf.maximum(idx[:, None] - idx[None, :], 0))

  @tf.function
  def attend():
    scores = tf.matmul(q, k, transpose_b=True) + rab
    if kind == "hstu":
      a = tf.nn.silu(scores) / float(length) * tf.cast(causal, tf.float32)
    else:
      a = tf.nn.softmax(tf.where(causal, scores / d ** 0.5, -1e9), axis=-1)
    return tf.matmul(a, v)

  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  seconds = median_seconds(attend, FLAGS.repeats)
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {"kind": kind, "length": length, "seconds": seconds,
          "peak_mib": (peak - base) / 1024.0}


def attention_benchmark():
  rows = []
  for length in tqdm(list(map(int, FLAGS.attention_lengths)),
                     desc="attention"):
    for kind in ("hstu", "softmax"):
      out = subprocess.run(
          [sys.executable, "-m", "tools.benchmark_hstu",
           f"--attention_worker={kind},{length}",
           f"--attention_heads={FLAGS.attention_heads}",
           f"--repeats={FLAGS.repeats}"],
          check=True, capture_output=True, text=True)
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      logging.info("%s", rows[-1])
  return rows


def plot(rows, path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for c in map(int, FLAGS.candidates):
    pts = [r for r in rows if r["method"] == "m_falcon" and
           r["candidates"] == c]
    ax.plot([r["m"] for r in pts], [r["per_second"] for r in pts], "o-",
            label=f"M-FALCON, {c} candidates")
  for r in rows:
    if r["method"] != "m_falcon":
      ax.axhline(r["per_second"], linestyle="--", color="gray")
      ax.annotate(r["method"], (1, r["per_second"]),
                  xycoords=("axes fraction", "data"), ha="right",
                  va="bottom", fontsize=8)
  ax.set_xscale("log", base=2)
  ax.set_yscale("log")
  ax.set_xlabel("micro-batch m")
  ax.set_ylabel("candidates / s (one user)")
  ax.set_title(f"HSTU ranking, {FLAGS.history}-event history, CPU")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  if FLAGS.attention_worker:
    kind, length = FLAGS.attention_worker.split(",")
    print(json.dumps(attention_worker(kind, int(length))))
    return
  report = {"m_falcon": m_falcon_benchmark(),
            "attention": attention_benchmark()}
  print("| method | candidates | m | ms | candidates/s |")
  print("| --- | ---: | ---: | ---: | ---: |")
  for r in report["m_falcon"]:
    print(f"| {r['method']} | {r['candidates']} | {r['m']} | "
          f"{r['seconds'] * 1e3:.1f} | {r['per_second']:.0f} |")
  print("\n| length | HSTU ms | softmax ms | HSTU MiB | softmax MiB |")
  print("| ---: | ---: | ---: | ---: | ---: |")
  by = {(r["kind"], r["length"]): r for r in report["attention"]}
  for length in map(int, FLAGS.attention_lengths):
    h, s = by[("hstu", length)], by[("softmax", length)]
    print(f"| {length} | {h['seconds'] * 1e3:.1f} | "
          f"{s['seconds'] * 1e3:.1f} | {h['peak_mib']:.0f} | "
          f"{s['peak_mib']:.0f} |")
  if FLAGS.output_png:
    plot(report["m_falcon"], FLAGS.output_png)
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(report, f, indent=2)


if __name__ == "__main__":
  app.run(main)
