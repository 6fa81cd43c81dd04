"""BeamSearchGenerator vs references built only on the model's plain forward.

Two independent references, both teacher-forced through
`Qwen2ForCausalLM.__call__` over the whole sequence (no KV cache, no trie
tensors, SIDs from a Python set of tuples):
  * exhaustive: score every valid SID, take the global top W. Beam search
    equals it exactly when W >= the number of trie nodes at every depth below
    the last (nothing is ever pruned);
  * step-wise: a plain beam search that scores every valid child of every
    kept beam with a full forward pass and keeps the top W. Equal to ours for
    any W, including when pruning happens.
"""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2 import Qwen2Config, Qwen2ForCausalLM

SID_OFFSET = 11
K = 8
L = 3
TOL = 1e-4


def _model(seed=0, tie_word_embeddings=False):
  tf.random.set_seed(seed)
  config = Qwen2Config(vocab_size=SID_OFFSET + L * K, hidden_size=32,
                       intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2,
                       tie_word_embeddings=tie_word_embeddings)
  model = Qwen2ForCausalLM(config)
  model(tf.zeros([1, 2], tf.int32), tf.ones([1, 2], tf.int32))
  # Peaked distributions: small default inits give near-uniform level
  # log-probs, where a wrong beam could hide inside the tolerance.
  rng = np.random.default_rng(seed)
  for var in model.trainable_variables:
    if len(var.shape) == 2:
      var.assign(rng.normal(0, 3.0 / np.sqrt(var.shape[-1]),
                            var.shape).astype(np.float32))
  return model


def _sids(seed, n):
  rng = np.random.default_rng(seed)
  return np.unique(rng.integers(0, K, size=(n, L)), axis=0)


def _prompts(seed, lengths):
  """Left-padded [B, P] prompts (base-vocabulary and SID tokens, pad 0)."""
  rng = np.random.default_rng(seed)
  width = max(lengths)
  ids = np.zeros((len(lengths), width), np.int32)
  for row, n in enumerate(lengths):
    ids[row, width - n:] = rng.integers(1, SID_OFFSET + L * K, size=n)
  return ids, np.asarray(lengths, np.int32)


def _level_log_probs(model, sequences, level):
  """log_softmax over level `level`'s K tokens at each sequence's last token.

  sequences: [S, T] unpadded token ids, all of one length.
  """
  seqs = tf.constant(np.asarray(sequences, np.int32))
  logits = model(seqs, tf.ones_like(seqs)).numpy()[:, -1].astype(np.float64)
  rows = logits[:, SID_OFFSET + level * K:SID_OFFSET + (level + 1) * K]
  m = rows.max(axis=1, keepdims=True)
  return rows - m - np.log(np.exp(rows - m).sum(axis=1, keepdims=True))


def _sid_tokens(sid):
  return [SID_OFFSET + l * K + int(c) for l, c in enumerate(sid)]


def _exhaustive_top(model, prompt, sids, width):
  """Global top-`width` SIDs by teacher-forced score."""
  scores = np.zeros(len(sids))
  for level in range(L):
    seqs = [list(prompt) + _sid_tokens(s[:level]) for s in sids]
    scores += _level_log_probs(model, seqs, level)[np.arange(len(sids)),
                                                   sids[:, level]]
  order = np.argsort(-scores, kind="stable")[:width]
  return [tuple(sids[i]) for i in order], scores[order]


def _stepwise_beam_search(model, prompt, sids, width, sid_softmax="level"):
  """Plain beam search: full forward per beam, every valid child scored;
  sid_softmax="trie" renormalises each step over the beam's valid children."""
  valid = {tuple(s) for s in sids.tolist()}
  beams = [((), 0.0)]
  for level in range(L):
    seqs = [list(prompt) + _sid_tokens(p) for p, _ in beams]
    log_probs = _level_log_probs(model, seqs, level)
    candidates = []
    for (prefix, score), lp in zip(beams, log_probs):
      children = sorted({s[level] for s in valid if s[:level] == prefix})
      if sid_softmax == "trie":
        lp = lp - np.log(np.exp(lp[children]).sum())
      candidates += [(prefix + (c,), score + lp[c]) for c in children]
    candidates.sort(key=lambda x: -x[1])
    beams = candidates[:width]
  return [p for p, _ in beams], np.array([s for _, s in beams])


def _run(generator, prompts, lengths, width):
  """width: one int for every row, or one per row."""
  widths = np.broadcast_to(np.asarray(width, np.int32), [len(lengths)])
  codes, scores = generator.generate(tf.constant(prompts),
                                     tf.constant(lengths),
                                     tf.constant(widths))
  return codes.numpy(), scores.numpy()


def _check_against(reference, codes, scores):
  ref_ids, ref_scores = reference
  n = len(ref_ids)
  assert [tuple(c) for c in codes[:n].tolist()] == ref_ids
  np.testing.assert_allclose(scores[:n], ref_scores, atol=TOL, rtol=0)
  # Whatever the reference could not fill is invalid padding.
  assert np.all(np.isneginf(scores[n:])) and np.all(codes[n:] == -1)


@pytest.fixture(scope="module")
def model():
  return _model()


@pytest.mark.parametrize("width", [1, 5, 50])
def test_matches_exhaustive_reference_without_pruning(model, width):
  """Small trie: at most 50 nodes at every depth, so W=50 never prunes and
  beam search must equal the exhaustive global top-W; W=1 and W=5 prune and
  are checked against the step-wise reference in the next test."""
  sids = _sids(1, 30)
  trie = SemanticIdTrie(sids, K)
  assert max(trie.num_nodes[1:L]) <= 50
  gen = BeamSearchGenerator(model, trie, SID_OFFSET, max_beam_width=64)
  prompts, lengths = _prompts(2, [7, 3, 12])
  codes, scores = _run(gen, prompts, lengths, width)
  assert codes.shape == (3, width, L) and scores.shape == (3, width)
  for row in range(3):
    prompt = prompts[row, prompts.shape[1] - lengths[row]:]
    if width == 50:
      reference = _exhaustive_top(model, prompt, sids, width)
    else:
      reference = _stepwise_beam_search(model, prompt, sids, width)
    _check_against(reference, codes[row], scores[row])


@pytest.mark.parametrize("width", [1, 5, 50])
def test_matches_stepwise_reference_with_pruning(model, width):
  """Larger trie (more than 50 nodes at depth 2): every width prunes, so
  the reference is the step-wise teacher-forced beam search."""
  sids = _sids(3, 300)
  trie = SemanticIdTrie(sids, K)
  assert trie.num_nodes[2] > 50
  gen = BeamSearchGenerator(model, trie, SID_OFFSET, max_beam_width=64)
  prompts, lengths = _prompts(4, [9, 5])
  codes, scores = _run(gen, prompts, lengths, width)
  for row in range(2):
    prompt = prompts[row, prompts.shape[1] - lengths[row]:]
    _check_against(_stepwise_beam_search(model, prompt, sids, width),
                   codes[row], scores[row])


@pytest.mark.parametrize("width", [1, 5, 64])
def test_trie_softmax_matches_stepwise_reference(model, width):
  """sid_softmax="trie": each step normalised over the trie children only."""
  sids = _sids(3, 300)
  trie = SemanticIdTrie(sids, K)
  gen = BeamSearchGenerator(model, trie, SID_OFFSET, max_beam_width=64,
                            sid_softmax="trie")
  prompts, lengths = _prompts(4, [9, 5])
  codes, scores = _run(gen, prompts, lengths, width)
  for row in range(2):
    prompt = prompts[row, prompts.shape[1] - lengths[row]:]
    _check_against(_stepwise_beam_search(model, prompt, sids, width, "trie"),
                   codes[row], scores[row])


def test_trie_softmax_is_a_distribution_over_existing_sids(model):
  """Without pruning, trie-softmax scores of all SIDs sum to one (level
  softmax leaks the mass of codes no item has)."""
  sids = _sids(1, 30)
  trie = SemanticIdTrie(sids, K)
  prompts, lengths = _prompts(2, [7, 3])
  totals = {}
  for softmax in ("level", "trie"):
    gen = BeamSearchGenerator(model, trie, SID_OFFSET, max_beam_width=64,
                              sid_softmax=softmax)
    codes, scores = _run(gen, prompts, lengths, 64)
    assert np.all(codes[:, :len(sids)] >= 0)
    totals[softmax] = np.exp(scores).sum(axis=1)
  np.testing.assert_allclose(totals["trie"], 1.0, rtol=1e-5)
  assert np.all(totals["level"] < 0.9)


def test_tied_embeddings_match_stepwise_reference():
  """With tied embeddings the level heads come from the input embedding."""
  tied = _model(seed=1, tie_word_embeddings=True)
  assert tied.lm_head is None
  sids = _sids(19, 100)
  gen = BeamSearchGenerator(tied, SemanticIdTrie(sids, K), SID_OFFSET, 16)
  prompts, lengths = _prompts(20, [6, 3])
  codes, scores = _run(gen, prompts, lengths, 8)
  for row in range(2):
    prompt = prompts[row, prompts.shape[1] - lengths[row]:]
    _check_against(_stepwise_beam_search(tied, prompt, sids, 8),
                   codes[row], scores[row])


def test_outputs_are_distinct_valid_sids_best_first(model):
  sids = _sids(5, 120)
  valid = {tuple(s) for s in sids.tolist()}
  gen = BeamSearchGenerator(model, SemanticIdTrie(sids, K), SID_OFFSET, 64)
  prompts, lengths = _prompts(6, [4, 10, 1, 6])
  codes, scores = _run(gen, prompts, lengths, 40)
  for row in range(4):
    got = [tuple(c) for c in codes[row].tolist()]
    assert all(g in valid for g in got)
    assert len(set(got)) == len(got)
    assert np.all(np.isfinite(scores[row]))
    assert np.all(np.diff(scores[row]) <= 0)


def test_fewer_reachable_sids_than_beams_are_padded(model):
  sids = np.array([[0, 1, 2], [0, 1, 3], [5, 0, 0]])
  gen = BeamSearchGenerator(model, SemanticIdTrie(sids, K), SID_OFFSET, 16)
  prompts, lengths = _prompts(7, [5, 2])
  codes, scores = _run(gen, prompts, lengths, 5)
  for row in range(2):
    got = sorted(tuple(c) for c in codes[row, :3].tolist())
    assert got == sorted(tuple(s) for s in sids.tolist())
    assert np.all(np.isfinite(scores[row, :3]))
    assert np.all(np.isneginf(scores[row, 3:]))
    assert np.all(codes[row, 3:] == -1)


def test_padding_and_batching_do_not_change_results(model):
  """A row gives the same beams alone (unpadded) as inside a left-padded
  batch with longer and shorter neighbours."""
  sids = _sids(8, 100)
  gen = BeamSearchGenerator(model, SemanticIdTrie(sids, K), SID_OFFSET, 32)
  prompts, lengths = _prompts(9, [6, 13, 2])
  batch_codes, batch_scores = _run(gen, prompts, lengths, 20)
  for row in range(3):
    alone = prompts[row:row + 1, prompts.shape[1] - lengths[row]:]
    codes, scores = _run(gen, alone, lengths[row:row + 1], 20)
    np.testing.assert_array_equal(codes[0], batch_codes[row])
    np.testing.assert_allclose(scores[0], batch_scores[row], atol=TOL)


def test_per_row_widths_equal_each_row_searched_alone(model):
  """Rows of one batch ask for different widths: row b's first
  beam_width[b] beams equal a beam_width[b]-wide search of the row alone
  (not the first beams of the widest row's search, which differ once the
  wide search keeps beams a narrow one pruned), and the rest is padding."""
  sids = _sids(3, 300)
  gen = BeamSearchGenerator(model, SemanticIdTrie(sids, K), SID_OFFSET, 32)
  rng = np.random.default_rng(22)
  pruned_differently = 0
  for trial in range(4):
    batch = int(rng.integers(2, 6))
    prompts, lengths = _prompts(30 + trial,
                                rng.integers(1, 14, batch).tolist())
    widths = rng.integers(1, 33, batch).astype(np.int32)
    widths[0] = 32  # a wide batch-mate for every narrow row
    codes, scores = _run(gen, prompts, lengths, widths)
    assert codes.shape == (batch, 32, L) and scores.shape == (batch, 32)
    for row, width in enumerate(widths):
      alone = prompts[row:row + 1, prompts.shape[1] - lengths[row]:]
      alone_codes, alone_scores = _run(gen, alone, lengths[row:row + 1],
                                       width)
      np.testing.assert_array_equal(codes[row, :width], alone_codes[0])
      # TOL as for padding above: this deliberately peaked model's large
      # activations make a prompt's left padding move scores by ~5e-5.
      np.testing.assert_allclose(scores[row, :width], alone_scores[0],
                                 atol=TOL, rtol=0)
      assert np.all(codes[row, width:] == -1)
      assert np.all(np.isneginf(scores[row, width:]))
      widest_codes, _ = _run(gen, alone, lengths[row:row + 1], 32)
      pruned_differently += not np.array_equal(widest_codes[0, :width],
                                                alone_codes[0])
  assert pruned_differently >= 3  # the old "first W of the widest" was wrong


def test_bad_inputs_raise_invalid_argument(model):
  gen = BeamSearchGenerator(model, SemanticIdTrie(_sids(10, 20), K),
                            SID_OFFSET, max_beam_width=8)
  prompts, lengths = _prompts(11, [3, 4])
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"beam_width must be <= max_beam_width=8"):
    _run(gen, prompts, lengths, 9)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"beam_width"):
    _run(gen, prompts, lengths, 0)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"lengths"):
    _run(gen, prompts, np.array([3, 5], np.int32), 4)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"lengths"):
    _run(gen, prompts, np.array([0, 4], np.int32), 4)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"beam_width must have one entry per"):
    gen.generate(tf.constant(prompts), tf.constant(lengths),
                 tf.constant([4, 4, 4]))
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"at least one row"):
    _run(gen, prompts[:0], lengths[:0], 4)


def test_constructor_rejects_bad_limits(model):
  trie = SemanticIdTrie(_sids(12, 20), K)
  with pytest.raises(ValueError, match=r"max_beam_width"):
    BeamSearchGenerator(model, trie, SID_OFFSET, 2000)
  with pytest.raises(ValueError, match=r"sid_offset"):
    BeamSearchGenerator(model, trie, SID_OFFSET + 1, 8)
  with pytest.raises(ValueError, match=r"compute_dtype"):
    BeamSearchGenerator(model, trie, SID_OFFSET, 8, compute_dtype="float16")
  with pytest.raises(ValueError, match=r"sid_softmax"):
    BeamSearchGenerator(model, trie, SID_OFFSET, 8, sid_softmax="global")


def test_saved_model_round_trip(model, tmp_path):
  sids = _sids(13, 60)
  gen = BeamSearchGenerator(model, SemanticIdTrie(sids, K), SID_OFFSET, 32)
  prompts, lengths = _prompts(14, [5, 8])
  expected = _run(gen, prompts, lengths, 12)
  tf.saved_model.save(gen, str(tmp_path))
  loaded = tf.saved_model.load(str(tmp_path))
  for width in (12, 3):
    got = _run(loaded, prompts, lengths, width)
    ref = expected if width == 12 else _run(gen, prompts, lengths, width)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_allclose(got[1], ref[1], atol=1e-6)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"beam_width"):
    _run(loaded, prompts, lengths, 33)


def _native_bfloat16():
  """Whether the CPU computes bfloat16 dot products natively (oneDNN then
  accumulates exactly in float32; without it TF emulates and rounds more)."""
  with open("/proc/cpuinfo") as f:
    flags = f.read()
  return "avx512_bf16" in flags or "amx_bf16" in flags


def _check_agreement(fp32, bf16, valid, min_common, rtol, atol):
  """(codes, scores) of a bfloat16 run against the float32 run, per row: its
  beams are valid, distinct SIDs in score order, with the same best SID and
  at least min_common of the same SIDs, whose scores agree within rtol/atol.
  Returns the largest relative score difference of a shared SID."""
  (codes32, scores32), (codes16, scores16) = fp32, bf16
  worst = 0.0
  for row in range(len(codes32)):
    got32 = [tuple(c) for c in codes32[row].tolist()]
    got16 = [tuple(c) for c in codes16[row].tolist()]
    assert all(g in valid for g in got16) and len(set(got16)) == len(got16)
    assert np.all(np.diff(scores16[row]) <= 0)
    assert got16[0] == got32[0]
    common = set(got16) & set(got32)
    assert len(common) >= min_common
    s32 = np.array([scores32[row][got32.index(c)] for c in common])
    s16 = np.array([scores16[row][got16.index(c)] for c in common])
    np.testing.assert_allclose(s16, s32, rtol=rtol, atol=atol)
    worst = max(worst, float(np.max(np.abs(s16 - s32) / np.abs(s32))))
  return worst


def test_bfloat16_agrees_with_float32(model):
  """bfloat16 matmuls round every projection to 8 mantissa bits; on this
  deliberately peaked model (large activations amplify rounding) the beams
  must still be valid, distinct SIDs, with the same best SID, nearly the same
  top 10, and the scores of shared SIDs within ~10% on a CPU with native
  bfloat16 (observed max 9.6%), ~35% where TF emulates it (observed max 34%
  on an AVX2-only CPU)."""
  rtol = 0.15 if _native_bfloat16() else 0.4
  sids = _sids(15, 200)
  valid = {tuple(s) for s in sids.tolist()}
  trie = SemanticIdTrie(sids, K)
  fp32 = BeamSearchGenerator(model, trie, SID_OFFSET, 32)
  bf16 = BeamSearchGenerator(model, trie, SID_OFFSET, 32,
                             compute_dtype="bfloat16")
  prompts, lengths = _prompts(16, [5, 9, 2, 12, 7, 3])
  _check_agreement(_run(fp32, prompts, lengths, 10),
                   _run(bf16, prompts, lengths, 10), valid, min_common=8,
                   rtol=rtol, atol=0.05)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_saved_model_holds_one_copy_of_the_weights(model, dtype, tmp_path):
  """The generator keeps its own fused weights and no reference to the
  model, so the export holds each weight once (norm weights folded in; of
  the untied LM head only its level rows, as float32 level heads); bfloat16
  stores the rest in half the bytes. The loaded model reproduces the
  in-memory one exactly."""
  trie = SemanticIdTrie(_sids(17, 60), K)
  gen = BeamSearchGenerator(model, trie, SID_OFFSET, 16, compute_dtype=dtype)
  prompts, lengths = _prompts(18, [4, 7])
  expected = _run(gen, prompts, lengths, 8)
  tf.saved_model.save(gen, str(tmp_path))
  reader = tf.train.load_checkpoint(str(tmp_path / "variables" /
                                        "variables"))
  dtypes = reader.get_variable_to_dtype_map()
  shapes = reader.get_variable_to_shape_map()
  saved = {}
  for name, var_dtype in dtypes.items():
    if var_dtype.is_floating:
      saved[var_dtype] = (saved.get(var_dtype, 0) +
                          int(np.prod(shapes[name])))
  config = model.config
  norms = (2 * config.num_hidden_layers + 1) * config.hidden_size
  weights = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  # Of an untied LM head only the level rows are kept (as the heads).
  weights -= int(np.prod(model.lm_head.kernel.shape))
  heads = L * K * config.hidden_size
  compute = tf.as_dtype(dtype)
  if compute == tf.float32:
    assert saved == {tf.float32: weights - norms + heads}
  else:
    assert saved == {tf.bfloat16: weights - norms, tf.float32: heads}
  got = _run(tf.saved_model.load(str(tmp_path)), prompts, lengths, 8)
  np.testing.assert_array_equal(got[0], expected[0])
  np.testing.assert_array_equal(got[1], expected[1])
