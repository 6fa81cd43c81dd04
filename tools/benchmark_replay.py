"""Benchmark: the CPU engine's prefix K/V cache on replayed user sessions.

amazon-scientific users' histories are replayed click by click: after each
click the user asks again with its history so far, as the serving graph
builds it (BehaviorSequence with the scene's max_len and --rollovers ->
item codes -> PromptAssemble in the ad_recall template). Users are
interleaved round-robin, --active_users at a time (a finished user is
replaced by the next), and --clients closed-loop threads send the stream,
one prompt per GenrecGenerate call; a user's next request waits for its
previous answer. Every configuration (cache size x rollover, per beam
width) has its own engine and runs the same stream segment by segment, in
rotating order, so all share the machine's load and the ratios compare.
The model is the demo-sized random Qwen2 of make_random_model (4 layers,
hidden 256, 4/2 heads) over random semantic IDs of the dataset's items.

  nice -n 19 .venv/bin/python -m tools.benchmark_replay
"""
import collections
import dataclasses
import json
import os
import threading
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import graphs
from tf_genrec.builders.stages import BehaviorFeatures, PromptBuilder
from tf_genrec.generation.flops import beam_search_flops
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2 import Qwen2Config, Qwen2ForCausalLM

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/datasets/amazon-scientific",
                    "Scientific.inter.json: user -> items, oldest first")
flags.DEFINE_integer("users", 300, "users replayed (a random sample)")
flags.DEFINE_integer("active_users", 64, "users interleaved at a time")
flags.DEFINE_integer("clients", 2, "closed-loop request threads")
flags.DEFINE_list("beam_widths", ["5", "50"], "beam widths W")
flags.DEFINE_list("cache_sizes", ["0", "1M", "4M", "all"],
                  "prefix cache bytes (K/M/G suffixes; all: never evicts)")
flags.DEFINE_list("rollovers", ["1"], "BehaviorSequence rollover values; "
                  "each > 1 adds a run with the largest cache size")
flags.DEFINE_integer("max_history", 50, "the scene's behaviour max_len")
flags.DEFINE_list("block_tokens", ["16"], "prefix cache block sizes; the "
                  "first is used for every size, the others add runs with "
                  "the largest cache size")
flags.DEFINE_integer("segment", 100, "requests per timed segment")
flags.DEFINE_integer("threads", 2, "engine threads")
flags.DEFINE_integer("seed", 0, "weights, semantic IDs and users")
flags.DEFINE_string("output_json", None, "also write the rows here")
flags.DEFINE_string("plot", None, "PNG of throughput over hit rate")

ALL = 1 << 40  # The engine's largest capacity: nothing is ever evicted.


def _parse_bytes(text):
  if text == "all":
    return ALL
  scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper())
  return int(float(text[:-1]) * scale) if scale else int(text)


def _stream(histories, active_users):
  """[(user, clicks)] in replay order: round-robin over the active users,
  each asking with 1, 2, ... of its clicks."""
  pending = collections.deque(range(len(histories)))
  active = [[pending.popleft(), 1] for _ in range(min(active_users,
                                                      len(pending)))]
  out = []
  while active:
    for slot in list(active):
      user, clicks = slot
      out.append((user, clicks))
      slot[1] += 1
      if slot[1] > len(histories[user]):
        active.remove(slot)
        if pending:
          active.append([pending.popleft(), 1])
  return out


def _prompts(config, stream, histories, codes, batch=1024):
  """The serving graph's prompt of every request (without the item-table
  op: codes are looked up here)."""
  behavior = BehaviorFeatures(config.behavior)
  prompt = PromptBuilder(config.template)
  out = []
  for start in range(0, len(stream), batch):
    rows = stream[start:start + batch]
    width = max(clicks for _, clicks in rows)
    items = np.full((len(rows), width), -1, np.int64)
    for r, (user, clicks) in enumerate(rows):
      items[r, :clicks] = histories[user][:clicks]
    lengths = np.asarray([clicks for _, clicks in rows], np.int32)
    history, history_lengths = behavior(
        tf.constant(items), tf.constant(np.arange(1, width + 1)[None].repeat(
            len(rows), 0)), tf.zeros(items.shape, tf.int32),
        tf.constant(lengths), tf.fill([len(rows)], tf.constant(width + 1,
                                                               tf.int64)))
    history = history.numpy()
    row_codes = np.where(history[..., None] >= 0,
                         codes[np.maximum(history, 0)], -1).astype(np.int32)
    ids, prompt_lengths = prompt(tf.constant(row_codes), history_lengths,
                                 tf.zeros([len(rows), 0], tf.int32),
                                 tf.zeros([len(rows)], tf.int32))
    ids, prompt_lengths = ids.numpy(), prompt_lengths.numpy()
    out += [ids[r, ids.shape[1] - n:] for r, n in enumerate(prompt_lengths)]
  return out


def cached_tokens(prompts, block):
  """Prompt tokens an unbounded prefix cache serves, request by request in
  replay order: the longest run of whole blocks, before the prompt's last
  token, whose every prefix an earlier prompt had (the engine's hash chain)."""
  seen, out = set(), []
  for prompt in prompts:
    full = [tuple(prompt[:(j + 1) * block])
            for j in range(len(prompt) // block)]
    hit = 0
    while hit < (len(prompt) - 1) // block and full[hit] in seen:
      hit += 1
    out.append(hit * block)
    seen.update(full)  # what the engine inserts: every full block
  return np.asarray(out)


def flop_bound(cfg, prompts, cached, width, num_levels, k):
  """Speedup over the cache off if the cached tokens cost nothing and time
  followed matmul FLOPs: what the cache can give at best on these prompts."""
  total = saved = 0
  for prompt, c in zip(prompts, cached):
    full = beam_search_flops(cfg, 1, width, len(prompt), num_levels, k)
    total += full
    # Prefilling only the uncached tokens; the difference is an upper bound
    # of the work the cache removes.
    saved += full - beam_search_flops(cfg, 1, width, len(prompt) - c,
                                    num_levels, k)
  return total / (total - saved)


class Run:
  """One configuration: its engine, its prompts, and what it measured."""

  def __init__(self, generator, width, cache_bytes, block, rollover,
               prompts, bound):
    self.generator, self.width = generator, width
    self.cache_bytes, self.block = cache_bytes, block
    self.rollover, self.prompts = rollover, prompts
    self.bound = bound  # flop_bound of an unbounded cache
    self.latencies, self.seconds, self.cpu_seconds = [], 0.0, 0.0

  def run_segment(self, stream, indices, clients):
    """Sends stream[indices] from `clients` threads; a user's request
    waits for its previous one."""
    done = {i: threading.Event() for i in indices}
    previous = {}
    last = {}
    for i in indices:
      user = stream[i][0]
      previous[i] = last.get(user)
      last[user] = i
    queue = collections.deque(indices)
    lock = threading.Lock()

    def client():
      while True:
        with lock:
          if not queue:
            return
          i = queue.popleft()
        if previous[i] is not None:
          done[previous[i]].wait()
        prompt = self.prompts[i]
        start = time.perf_counter()
        self.generator.generate(tf.constant(prompt[None]),
                                tf.constant([len(prompt)], tf.int32),
                                tf.constant(self.width, tf.int32))
        self.latencies.append(time.perf_counter() - start)
        done[i].set()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start, cpu = time.perf_counter(), time.process_time()
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    self.seconds += time.perf_counter() - start
    self.cpu_seconds += time.process_time() - cpu

  def throughput(self):
    """Requests per second of wall time and per CPU second of the process
    (the configurations run one at a time, so the process's CPU time while
    one runs is its own; robust to other jobs on a shared machine)."""
    n = len(self.latencies)
    return n / self.seconds, n / self.cpu_seconds

  def row(self, baseline):
    stats = self.generator.stats()
    lookups = stats["prefix_cache_hits"] + stats["prefix_cache_misses"]
    tokens = sum(len(p) for p in self.prompts)
    lat = np.asarray(self.latencies) * 1e3
    rps, per_cpu = self.throughput()
    return {
        "W": self.width,
        "cache_bytes": self.cache_bytes,
        "block_tokens": self.block,
        "rollover": self.rollover,
        "requests": len(self.latencies),
        "hit_rate": stats["prefix_cache_hits"] / lookups if lookups else 0.0,
        "token_hit_rate": stats["prefix_cache_hit_tokens"] / tokens,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "req_per_s": rps,
        "speedup": rps / baseline[0] if baseline else 1.0,
        "req_per_cpu_s": per_cpu,
        "cpu_speedup": per_cpu / baseline[1] if baseline else 1.0,
        "flop_bound": self.bound if self.cache_bytes else 1.0,
        "evictions": stats["prefix_cache_evictions"],
        "cache_mib": stats["prefix_cache_bytes"] / (1 << 20),
    }


def _size_label(n):
  return "all" if n == ALL else ("off" if n == 0 else f"{n / (1 << 20):g} MiB")


def _table(rows):
  lines = ["| W | cache | block | rollover | requests | hit rate (requests) "
           "| hit rate (tokens) | p50 ms | p99 ms | req/s | vs off | "
           "req/CPU-s | vs off | FLOP bound | evictions | held MiB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['W']} | {_size_label(r['cache_bytes'])} | "
        f"{r['block_tokens']} | {r['rollover']} | "
        f"{r['requests']} | {r['hit_rate']:.1%} | {r['token_hit_rate']:.1%} "
        f"| {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['req_per_s']:.1f} | "
        f"{r['speedup']:.2f}x | {r['req_per_cpu_s']:.1f} | "
        f"{r['cpu_speedup']:.2f}x | {r['flop_bound']:.2f}x | "
        f"{r['evictions']} | {r['cache_mib']:.1f} |")
  return "\n".join(lines)


def _plot(rows, path):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(6, 4))
  for width in sorted({r["W"] for r in rows}):
    mine = sorted((r for r in rows if r["W"] == width),
                  key=lambda r: r["token_hit_rate"])
    ax.plot([r["token_hit_rate"] for r in mine],
            [r["cpu_speedup"] for r in mine], "o", label=f"W={width}")
  ax.set_xlabel("prompt tokens served from the prefix cache")
  ax.set_ylabel("requests per CPU second vs cache off")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main(argv):
  del argv
  rng = np.random.default_rng(FLAGS.seed)
  with open(os.path.join(FLAGS.data_dir, "Scientific.inter.json")) as f:
    inter = json.load(f)
  num_items = 1 + max(i for items in inter.values() for i in items)
  users = rng.permutation(sorted(inter, key=int))[:FLAGS.users]
  histories = [inter[u] for u in users]
  stream = _stream(histories, FLAGS.active_users)
  logging.info("%d users, %d requests", len(histories), len(stream))

  scene = graphs.get("ad_recall")
  base = scene.graph_config(num_levels=4, codebook_size=256,
                            max_history=FLAGS.max_history)
  template = base.template
  # Distinct random semantic IDs: distinct integers' base-256 digits.
  sid = rng.choice(256**4, num_items, replace=False)
  codes = sid[:, None] // 256**np.arange(3, -1, -1) % 256
  trie = SemanticIdTrie(codes, 256)
  model_config = Qwen2Config(
      vocab_size=template.vocab_size, hidden_size=256, intermediate_size=688,
      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)
  model = Qwen2ForCausalLM(model_config, seed=FLAGS.seed)
  sizes = [_parse_bytes(s) for s in FLAGS.cache_sizes]
  blocks = [int(b) for b in FLAGS.block_tokens]
  configs = [(size, blocks[0], 1) for size in sizes]
  configs += [(max(sizes), b, 1) for b in blocks[1:]]
  configs += [(max(sizes), blocks[0], int(r)) for r in FLAGS.rollovers
              if int(r) > 1]
  prompts = {}
  for rollover in sorted({r for _, _, r in configs}):
    config = dataclasses.replace(base, behavior=dataclasses.replace(
        base.behavior, rollover=rollover))
    prompts[rollover] = _prompts(config, stream, histories, codes)
  cached = {}  # (block, rollover) -> an unbounded cache's tokens per request
  for _, block, rollover in configs:
    if (block, rollover) not in cached:
      cached[block, rollover] = cached_tokens(prompts[rollover], block)
      logging.info("block %d, rollover %d: an unbounded cache serves %.1f%% "
                   "of prompt tokens (the FLOP bound's)", block, rollover,
                   100 * cached[block, rollover].sum()
                   / sum(map(len, prompts[rollover])))
  widths = [int(w) for w in FLAGS.beam_widths]
  runs = []
  for width in widths:
    for size, block, rollover in configs:
      gen = EngineGenerator(model, trie, template.sid_offset,
                            max_beam_width=max(widths),
                            max_prompt_len=template.max_prompt_len,
                            num_threads=FLAGS.threads,
                            prefix_cache_bytes=size,
                            prefix_block_tokens=block)
      # Warm-up on a one-token prompt: shorter than a block, nothing cached.
      gen.generate(tf.constant([[template.prefix_ids[0]]], tf.int32),
                   tf.constant([1], tf.int32), tf.constant(width, tf.int32))
      bound = flop_bound(model_config, prompts[rollover],
                         cached[block, rollover], width, num_levels=4, k=256)
      runs.append(Run(gen, width, size, block, rollover, prompts[rollover],
                      bound))

  segments = [list(range(s, min(s + FLAGS.segment, len(stream))))
              for s in range(0, len(stream), FLAGS.segment)]
  for k, segment in enumerate(tqdm(segments, desc="segments")):
    order = runs[k % len(runs):] + runs[:k % len(runs)]
    for run in order:
      run.run_segment(stream, segment, FLAGS.clients)

  rows = []
  for run in runs:
    off = next(r for r in runs if r.width == run.width and r.cache_bytes == 0
               and r.rollover == 1) if 0 in sizes else None
    rows.append(run.row(off.throughput() if off else None))
  print(f"{len(histories)} users, {len(stream)} requests, mean prompt "
        f"{np.mean([len(p) for p in prompts[1]]):.1f} tokens, "
        f"{FLAGS.clients} clients, "
        f"{FLAGS.active_users} active users, max_history "
        f"{FLAGS.max_history}")
  print(_table(rows))
  if FLAGS.output_json:
    with open(FLAGS.output_json, "w") as f:
      json.dump(rows, f, indent=1)
  if FLAGS.plot:
    _plot(rows, FLAGS.plot)


if __name__ == "__main__":
  app.run(main)
