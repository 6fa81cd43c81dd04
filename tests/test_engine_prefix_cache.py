"""The CPU engine's prefix K/V cache (custom_ops/engine/prefix_cache.h)
through GenrecGenerate: users' prompts replayed click by click (each prompt
extends the user's previous one) get bit for bit the answers of a cold
cache, and the answers of the cache off within 1e-5 (relative); under LRU
eviction and concurrent users too; bad cache settings are clear errors; an
exported recall model keeps its cache setting and the server's metrics show
the cache's counters."""
import concurrent.futures

import numpy as np
import pytest
import tensorflow as tf

from recall_testlib import tiny_recall_assets
from test_beam_search import K, L, SID_OFFSET, _model, _sids
from test_engine_op import _engine, _generate
from tf_genrec.builders.build import build_generative_recall
from tf_genrec.builders.export import export_saved_model
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.serving.metrics import ServerMetrics
from tf_genrec.serving.servable import Servable

PREFIX = [1, 2, 3, 4, 5]
SEPARATOR = 6
BLOCK = 4
# K/V floats of one block: 2 layers x (k, v) x BLOCK tokens x 2 KV heads x 8.
BLOCK_BYTES = 2 * 2 * BLOCK * 16 * 4


@pytest.fixture(scope="module")
def model():
  return _model()


@pytest.fixture(scope="module")
def trie():
  return SemanticIdTrie(_sids(3, 300), K)


def _click_prompts(seed, users, clicks):
  """Per user, the prompt after each click: PREFIX + (SID + separator) per
  clicked item, so each prompt extends the previous one by L + 1 tokens."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(users):
    tokens, prompts = list(PREFIX), []
    for _ in range(clicks):
      codes = rng.integers(0, K, L)
      tokens += [SID_OFFSET + l * K + int(c) for l, c in enumerate(codes)]
      tokens.append(SEPARATOR)
      prompts.append(np.asarray(tokens, np.int32))
    out.append(prompts)
  return out


def _ask(gen, prompt, width):
  codes, scores = _generate(gen, prompt[np.newaxis], [len(prompt)], [width])
  return codes[0], scores[0]


def _interleaved(users):
  """(user, click) in replay order: click c of every user, then c + 1."""
  return [(u, c) for c in range(len(users[0])) for u in range(len(users))]


def _check_close(got, want):
  """Same IDs; log-probs within 1e-5 relative (float32 rounding: the cache
  off runs a prompt as one chunk, on in blocks)."""
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=0)


def test_cached_answers_equal_cold_answers(model, trie, tmp_path):
  users = _click_prompts(0, 3, 6)
  off = _engine(model, trie, tmp_path / "off")
  on = _engine(model, trie, tmp_path / "on", prefix_cache_bytes=1 << 24,
               prefix_block_tokens=BLOCK)
  answers = {}
  for u, c in _interleaved(users):
    width = 5 if (u + c) % 2 else 16
    answers[u, c] = _ask(on, users[u][c], width)
    _check_close(answers[u, c], _ask(off, users[u][c], width))
  stats = on.stats()
  # Every prompt after the first reuses at least PREFIX's block.
  assert stats["prefix_cache_misses"] == 1
  assert stats["prefix_cache_hits"] == len(answers) - 1
  # A returning user recomputes under one block plus one click.
  reused = sum(len(users[u][c - 1]) // BLOCK * BLOCK
               for u, c in answers if c > 0)
  assert stats["prefix_cache_hit_tokens"] >= reused
  assert stats["prefix_cache_evictions"] == 0
  assert 0 < stats["prefix_cache_bytes"] <= 1 << 24
  # Cold (nothing cached yet) answers are the cached ones, bit for bit.
  for u in range(len(users)):
    cold = _engine(model, trie, tmp_path / f"cold{u}",
                   prefix_cache_bytes=1 << 24, prefix_block_tokens=BLOCK)
    c = len(users[u]) - 1
    got = _ask(cold, users[u][c], 5 if (u + c) % 2 else 16)
    assert cold.stats()["prefix_cache_hits"] == 0
    for a, b in zip(got, answers[u, c]):
      np.testing.assert_array_equal(a, b)
  assert off.stats()["prefix_cache_hits"] == 0


def test_lru_eviction_under_concurrent_users(model, trie, tmp_path):
  """16 users replayed at once against a cache of ~6 blocks: blocks are
  evicted, the cache stays within its bytes, and every answer equals the
  same request on a cold cache bit for bit."""
  users = _click_prompts(1, 16, 5)
  capacity = 6 * BLOCK_BYTES + 512
  reference = _engine(model, trie, tmp_path / "ref",
                      prefix_cache_bytes=capacity, prefix_block_tokens=BLOCK)
  # Sequential, one user after another: every answer of a user is computed
  # from its own (or no) cached blocks.
  expected = {(u, c): _ask(reference, users[u][c], 8)
              for u in range(len(users)) for c in range(len(users[u]))}
  shared = _engine(model, trie, tmp_path / "shared",
                   prefix_cache_bytes=capacity, prefix_block_tokens=BLOCK)

  def replay(u):
    return [_ask(shared, prompt, 8) for prompt in users[u]]

  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    got = list(pool.map(replay, range(len(users))))
  for u, answers in enumerate(got):
    for c, answer in enumerate(answers):
      for a, b in zip(answer, expected[u, c]):
        np.testing.assert_array_equal(a, b)
  stats = shared.stats()
  assert stats["prefix_cache_evictions"] > 0
  assert stats["prefix_cache_hits"] > 0
  assert 0 < stats["prefix_cache_bytes"] <= capacity
  assert stats["max_step_requests"] > 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(prefix_cache_bytes=100),
     rf"prefix_cache_bytes=100 must be 0 \(off\) or in \[{BLOCK_BYTES} "),
    (dict(prefix_cache_bytes=1 << 41),
     r"prefix_cache_bytes=2199023255552 must be .*1099511627776\]"),
    (dict(prefix_cache_bytes=1 << 20, prefix_block_tokens=17),
     r"prefix_block_tokens=17 must be in \[1, max_prompt_len=16\]"),
])
def test_bad_cache_settings_name_the_value(model, trie, tmp_path, kwargs,
                                           message):
  kwargs.setdefault("prefix_block_tokens", BLOCK)
  with pytest.raises(tf.errors.InvalidArgumentError, match=message):
    _engine(model, trie, tmp_path, max_prompt_len=16, **kwargs)


def test_block_size_is_free_with_the_cache_off(model, trie, tmp_path):
  # A block longer than the prompts only matters when blocks are cached.
  engine = _engine(model, trie, tmp_path, max_prompt_len=8,
                   prefix_cache_bytes=0, prefix_block_tokens=16)
  assert engine.stats()["prefix_cache_bytes"] == 0


def test_exported_cache_counters_reach_the_server_metrics(tmp_path):
  a = tiny_recall_assets(tmp_path)
  model = build_generative_recall(a["config"], a["ckpt"], a["table_path"],
                                  engine="cpu", prefix_cache_bytes=1 << 20)
  path = export_saved_model(model, str(tmp_path / "models"), 1)
  del model
  servable = Servable("m", 1, path)
  signature = servable.signature(None)
  items = a["item_ids"][:6]
  for clicks in (5, 6):  # The same user after one more click.
    servable.run(signature, dict(
        item_ids=items[None, :clicks],
        timestamps=np.arange(1, clicks + 1, dtype=np.int64)[None],
        action_types=np.zeros([1, clicks], np.int32),
        lengths=np.array([clicks], np.int32),
        request_time=np.array([99], np.int64)))
  stats = servable.engine_stats()
  assert stats["prefix_cache_misses"] == 1 and stats["prefix_cache_hits"] == 1
  lines = ServerMetrics(engine_stats=lambda: [("m", 1, stats)]).render()
  assert ('tf_genrec_engine_prefix_cache_hits{model_name="m",version="1"} 1'
          in lines.splitlines())
  assert "# TYPE tf_genrec_engine_prefix_cache_bytes gauge" in lines
