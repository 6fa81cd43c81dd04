"""Benchmark: the generators (TF-native beam search, the C++ CPU engine
through GenrecGenerate) vs transformers' generate.

All run the same random Qwen2 weights (built in transformers, saved with
save_pretrained, loaded with load_hf_checkpoint) on the same prompts and the
same semantic-ID trie, with the same thread count. transformers gets the trie
as prefix_allowed_tokens_fn (memoised per prefix, so its Python cost is paid
once per distinct prefix). Each compute dtype of ours is compared with
transformers in the same dtype (bfloat16: the HF model cast with
`.to(torch.bfloat16)`, which torch runs faster than float32 on CPUs with
AVX512_BF16), timed on the same prompts back to back, so each ratio shares
the machine's load. GFLOP/s are reported against the measured matmul peak of
the row's compute dtype, and "floor" is the time our matmul FLOPs would take
at that peak: the bound no kernel tuning can beat. The CPU engine ("cpu",
OpenBLAS with --threads threads) runs the same weights, trie and prompts as
the TF-native generator ("tf"), its weights stored in each --engine_dtypes
(bfloat16: widened to float32 per product block); it computes in float32,
so its rows share the float32 peak and transformers timing of the same
case. "load MB" is the process's RSS growth while the generator was built
(the weights it holds). Prints a markdown table for docs/benchmarks.md.

  .venv/bin/python -m tools.benchmark_generator
"""
import copy
import os
import resource
import statistics
import tempfile
import time

from absl import app, flags, logging
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.flops import beam_search_flops
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint

FLAGS = flags.FLAGS
flags.DEFINE_integer("threads", 2, "intra/inter-op threads for TF and torch")
flags.DEFINE_list("batch_sizes", ["1", "32"], "requests per call")
flags.DEFINE_list("beam_widths", ["5", "50", "200"], "beam widths W")
flags.DEFINE_list("compute_dtypes", ["float32", "bfloat16"],
                  "BeamSearchGenerator compute_dtype(s), timed side by side")
flags.DEFINE_list("engines", ["tf", "cpu"], "generators: tf = "
                  "BeamSearchGenerator in each --compute_dtypes, cpu = the "
                  "CPU engine in each --engine_dtypes")
flags.DEFINE_list("engine_dtypes", ["float32", "bfloat16"],
                  "CPU engine weight dtypes (bfloat16: bfloat16 storage, "
                  "float32 compute)")
flags.DEFINE_integer("prompt_len", 150, "prompt tokens")
flags.DEFINE_integer("num_items", 10_000, "random items in the trie")
flags.DEFINE_integer("num_levels", 4, "L")
flags.DEFINE_integer("codebook_size", 256, "K")
flags.DEFINE_integer("base_vocab", 1000, "non-SID tokens of the small model")
flags.DEFINE_float("min_seconds", 3.0, "timing budget per measurement")
flags.DEFINE_integer("max_iters", 50, "iteration cap per measurement")
flags.DEFINE_bool("hf", True, "also time transformers' generate")
flags.DEFINE_bool("production_shape", True,
                  "also time a Qwen2-0.5B-shaped model (ours only)")
flags.DEFINE_list("production_widths", ["50"], "W for the 0.5B shape")
flags.DEFINE_integer("production_iters", 2, "iterations for the 0.5B shape")
flags.DEFINE_integer("seed", 0, "weights, items and prompts")
flags.DEFINE_string("profile_dir", None, "If set, a TF profiler trace of our "
                    "timed calls is written here (TensorBoard profile plugin)")


def _reset_peak_rss():
  """Resets VmHWM (Linux >= 4.0) so each phase reports its own peak."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def _rss_mb(field="VmRSS:"):
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field):
        return int(line.split()[1]) / 1024
  return None


def _built(make):
  """(make(), the process's RSS growth in MB while it ran)."""
  before = _rss_mb()
  made = make()
  return made, _rss_mb() - before


def _peak_rss_mb():
  peak = _rss_mb("VmHWM:")
  if peak is None:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  return peak


def _time(fn, min_iters=1, max_iters=None):
  """Per-call wall times: at least min_iters, then until min_seconds."""
  max_iters = max_iters or FLAGS.max_iters
  times = []
  start = time.perf_counter()
  while len(times) < min_iters or (
      time.perf_counter() - start < FLAGS.min_seconds and
      len(times) < max_iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times


def _matmul_peak_gflops(dtype):
  """Best GFLOP/s of a large tf.matmul in dtype at the configured threads."""
  n = 2048
  a = tf.cast(tf.random.normal([n, n]), dtype)
  b = tf.cast(tf.random.normal([n, n]), dtype)
  mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
  mm()
  times = _time(lambda: mm().numpy(), min_iters=3, max_iters=10)
  return 2 * n**3 / min(times) / 1e9


def _hf_prefix_fn(trie, prompt_len, sid_offset):
  """prefix_allowed_tokens_fn over the same trie, memoised per prefix."""
  k = trie.codebook_size
  cache = {}

  def allowed(_, sent):
    prefix = tuple(sent[prompt_len:].tolist())
    if prefix not in cache:
      codes = [t - sid_offset - l * k for l, t in enumerate(prefix)]
      level = len(prefix)
      cache[prefix] = (sid_offset + level * k +
                       trie.next_codes_np(codes)).tolist()
    return cache[prefix]

  return allowed


def _small_models(tmp_dir):
  import torch
  import transformers
  vocab = FLAGS.base_vocab + FLAGS.num_levels * FLAGS.codebook_size
  cfg = Qwen2Config(vocab_size=vocab, hidden_size=256, intermediate_size=688,
                    num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2)
  torch.manual_seed(FLAGS.seed)
  hf_config = transformers.Qwen2Config(**cfg.to_hf_dict())
  hf_model = transformers.Qwen2ForCausalLM(hf_config).eval()
  hf_model.save_pretrained(tmp_dir, safe_serialization=True)
  return cfg, hf_model, load_hf_checkpoint(tmp_dir)


def _bench_ours(generator, prompts, width, iters=None):
  ids = tf.constant(prompts)
  lengths = tf.fill([prompts.shape[0]], prompts.shape[1])
  w = tf.fill([prompts.shape[0]], width)
  generator.generate(ids, lengths, w)  # warm-up (graph tracing)
  _reset_peak_rss()
  if FLAGS.profile_dir:
    tf.profiler.experimental.start(FLAGS.profile_dir)
  try:
    times = _time(lambda: generator.generate(ids, lengths, w)[1].numpy(),
                  min_iters=iters or 1, max_iters=iters)
  finally:
    if FLAGS.profile_dir:
      tf.profiler.experimental.stop()
  return times, _peak_rss_mb()


def _bench_hf(hf_model, prompts, width, prefix_fn):
  import torch
  ids = torch.from_numpy(prompts.astype(np.int64))
  kwargs = dict(max_new_tokens=FLAGS.num_levels, do_sample=False,
                prefix_allowed_tokens_fn=prefix_fn, pad_token_id=0,
                eos_token_id=None, early_stopping=False)
  with torch.inference_mode():
    hf_model.generate(ids[:1], attention_mask=torch.ones_like(ids[:1]),
                      num_beams=2, num_return_sequences=2, **kwargs)  # warm-up
    _reset_peak_rss()
    times = _time(lambda: hf_model.generate(
        ids, attention_mask=torch.ones_like(ids), num_beams=width,
        num_return_sequences=width, **kwargs))
  return times, _peak_rss_mb()


def _production_shape(rng, trie):
  """Ours only, batch 1: the cost at a real LLM's shape (random weights)."""
  cfg = Qwen2Config(vocab_size=151936 + FLAGS.num_levels * FLAGS.codebook_size,
                    hidden_size=896, intermediate_size=4864,
                    num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2, rope_theta=1e6,
                    tie_word_embeddings=True)
  logging.info("building the Qwen2-0.5B-shaped model (random weights)")
  model = Qwen2ForCausalLM(cfg, seed=FLAGS.seed)
  gens = _generators(model, trie, 151936, max(map(int,
                                                 FLAGS.production_widths)))
  del model  # The generators hold their own weights.
  results = []
  for width in map(int, FLAGS.production_widths):
    prompts = rng.integers(0, 151936, size=(1, FLAGS.prompt_len),
                           dtype=np.int32)
    for (engine, dtype), (gen, load_mb) in gens.items():
      times, rss = _bench_ours(gen, prompts, width,
                               iters=FLAGS.production_iters)
      results.append(dict(model="Qwen2-0.5B shape", engine=engine,
                          dtype=dtype, cfg=cfg,
                          batch=1, width=width, t=statistics.median(times),
                          rss=rss, load_mb=load_mb))
      logging.info("%s", results[-1])
  return results


def _generators(model, trie, sid_offset, max_width):
  """(engine, dtype) -> (generator, RSS growth in MB while it was built)."""
  gens = {}
  if "tf" in FLAGS.engines:
    for dtype in FLAGS.compute_dtypes:
      gens["tf", dtype] = _built(lambda: BeamSearchGenerator(
          model, trie, sid_offset, max_beam_width=max_width,
          compute_dtype=dtype))
  if "cpu" in FLAGS.engines:
    for dtype in FLAGS.engine_dtypes:
      gens["cpu", dtype] = _built(lambda: EngineGenerator(
          model, trie, sid_offset, max_beam_width=max_width,
          max_prompt_len=FLAGS.prompt_len, num_threads=FLAGS.threads,
          weight_dtype=dtype))
  return gens


def _compute_dtype(r):
  """The dtype the row's matmuls run in (the CPU engine: float32)."""
  return "float32" if r["engine"] == "cpu" else r["dtype"]


def _row(r, peak):
  gflops = beam_search_flops(r["cfg"], r["batch"], r["width"],
                            FLAGS.prompt_len, FLAGS.num_levels,
                            FLAGS.codebook_size) / r["t"] / 1e9
  floor_ms = gflops * r["t"] / peak * 1e3
  row = (f"| {r['model']} | {r['engine']} | {r['dtype']} | {r['batch']} | "
         f"{r['width']} | "
         f"{r['t'] * 1e3:.1f} | {floor_ms:.1f} "
         f"| {r['batch'] / r['t']:.2f} | {gflops:.0f} ({gflops / peak:.0%}) | "
         f"{r['rss']:.0f} | {r['load_mb']:.0f} |")
  if "hf_t" not in r:
    return row + " - | - | - | - |"
  return row + (f" {r['hf_t'] * 1e3:.0f} ({r['hf_iters']}) | "
                f"{r['batch'] / r['hf_t']:.3f} | {r['hf_rss']:.0f} | "
                f"{r['hf_t'] / r['t']:.1f}x |")


def main(_):
  import torch
  tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
  tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
  torch.set_num_threads(FLAGS.threads)
  rng = np.random.default_rng(FLAGS.seed)
  k, num_levels = FLAGS.codebook_size, FLAGS.num_levels
  trie = SemanticIdTrie(rng.integers(0, k, size=(FLAGS.num_items, num_levels)),
                        k)
  logging.info("trie: %d SIDs, nodes per depth %s, max fan-out %s",
               trie.num_sids, list(trie.num_nodes), list(trie.max_children))
  # Measured at both ends of the run, best kept: on a shared machine one
  # measurement can land in a busy moment.
  compute_dtypes = set(FLAGS.compute_dtypes if "tf" in FLAGS.engines else ())
  if "cpu" in FLAGS.engines:
    compute_dtypes.add("float32")
  peaks = {dtype: [_matmul_peak_gflops(dtype)]
           for dtype in sorted(compute_dtypes)}

  with tempfile.TemporaryDirectory() as tmp_dir:
    cfg, hf_model, model = _small_models(tmp_dir)
  hf_models = {dtype: copy.deepcopy(hf_model).to(getattr(torch, dtype))
               for dtype in peaks}
  widths = [int(w) for w in FLAGS.beam_widths]
  generators = _generators(model, trie, FLAGS.base_vocab, max(widths))
  prefix_fn = _hf_prefix_fn(trie, FLAGS.prompt_len, FLAGS.base_vocab)
  results = []
  cases = [(int(b), w) for b in FLAGS.batch_sizes for w in widths]
  for batch, width in tqdm(cases, desc="generator benchmark"):
    prompts = rng.integers(0, cfg.vocab_size, size=(batch, FLAGS.prompt_len),
                           dtype=np.int32)
    hf = {}  # dtype -> transformers' timing of this case, shared by rows
    for (engine, dtype), (generator, load_mb) in generators.items():
      times, rss = _bench_ours(generator, prompts, width)
      r = dict(model="4L-256H", engine=engine, dtype=dtype, cfg=cfg,
               batch=batch, width=width, t=statistics.median(times), rss=rss,
               load_mb=load_mb)
      compute = _compute_dtype(r)
      if FLAGS.hf:
        if compute not in hf:
          hf_times, hf_rss = _bench_hf(hf_models[compute], prompts, width,
                                       prefix_fn)
          hf[compute] = dict(hf_t=statistics.median(hf_times),
                             hf_iters=len(hf_times), hf_rss=hf_rss)
        r.update(hf[compute])
      logging.info("%s", _row(r, peaks[compute][0]))
      results.append(r)
  if FLAGS.production_shape:
    results += _production_shape(rng, trie)
  for dtype, measured in peaks.items():
    measured.append(_matmul_peak_gflops(dtype))
  peak = {dtype: max(measured) for dtype, measured in peaks.items()}
  header = ("| model | generator | dtype | batch | W | ours ms/call (p50) | "
            "floor ms | "
            "ours req/s | ours GFLOP/s (of peak) | ours peak RSS MB | "
            "ours load MB | "
            "HF ms/call (iters) | HF req/s | HF peak RSS MB | ours/HF |")
  print(f"\nmatmul peaks (GFLOP/s, best of the start and end of the run): "
        f"{ {d: round(v) for d, v in peak.items()} } (measured {peaks}), "
        f"{FLAGS.threads} thread(s), {trie.num_sids} SIDs (L={num_levels}, "
        f"K={k}), prompt {FLAGS.prompt_len} tokens, load average at the end "
        f"{os.getloadavg()[1]:.1f} (5 min) on {os.cpu_count()} cores\n")
  print("\n".join([header, "|" + "---|" * (header.count("|") - 1)] +
                  [_row(r, peak[_compute_dtype(r)]) for r in results]))


if __name__ == "__main__":
  app.run(main)
