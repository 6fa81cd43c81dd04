"""GenrecPromptAssemble against a plain-Python reference."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec import ops

TEMPLATE = dict(prefix_ids=(1, 2, 3), separator_ids=(4,), suffix_ids=(5, 6),
                sid_offset=10, codebook_size=8, pad_token_id=0)


def reference(codes, codes_lengths, context, context_lengths, *, prefix_ids,
              separator_ids, suffix_ids, sid_offset, codebook_size,
              pad_token_id, max_prompt_len, truncate, full_items=0,
              old_item_levels=1):
  """Builds each prompt token by token; truncation drops the oldest items,
  compression keeps old_item_levels codes of all but the last full_items."""
  prompts = []
  for b, n in enumerate(codes_lengths):
    items = [list(codes[b, t]) for t in range(n)]
    while True:
      prompt = list(prefix_ids) + list(context[b, :context_lengths[b]])
      for i, item in enumerate(items):
        if i:
          prompt += separator_ids
        if full_items and len(items) - i > full_items:
          item = item[:old_item_levels]
        prompt += [sid_offset + l * codebook_size + c
                   for l, c in enumerate(item)]
      prompt += suffix_ids
      if len(prompt) <= max_prompt_len or not truncate or not items:
        break
      items = items[1:]
    assert len(prompt) <= max_prompt_len, "reference called on a bad row"
    prompts.append(prompt)
  width = max((len(p) for p in prompts), default=0)
  out = np.full((len(prompts), width), pad_token_id, np.int32)
  for b, p in enumerate(prompts):
    out[b, width - len(p):] = p
  return out, np.array([len(p) for p in prompts], np.int32)


@pytest.mark.parametrize(
    "seed,truncate,max_prompt_len,context_width,full_items,old_item_levels", [
        (0, False, 1000, 5, 0, 1), (1, True, 40, 5, 0, 1),
        (2, True, 23, 0, 0, 1), (3, True, 60, 9, 0, 1),
        # Compressed: truncation lands among full items, among old ones.
        (4, False, 1000, 5, 3, 1), (5, True, 40, 5, 5, 2),
        (6, True, 60, 0, 2, 1), (7, True, 60, 9, 4, 9),
    ])
def test_matches_reference_on_random_histories(seed, truncate, max_prompt_len,
                                               context_width, full_items,
                                               old_item_levels):
  rng = np.random.default_rng(seed)
  batch, width, levels = 40, 30, 4
  codes = rng.integers(0, 8, (batch, width, levels)).astype(np.int32)
  codes_lengths = rng.integers(0, width + 1, batch).astype(np.int32)
  codes[np.arange(width)[None, :] >= codes_lengths[:, None]] = -1  # padding
  context = rng.integers(0, 42, (batch, context_width)).astype(np.int32)
  context_lengths = rng.integers(0, context_width + 1, batch).astype(np.int32)
  attrs = dict(TEMPLATE, max_prompt_len=max_prompt_len, truncate=truncate,
               full_items=full_items, old_item_levels=old_item_levels)
  got = ops.prompt_assemble(codes, codes_lengths, context, context_lengths,
                            **attrs)
  want = reference(codes, codes_lengths, context, context_lengths, **attrs)
  np.testing.assert_array_equal(got.input_ids.numpy(), want[0])
  np.testing.assert_array_equal(got.lengths.numpy(), want[1])
  uncut = reference(codes, codes_lengths, context, context_lengths,
                    **dict(attrs, max_prompt_len=10**6, truncate=False))[1]
  assert (uncut > max_prompt_len).any() == truncate  # truncation is exercised


def assemble(codes, n, **overrides):
  codes = np.asarray(codes, np.int32).reshape(1, -1, 2)
  attrs = dict(TEMPLATE, max_prompt_len=100, truncate=False)
  attrs.update(overrides)
  return ops.prompt_assemble(codes, [n], np.zeros((1, 0), np.int32), [0],
                             **attrs)


def test_exact_layout_of_one_prompt():
  out = assemble([[1, 2], [3, 4]], 2)
  assert out.input_ids.numpy().tolist() == [
      [1, 2, 3, 10 + 1, 18 + 2, 4, 10 + 3, 18 + 4, 5, 6]]


def test_empty_history_is_prefix_plus_suffix():
  out = assemble(np.zeros((0, 2)), 0)
  assert out.input_ids.numpy().tolist() == [[1, 2, 3, 5, 6]]


def test_left_padding_with_pad_token():
  out = ops.prompt_assemble([[[1, 1]], [[2, 2]]], [1, 0],
                            np.zeros((2, 0), np.int32), [0, 0],
                            **dict(TEMPLATE, pad_token_id=99),
                            max_prompt_len=50)
  assert out.input_ids.numpy().tolist() == [
      [1, 2, 3, 11, 19, 5, 6], [99, 99, 1, 2, 3, 5, 6]]
  assert out.lengths.numpy().tolist() == [7, 5]


def test_truncation_drops_whole_oldest_items():
  # 3 items = 3 + 2*3 + 2 + 2 = 13 tokens; limit 12 keeps the newest two.
  out = assemble([[1, 1], [2, 2], [3, 3]], 3, max_prompt_len=12,
                 truncate=True)
  assert out.input_ids.numpy().tolist() == [[1, 2, 3, 12, 20, 4, 13, 21, 5,
                                             6]]


def test_compression_keeps_coarse_codes_of_old_items():
  # Levels of the oldest of 3 items cut to 1; the newest 2 stay whole.
  out = assemble([[1, 2], [3, 4], [5, 6]], 3, full_items=2)
  assert out.input_ids.numpy().tolist() == [
      [1, 2, 3, 11, 4, 13, 22, 4, 15, 24, 5, 6]]
  # A returning user's prompt grows only past the compressed items.
  grown = assemble([[1, 2], [3, 4], [5, 6], [7, 0]], 4, full_items=2)
  assert grown.input_ids.numpy()[0, :6].tolist() == [1, 2, 3, 11, 4, 13]


def test_too_long_without_truncate_names_row_and_lengths():
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    assemble([[1, 1], [2, 2], [3, 3]], 3, max_prompt_len=12)
  assert "prompt of row 0 has length 13 (3 items, 0 context tokens) > " \
         "max_prompt_len=12" in e.value.message


def test_too_long_even_without_items():
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    assemble([[1, 1]], 1, max_prompt_len=4, truncate=True)
  assert "prompt of row 0 has length 5 without any history item" in \
      e.value.message


def test_dynamic_width_inside_tf_function():
  fn = tf.function(lambda c, n: ops.prompt_assemble(
      c, n, tf.zeros([1, 0], tf.int32), tf.zeros([1], tf.int32),
      **TEMPLATE, max_prompt_len=64))
  out = fn(tf.constant([[[1, 2], [3, 4]]], tf.int32), tf.constant([1]))
  assert out.input_ids.shape == (1, 7)


GOOD = dict(codes=[[[1, 2]]], codes_lengths=[1], context_ids=[[7]],
            context_lengths=[1])


@pytest.mark.parametrize("field,value,message", [
    ("codes", [[[1, 8]]], "codes[0,0,1]=8 is outside [0, codebook_size=8)"),
    ("codes", [[[-1, 2]]], "codes[0,0,0]=-1 is outside"),
    ("codes", [[1, 2]], "codes must be [B, T, L]"),
    ("codes_lengths", [2], "codes_lengths[0]=2 is outside [0, T=1]"),
    ("codes_lengths", [1, 1], "codes_lengths must be [B=1]"),
    ("context_ids", [7], "context_ids must be [B=1, C]"),
    ("context_lengths", [2], "context_lengths[0]=2 is outside [0, C=1]"),
    ("context_lengths", [-1], "context_lengths[0]=-1 is outside"),
    ("context_ids", [[-3]], "context_ids[0,0]=-3 is outside the vocabulary "
     "[0, sid_offset + L * codebook_size=26)"),
    ("context_ids", [[26]], "context_ids[0,0]=26 is outside the vocabulary"),
    ("codes", tf.constant([[[1, 2]]], tf.int64), "codes must be int32, got "
     "int64"),
    ("context_ids", [[2**31]], "context_ids must be int32"),
])
def test_malformed_inputs_name_the_field(field, value, message):
  args = dict(GOOD, **{field: value})
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    ops.prompt_assemble(**args, **TEMPLATE, max_prompt_len=50)
  assert message in e.value.message


def test_token_range_must_fit_int32():
  with pytest.raises(tf.errors.InvalidArgumentError, match="overflows int32"):
    ops.prompt_assemble(**GOOD, sid_offset=2**31 - 10, codebook_size=8,
                        max_prompt_len=50)
  # A zero-size codes tensor may declare any L: L * K must not overflow.
  with pytest.raises(tf.errors.InvalidArgumentError, match="overflows int32"):
    ops.prompt_assemble(tf.zeros([1, 0, 2**61], tf.int32), [0],
                        np.zeros([1, 0], np.int32), [0], sid_offset=10,
                        codebook_size=8, max_prompt_len=50)


def test_bad_attrs_are_rejected():
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="max_prompt_len must be >= 1"):
    ops.prompt_assemble(**GOOD, sid_offset=10, codebook_size=8,
                        max_prompt_len=0)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="old_item_levels >= 1, got 3, 0"):
    ops.prompt_assemble(**GOOD, sid_offset=10, codebook_size=8,
                        max_prompt_len=50, full_items=3, old_item_levels=0)
