"""GenrecGenerate + the CPU engine vs the TF-native generator and the
teacher-forced references of test_beam_search.py (same models, tries and
prompts), the per-row width contract, bad input, the bounded queue, batch
invariance under concurrency, and the resource's SavedModel lifecycle."""
import concurrent.futures
import gc
import os
import struct

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from recall_testlib import tiny_recall_assets
from test_beam_search import (K, L, SID_OFFSET, _check_against,
                              _check_agreement, _exhaustive_top, _model,
                              _prompts, _sids, _stepwise_beam_search)
from tf_genrec import ops
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.evaluation import saved_model_recall
from tf_genrec.generation import engine_generator
from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2 import Qwen2Config, Qwen2ForCausalLM

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
  return _model()


def _engine(model, trie, tmp_path, **kwargs):
  kwargs.setdefault("max_beam_width", 64)
  return EngineGenerator(model, trie, SID_OFFSET, engine_dir=str(tmp_path),
                         **kwargs)


def _generate(gen, prompts, lengths, widths):
  codes, scores = gen.generate(tf.constant(prompts), tf.constant(lengths),
                               tf.constant(widths, tf.int32))
  return codes.numpy(), scores.numpy()


@pytest.mark.parametrize("sid_softmax", ["level", "trie"])
@pytest.mark.parametrize("num_sids,seed", [(30, 1), (300, 3)])
def test_matches_tf_generator_and_references(model, tmp_path, num_sids, seed,
                                             sid_softmax):
  """Same IDs and scores (1e-4) as BeamSearchGenerator for W in 1/5/50 on
  a small trie (nothing pruned at W=50) and a larger one (every W prunes),
  padded prompts in one batch; and the exhaustive / step-wise references."""
  sids = _sids(seed, num_sids)
  trie = SemanticIdTrie(sids, K)
  engine = _engine(model, trie, tmp_path, sid_softmax=sid_softmax)
  native = BeamSearchGenerator(model, trie, SID_OFFSET, max_beam_width=64,
                               sid_softmax=sid_softmax)
  prompts, lengths = _prompts(seed + 1, [7, 3, 12])
  for width in (1, 5, 50):
    codes, scores = _generate(engine, prompts, lengths, [width] * 3)
    ref_codes, ref_scores = native.generate(tf.constant(prompts),
                                            tf.constant(lengths),
                                            tf.constant(width))
    np.testing.assert_array_equal(codes, ref_codes.numpy())
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=TOL, rtol=0)
  # The teacher-forced references are slow: one row at W=50 (test_beam_search
  # checks the TF generator on every case).
  prompt = prompts[1, prompts.shape[1] - lengths[1]:]
  if num_sids == 30 and sid_softmax == "level":
    reference = _exhaustive_top(model, prompt, sids, 50)
  else:
    reference = _stepwise_beam_search(model, prompt, sids, 50, sid_softmax)
  _check_against(reference, codes[1], scores[1])


def test_per_row_widths_are_each_rows_own_search(model, tmp_path):
  """Row b's first beam_width[b] beams equal a call of that width alone;
  past them -1/-inf; W is the batch's widest."""
  trie = SemanticIdTrie(_sids(3, 300), K)
  gen = _engine(model, trie, tmp_path)
  prompts, lengths = _prompts(5, [9, 5, 4])
  widths = [5, 50, 1]
  codes, scores = _generate(gen, prompts, lengths, widths)
  assert codes.shape == (3, 50, L) and scores.shape == (3, 50)
  for row, w in enumerate(widths):
    alone_codes, alone_scores = _generate(gen, prompts[row:row + 1],
                                          lengths[row:row + 1], [w])
    np.testing.assert_array_equal(codes[row, :w], alone_codes[0])
    np.testing.assert_array_equal(scores[row, :w], alone_scores[0])
    assert np.all(codes[row, w:] == -1) and np.all(np.isneginf(scores[row, w:]))


def test_tied_embeddings(tmp_path):
  tied = _model(seed=1, tie_word_embeddings=True)
  trie = SemanticIdTrie(_sids(19, 100), K)
  prompts, lengths = _prompts(6, [6, 10])
  codes, scores = _generate(_engine(tied, trie, tmp_path), prompts, lengths,
                            [5, 5])
  ref = BeamSearchGenerator(tied, trie, SID_OFFSET, max_beam_width=64)
  ref_codes, ref_scores = ref.generate(tf.constant(prompts),
                                       tf.constant(lengths), tf.constant(5))
  np.testing.assert_array_equal(codes, ref_codes.numpy())
  np.testing.assert_allclose(scores, ref_scores.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("prompts,lengths,widths,message", [
    ([[1, 2]], [1], [0], r"beam_width\[0\]=0 must be in \[1, max_beam_width=64\]"),
    ([[1, 2]], [1], [65], r"beam_width\[0\]=65"),
    ([[1, 2]], [3], [1], r"lengths\[0\]=3 must be in \[1, input_ids.shape\[1\]=2\]"),
    ([[1, 2]], [1, 1], [1], r"must be \[B\] with B=1"),
    ([[1, 99]], [2], [1], r"prompt token 1=99 is outside \[0, vocab_size=35\)"),
    ([[1] * 20], [20], [1], r"prompt length=20 must be in \[1, max_prompt_len=16\]"),
])
def test_bad_input_names_the_value(model, tmp_path, prompts, lengths, widths,
                                   message):
  gen = _engine(model, SemanticIdTrie(_sids(1, 30), K), tmp_path,
                max_prompt_len=16)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    _generate(gen, np.asarray(prompts, np.int32), np.asarray(lengths, np.int32),
              widths)


def test_full_queue_is_resource_exhausted(model, tmp_path):
  gen = _engine(model, SemanticIdTrie(_sids(1, 30), K), tmp_path,
                max_queued_requests=2)
  prompts, lengths = _prompts(7, [5] * 40)
  with pytest.raises(tf.errors.ResourceExhaustedError,
                     match="max_queued_requests=2"):
    _generate(gen, prompts, lengths, [50] * 40)
  # The engine keeps serving.
  codes, _ = _generate(gen, prompts[:1], lengths[:1], [5])
  assert np.all(codes[0] >= 0)


@pytest.mark.parametrize("weight_dtype", ["float32", "bfloat16"])
def test_concurrent_calls_match_each_call_alone(model, tmp_path, weight_dtype):
  """64 threads with random prompts and widths: every answer is bit-for-bit
  the answer of the same call made alone, and the scheduler did merge
  requests into shared steps, their rows into shared products (the row
  tiling the engine measured on this CPU, row_tiling.h)."""
  trie = SemanticIdTrie(_sids(3, 300), K)
  gen = _engine(model, trie, tmp_path, weight_dtype=weight_dtype)
  rng = np.random.default_rng(8)
  calls = []
  for i in range(64):
    batch = int(rng.integers(1, 4))
    prompts, lengths = _prompts(100 + i, rng.integers(1, 14, batch).tolist())
    calls.append((prompts, lengths, rng.integers(1, 65, batch).tolist()))
  alone = [_generate(gen, *c) for c in calls]
  steps_alone = gen.stats()["max_step_requests"]
  with concurrent.futures.ThreadPoolExecutor(64) as pool:
    together = list(pool.map(lambda c: _generate(gen, *c), calls))
  for (codes, scores), (ref_codes, ref_scores) in zip(together, alone):
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scores, ref_scores)
  stats = gen.stats()
  assert stats["max_step_requests"] > max(steps_alone, 3)
  assert stats["row_tile"] > 0, "no row tiling: requests' products not merged"
  assert stats["padding_rows"] > 0


def test_stats_op_keeps_its_first_output_for_older_saved_models(model,
                                                                 tmp_path):
  """Without num_stats the op gives the 13 counters it gave before row_tile
  and padding_rows existed: the [13] output SavedModels exported then
  record, so they still load; ops.generation_engine_stats asks for all."""
  gen = _engine(model, SemanticIdTrie(_sids(1, 30), K), tmp_path)
  _generate(gen, *_prompts(3, [4]), [5])
  handle = gen.engine.resource_handle
  first = ops._lib.genrec_generation_engine_stats(handle).numpy()  # pylint: disable=protected-access
  every = ops.generation_engine_stats(handle).numpy()
  assert first.shape == (13,) and every.shape == (len(ops.ENGINE_STATS),)
  np.testing.assert_array_equal(first, every[:13])
  assert every[ops.ENGINE_STATS.index("requests_completed")] == 1


def _rounded_to_bfloat16(model):
  """A float32 model whose matrices hold bfloat16 values (round to nearest
  even, by ml_dtypes): what a bfloat16 engine file stores; norm weights and
  biases (1-D) stay as they are, as in the file."""
  rounded = _model()  # the module fixture's weights (same seed)
  for var in rounded.trainable_variables:
    if len(var.shape) == 2:
      var.assign(var.numpy().astype(ml_dtypes.bfloat16).astype(np.float32))
  return rounded


def test_bfloat16_weights_are_exactly_the_rounded_float32_weights(model,
                                                                 tmp_path):
  """The bfloat16 path (uint16 storage, widened per GEMM block and per
  embedding row, norms applied to the activations instead of folded) equals
  the float32 engine run on weights rounded to bfloat16 beforehand: same
  IDs, scores within 1e-4 (the two differ only in where the norm weights
  are multiplied)."""
  trie = SemanticIdTrie(_sids(3, 300), K)
  bf16 = _engine(model, trie, tmp_path / "bf16", weight_dtype="bfloat16")
  reference = _engine(_rounded_to_bfloat16(model), trie, tmp_path / "fp32")
  prompts, lengths = _prompts(4, [7, 3, 12])
  for width in (1, 5, 50):
    codes, scores = _generate(bf16, prompts, lengths, [width] * 3)
    ref_codes, ref_scores = _generate(reference, prompts, lengths, [width] * 3)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(scores, ref_scores, atol=TOL, rtol=0)


def test_bfloat16_weights_agree_with_float32(model, tmp_path):
  """bfloat16 storage, float32 compute, on the deliberately peaked model and
  the cases of test_beam_search.py's TF-native bfloat16 test: valid,
  distinct SIDs, the same best SID, at least 9 of the float32 top 10, shared
  SIDs' scores within 10% (+0.05). Observed on this AVX2 CPU: the same best
  SID and all 10 of the top 10 on every row, max relative score difference
  5.6% (0.34 absolute), where the TF-native bfloat16 generator, which also
  rounds activations, is allowed 15-40%. Prints the largest difference."""
  sids = _sids(15, 200)
  trie = SemanticIdTrie(sids, K)
  fp32 = _engine(model, trie, tmp_path / "fp32")
  bf16 = _engine(model, trie, tmp_path / "bf16", weight_dtype="bfloat16")
  prompts, lengths = _prompts(16, [5, 9, 2, 12, 7, 3])
  worst = _check_agreement(_generate(fp32, prompts, lengths, [10] * 6),
                           _generate(bf16, prompts, lengths, [10] * 6),
                           {tuple(s) for s in sids.tolist()}, min_common=9,
                           rtol=0.1, atol=0.05)
  print(f"bfloat16 engine vs float32: max relative score difference "
        f"{worst:.2%}")


def test_bfloat16_file_halves_the_matrices(model, tmp_path):
  """The bfloat16 file is the float32 one less 2 bytes per matrix element
  (embedding, q/k/v/o, gate/up/down, the LM head's SID rows): norms,
  biases, header and semantic IDs keep their size."""
  trie = SemanticIdTrie(_sids(1, 30), K)
  sizes = {}
  for dtype in ("float32", "bfloat16"):
    _engine(model, trie, tmp_path / dtype, weight_dtype=dtype)
    sizes[dtype] = os.path.getsize(
        tmp_path / dtype / engine_generator.ENGINE_FILE_NAME)
  c = model.config
  qw, kvw = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
  per_layer = c.hidden_size * (2 * qw + 2 * kvw + 3 * c.intermediate_size)
  matrices = (c.vocab_size * c.hidden_size + c.num_hidden_layers * per_layer +
              L * K * c.hidden_size)
  assert sizes["float32"] - sizes["bfloat16"] == 2 * matrices
  assert sizes["bfloat16"] < 0.55 * sizes["float32"]


def _rewrite_header(monkeypatch, header):
  """Makes EngineGenerator write `header` in place of the file's magic and
  weight_dtype field (float32 weights)."""
  write = engine_generator.write_engine_file

  def rewritten(path, *args):
    write(path, *args)
    with open(path, "rb") as f:
      data = f.read()
    assert data[:12] == b"TFGRENG2" + struct.pack("<i", 0)
    with open(path, "wb") as f:
      f.write(header + data[12:])

  monkeypatch.setattr(engine_generator, "write_engine_file", rewritten)


def test_version_1_float32_file_still_loads(model, tmp_path, monkeypatch):
  """A file of the format before the weight_dtype field ("TFGRENG1", float32
  weights) gives the same answers, bit for bit, as the current format."""
  trie = SemanticIdTrie(_sids(3, 300), K)
  prompts, lengths = _prompts(4, [7, 3, 12])
  current = _generate(_engine(model, trie, tmp_path / "v2"), prompts, lengths,
                      [5] * 3)
  _rewrite_header(monkeypatch, b"TFGRENG1")
  old = _generate(_engine(model, trie, tmp_path / "v1"), prompts, lengths,
                  [5] * 3)
  for a, b in zip(old, current):
    np.testing.assert_array_equal(a, b)


def test_unknown_weight_dtype_names_the_value(model, tmp_path, monkeypatch):
  _rewrite_header(monkeypatch, b"TFGRENG2" + struct.pack("<i", 7))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"weight dtype=7 must be 0 \(float32\) or 1"):
    _engine(model, SemanticIdTrie(_sids(1, 30), K), tmp_path)


def _rss_mb():
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024


def test_savedmodel_owns_its_engine(tmp_path):
  """Saved, loaded by stock tf.saved_model.load from the assets, and
  destroyed with the loaded object: repeated load/unload of a model with a
  ~15 MB engine does not grow the process."""
  config = Qwen2Config(vocab_size=120_000, hidden_size=32,
                       intermediate_size=48, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2)
  big = Qwen2ForCausalLM(config)
  big(tf.zeros([1, 2], tf.int32), tf.ones([1, 2], tf.int32))
  trie = SemanticIdTrie(_sids(1, 30), K)
  gen = _engine(big, trie, tmp_path / "engine")
  prompts, lengths = _prompts(9, [4, 7])
  expected = _generate(gen, prompts, lengths, [5, 3])
  path = str(tmp_path / "saved")
  tf.saved_model.save(gen, path)
  del gen
  engine_file = os.path.join(path, "assets", "generation_engine.bin")
  assert os.path.getsize(engine_file) > 15e6

  def load_and_run():
    loaded = tf.saved_model.load(path)
    got = _generate(loaded, prompts, lengths, [5, 3])
    for a, b in zip(got, expected):
      np.testing.assert_array_equal(a, b)
    del loaded
    gc.collect()

  load_and_run()
  before = _rss_mb()
  for _ in range(3):
    load_and_run()
  # A leaked engine would keep >= 15 MB each time (45 MB in all).
  assert _rss_mb() - before < 25


def test_temporary_engine_file_goes_with_its_generator(model, tmp_path):
  """Without engine_dir the engine file is written to a temporary directory
  that is removed with the generator, after export copied the file into
  the SavedModel, which still loads and answers the same."""
  gen = EngineGenerator(model, SemanticIdTrie(_sids(1, 30), K), SID_OFFSET,
                        max_beam_width=8)
  engine_dir = gen.engine_dir
  prompts, lengths = _prompts(9, [4, 7])
  expected = _generate(gen, prompts, lengths, [5, 3])
  path = str(tmp_path / "saved")
  tf.saved_model.save(gen, path)
  assert os.listdir(engine_dir)
  del gen
  gc.collect()
  assert not os.path.exists(engine_dir)
  got = _generate(tf.saved_model.load(path), prompts, lengths, [5, 3])
  for a, b in zip(got, expected):
    np.testing.assert_array_equal(a, b)


def _recall_inputs(a):
  """Two histories of tiny_recall_assets' items, W 4 and 16."""
  ids = np.asarray([a["item_ids"][:3], a["item_ids"][3:6]], np.int64)
  return dict(item_ids=tf.constant(ids),
              timestamps=tf.constant([[1, 2, 3]] * 2, tf.int64),
              action_types=tf.zeros([2, 3], tf.int32),
              lengths=tf.constant([3, 2]),
              request_time=tf.constant([9, 9], tf.int64),
              beam_width=tf.constant([4, 16]), top_n=tf.constant([5, 20]))


def test_exported_recall_model_with_cpu_engine_matches_tf(tmp_path):
  """`--engine=cpu` through the whole recall path: the exported SavedModel
  (serving_default) returns the items of the TF-native recall model."""
  a = tiny_recall_assets(tmp_path)
  inputs = _recall_inputs(a)
  native = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                   engine="tf").recall(**inputs)
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                  engine="cpu")
  path = export_saved_model(model, str(tmp_path / "cpu"), 1)
  del model
  # Keep the loaded object: it owns the engine (destroyed when collected).
  loaded = tf.saved_model.load(path)
  served = loaded.signatures["serving_default"](**inputs)
  for key in ("item_ids", "semantic_ids"):
    np.testing.assert_array_equal(served[key], native[key])
  np.testing.assert_allclose(served["scores"], native["scores"], atol=TOL,
                             rtol=0)


def test_cpu_engine_takes_generator_dtype_bfloat16(tmp_path):
  """What `export --engine=cpu --generator_dtype=bfloat16` builds: an engine
  file of bfloat16 weights, whose recall (this tiny model's distributions
  are peaked) ranks first the items the TF-native float32 model does; a
  TensorRT-LLM engine has its own dtype, so the option is refused there."""
  a = tiny_recall_assets(tmp_path)
  inputs = _recall_inputs(a)
  native = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                   engine="tf").recall(**inputs)
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                  engine="cpu", generator_dtype="bfloat16")
  path = model.generator.engine._asset.asset_path.numpy().decode()
  with open(path, "rb") as f:
    assert f.read(12) == b"TFGRENG2" + struct.pack("<i", 1)
  got = model.recall(**inputs)
  np.testing.assert_array_equal(got["item_ids"][:, 0],
                                native["item_ids"][:, 0])
  with pytest.raises(ValueError, match="generator_dtype='bfloat16' is for "
                     "engine 'tf' or 'cpu'"):
    build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                            engine="tensorrt_llm", engine_dir=str(tmp_path),
                            generator_dtype="bfloat16")


def test_evaluation_keeps_the_engine_alive(tmp_path, monkeypatch):
  """The evaluation tools run a loaded SavedModel's signature batch after
  batch: the loaded object, which owns the engine, must outlive them even
  when the garbage collector runs between batches (as `tf-genrec demo`'s
  evaluation found)."""
  a = tiny_recall_assets(tmp_path)
  paths = {}
  for engine in ("tf", "cpu"):
    model = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                    engine=engine)
    paths[engine] = export_saved_model(model, str(tmp_path / engine), 1)
    del model
  histories = [a["item_ids"][:3], a["item_ids"][3:6], a["item_ids"][1:5]]
  requests = saved_model_recall.history_requests

  def collecting(chunk):
    gc.collect()
    return requests(chunk)

  monkeypatch.setattr(saved_model_recall, "history_requests", collecting)
  got = {engine: saved_model_recall.recall_saved_model(
      path, histories, beam_width=4, top_n=5, batch_size=1)
         for engine, path in paths.items()}
  np.testing.assert_array_equal(got["cpu"], got["tf"])
