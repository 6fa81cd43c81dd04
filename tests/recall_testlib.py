"""A tiny but real recall model (random Qwen2 + random item table) for tests."""
import numpy as np

import graphs
from tf_genrec.evaluation.saved_model_recall import history_requests
from tf_genrec.models.qwen2.checkpoint import save_hf_checkpoint
from tf_genrec.models.qwen2.config import Qwen2Config
from tf_genrec.models.qwen2.modeling import Qwen2ForCausalLM
from tf_genrec.tables.item_table import write_item_table

L, K, NUM_ITEMS = 3, 8, 120


def tiny_recall_assets(root):
  """Writes an item table (with a shared SID) and a random HF checkpoint."""
  rng = np.random.default_rng(0)
  item_ids = rng.choice(10_000, NUM_ITEMS, replace=False).astype(np.int64)
  codes = rng.integers(0, K, (NUM_ITEMS, L))
  codes[1] = codes[0]  # Two items share one semantic ID.
  priority = rng.integers(0, 50, NUM_ITEMS).astype(np.float32)
  table_path = str(root / "item_table.tsv")
  write_item_table(table_path, item_ids, codes, priority)
  config = graphs.get("ad_recall").graph_config(
      num_levels=L, codebook_size=K, max_history=6, max_beam_width=16,
      default_beam_width=8, default_top_n=20)
  ckpt = str(root / "ckpt")
  tiny_generator_checkpoint(ckpt, config)
  return dict(root=root, item_ids=item_ids, codes=codes, priority=priority,
              table_path=table_path, config=config, ckpt=ckpt)


def tiny_generator_checkpoint(path, config):
  """A random 2-layer Qwen2 sized for the graph config's vocabulary."""
  model = Qwen2ForCausalLM(Qwen2Config(
      vocab_size=config.template.vocab_size, hidden_size=32,
      intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2), seed=1)
  # Larger weights give peaked distributions, so ties cannot blur the tests.
  for v in model.trainable_variables:
    if len(v.shape) > 1:
      v.assign(v * 20.0)
  save_hf_checkpoint(model, path)


def random_recall_requests(a, rng, batch):
  """serving_default inputs of `batch` random histories of known items, with
  random per-row beam_width (up to the tiny model's 16) and top_n."""
  histories = [rng.choice(a["item_ids"], rng.integers(1, 7))
               for _ in range(batch)]
  inputs = history_requests(histories)
  inputs["beam_width"] = rng.integers(1, 17, batch).astype(np.int32)
  inputs["top_n"] = rng.integers(1, 41, batch).astype(np.int32)
  return inputs


def assert_row_equals_alone(batched, row, alone, beam_width, top_n):
  """Row `row` of a batched answer equals the answer to that row sent alone:
  the same items and semantic IDs, scores within 1e-5 (float32 sums of
  per-level log-probs; matmul blocking may differ with the batch shape), and
  padding past the row's own top_n / beam_width."""
  w, n = int(beam_width), int(top_n)
  assert alone["item_ids"].shape[1] == n
  assert alone["semantic_ids"].shape[1] == w
  np.testing.assert_array_equal(batched["item_ids"][row, :n],
                                alone["item_ids"][0])
  np.testing.assert_allclose(batched["scores"][row, :n], alone["scores"][0],
                             atol=1e-5, rtol=0)
  np.testing.assert_array_equal(batched["semantic_ids"][row, :w],
                                alone["semantic_ids"][0])
  assert np.all(batched["item_ids"][row, n:] == -1)
  assert np.all(np.isneginf(batched["scores"][row, n:]))
  assert np.all(batched["semantic_ids"][row, w:] == -1)


def external_item_ids(kind, size):
  """Line n's id: shuffled strings, or sparse int64 ids."""
  rng = np.random.default_rng(7)
  if kind == "string":
    return np.array([f"sku-{n}/é" for n in rng.permutation(size)], object)
  return 10**12 + 7919 * rng.permutation(size).astype(np.int64)


def to_external(ids, external):
  """Item ids -> the ids external[] gives them as a served model returns
  them (bytes for strings); -1 -> the empty id."""
  empty = b"" if external.dtype == object else -1
  table = np.array([e.encode() for e in external], object) if (
      external.dtype == object) else external
  return np.where(ids >= 0, table[np.maximum(ids, 0)], empty)
