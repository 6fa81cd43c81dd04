"""Typed Python wrappers of the recall-path C++ ops (custom_ops/*.cc).

Importing this module loads `_tf_genrec_ops.so` once and registers the ops
(and `_tf_genrec_tensorrt_llm_ops.so`'s engine backend where it is built), so
it must be imported before `tf.saved_model.load` of a model that uses them.
Inputs may be tensors, numpy arrays or lists; integer tensors are widened
(never narrowed) to the op's dtype, any other dtype mismatch raises
`tf.errors.InvalidArgumentError` naming the argument.
"""
import os
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from tf_genrec.core.op_constants import DEDUP_MODES, MISSING_MODES
from tf_genrec.generation import tensorrt_llm

_LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "_tf_genrec_ops.so")
if not os.path.exists(_LIBRARY):
  raise ImportError(f"{_LIBRARY} is missing: build it with `make ops` "
                    "(python setup.py build_ext --inplace)")
_lib = tf.load_op_library(_LIBRARY)
# The TensorRT-LLM engine's library, where it was built (GPU machines): it
# registers the GenerationEngine backend "tensorrt_llm" (docs/tensorrt_llm.md).
if os.path.exists(tensorrt_llm.library_path()):
  tf.load_op_library(tensorrt_llm.library_path())


# Tensor dtypes that convert losslessly to the key dtype.
_WIDENS_TO = {
    tf.int64: (tf.int8, tf.int16, tf.int32, tf.uint8, tf.uint16, tf.uint32),
    tf.int32: (tf.int8, tf.int16, tf.uint8, tf.uint16),
    tf.float32: (tf.float16, tf.bfloat16),
}


def _invalid(message):
  return tf.errors.InvalidArgumentError(None, None, message)


def _tensor(value, dtype: tf.DType, name: str) -> tf.Tensor:
  """`value` as a `dtype` tensor; only lossless conversions are allowed."""
  if isinstance(value, (tf.Tensor, tf.Variable)):
    if value.dtype == dtype:
      return value
    if value.dtype in _WIDENS_TO.get(dtype, ()):
      return tf.cast(value, dtype)
    raise _invalid(f"{name} must be {dtype.name}, got {value.dtype.name}")
  # Python/numpy values: tf.convert_to_tensor would silently wrap 2**40 into
  # int32 or truncate 1.5 to 1, so check kind and range first.
  array = np.asarray(value)
  if array.size == 0:
    ok = True
  elif dtype == tf.string:
    ok = array.dtype.kind in "SUO"
  elif dtype.is_integer:
    ok = (array.dtype.kind in "iu" and array.min() >= dtype.min and
          array.max() <= dtype.max)
  else:
    ok = array.dtype.kind in "iuf"
  if not ok:
    raise _invalid(f"{name} must be {dtype.name}, got {array.dtype} values "
                   f"that do not convert losslessly")
  return tf.constant(array, dtype)


class BehaviorSequence(NamedTuple):
  item_ids: tf.Tensor  # [B, max_len] int64, oldest first, -1 padded
  lengths: tf.Tensor  # [B] int32
  num_dropped: tf.Tensor  # [B] int32


def behavior_sequence(item_ids, timestamps, action_types, lengths,
                      request_time, *, max_len: int,
                      allowed_action_types: Sequence[int] = (),
                      max_age_seconds: int = 0,
                      dedup_mode: str = "keep_last",
                      rollover: int = 1) -> BehaviorSequence:
  """Raw behaviour events -> clean click histories (GenrecBehaviorSequence).

  Args:
    item_ids: [B, T] int64 event item ids; negative ids are missing values.
    timestamps: [B, T] int64 event times (seconds).
    action_types: [B, T] int32 action types.
    lengths: [B] int32 valid events per row.
    request_time: [B] int64; events after it are dropped, ages count from it.
    max_len: history length kept (the most recent events).
    allowed_action_types: action types kept; empty keeps all.
    max_age_seconds: drop events older than this; 0 means no limit.
    dedup_mode: "none", "consecutive" (collapse runs of one item) or
      "keep_last" (each item once, at its latest event).
    rollover: truncation drops the oldest events this many at a time, so
      the history's start (the prompt's prefix) changes every `rollover`
      events instead of every event; in [1, max_len].

  Returns:
    item_ids [B, max_len] (oldest first, right-padded with -1), lengths [B]
    and num_dropped [B] = valid events not in the history (filtered,
    de-duplicated or truncated).
  """
  if dedup_mode not in DEDUP_MODES:
    raise _invalid(f"dedup_mode must be one of {DEDUP_MODES}, "
                   f"got {dedup_mode!r}")
  if max_len < 1:
    raise _invalid(f"max_len must be >= 1, got {max_len}")
  if max_age_seconds < 0:
    raise _invalid(f"max_age_seconds must be >= 0, got {max_age_seconds}")
  return BehaviorSequence(*_lib.genrec_behavior_sequence(
      item_ids=_tensor(item_ids, tf.int64, "item_ids"),
      timestamps=_tensor(timestamps, tf.int64, "timestamps"),
      action_types=_tensor(action_types, tf.int32, "action_types"),
      lengths=_tensor(lengths, tf.int32, "lengths"),
      request_time=_tensor(request_time, tf.int64, "request_time"),
      allowed_action_types=[int(a) for a in allowed_action_types],
      max_age_seconds=int(max_age_seconds), dedup_mode=dedup_mode,
      max_len=int(max_len), rollover=int(rollover)))


class Prompts(NamedTuple):
  input_ids: tf.Tensor  # [B, P] int32, left-padded
  lengths: tf.Tensor  # [B] int32


def prompt_assemble(codes, codes_lengths, context_ids, context_lengths, *,
                    sid_offset: int, codebook_size: int, max_prompt_len: int,
                    prefix_ids: Sequence[int] = (),
                    separator_ids: Sequence[int] = (),
                    suffix_ids: Sequence[int] = (), pad_token_id: int = 0,
                    truncate: bool = False, full_items: int = 0,
                    old_item_levels: int = 1) -> Prompts:
  """History codes (+ context tokens) -> prompts (GenrecPromptAssemble).

  prompt = prefix + context + sid(item_1) + separator + ... + sid(item_n) +
  suffix, with the token of code c at level l = sid_offset + l*K + c.

  Args:
    codes: [B, T, L] int32 history codes, oldest first.
    codes_lengths: [B] int32 history length per row.
    context_ids: [B, C] int32 extra tokens after the prefix (C may be 0).
    context_lengths: [B] int32 valid context tokens per row.
    sid_offset: token id of code 0 at level 0.
    codebook_size: K.
    max_prompt_len: longest allowed prompt.
    prefix_ids, separator_ids, suffix_ids: template tokens.
    pad_token_id: left-padding token.
    truncate: drop the oldest whole items of a too long prompt instead of
      failing.
    full_items: compression; only the last full_items items keep all L
      levels, older ones their first old_item_levels (0: no compression).
    old_item_levels: levels kept of items older than the last full_items.

  Returns:
    input_ids [B, P] left-padded with pad_token_id (P = longest prompt) and
    lengths [B].
  """
  if max_prompt_len < 1:
    raise _invalid(f"max_prompt_len must be >= 1, got {max_prompt_len}")
  if codebook_size < 1 or sid_offset < 0:
    raise _invalid(f"need codebook_size >= 1 and sid_offset >= 0, got "
                   f"{codebook_size}, {sid_offset}")
  if full_items < 0 or old_item_levels < 1:
    raise _invalid(f"need full_items >= 0 and old_item_levels >= 1, got "
                   f"{full_items}, {old_item_levels}")
  return Prompts(*_lib.genrec_prompt_assemble(
      codes=_tensor(codes, tf.int32, "codes"),
      codes_lengths=_tensor(codes_lengths, tf.int32, "codes_lengths"),
      context_ids=_tensor(context_ids, tf.int32, "context_ids"),
      context_lengths=_tensor(context_lengths, tf.int32, "context_lengths"),
      prefix_ids=[int(t) for t in prefix_ids],
      separator_ids=[int(t) for t in separator_ids],
      suffix_ids=[int(t) for t in suffix_ids], sid_offset=int(sid_offset),
      codebook_size=int(codebook_size), pad_token_id=int(pad_token_id),
      max_prompt_len=int(max_prompt_len), truncate=bool(truncate),
      full_items=int(full_items), old_item_levels=int(old_item_levels)))


# Item table ops; tf_genrec.tables.item_table_resource.ItemTable wraps them.


def item_table_handle(num_levels: int, codebook_size: int,
                      shared_name: str = "", container: str = ""):
  """A handle to an empty item table resource (GenrecItemTable)."""
  return _lib.genrec_item_table(num_levels=num_levels,
                                codebook_size=codebook_size,
                                container=container, shared_name=shared_name)


def item_table_init_from_file(table, filename):
  """Initialises `table` from an item table file.

  GenrecItemTableInitFromFile; re-initialising with the same content is a
  no-op, other content is a FailedPreconditionError.
  """
  return _lib.genrec_item_table_init_from_file(
      table, _tensor(filename, tf.string, "filename"))


def item_table_size(table) -> tf.Tensor:
  """Number of items in an initialised table, scalar int64."""
  return _lib.genrec_item_table_size(table)


class SemanticIds(NamedTuple):
  codes: tf.Tensor  # [B, T, L] int32, -1 past lengths
  lengths: tf.Tensor  # [B] int32


def semantic_id_lookup(table, item_ids, lengths, *, num_levels: int,
                       missing: str = "drop") -> SemanticIds:
  """Item-id histories -> codes [B, T, L] (GenrecSemanticIdLookup).

  missing="drop" compacts unknown ids out of the row; "error" rejects them.
  Positions past the returned lengths hold code -1.
  """
  if missing not in MISSING_MODES:
    raise _invalid(f"missing must be one of {MISSING_MODES}, got {missing!r}")
  return SemanticIds(*_lib.genrec_semantic_id_lookup(
      table, _tensor(item_ids, tf.int64, "item_ids"),
      _tensor(lengths, tf.int32, "lengths"), num_levels=num_levels,
      missing=missing))


class RetrievedItems(NamedTuple):
  item_ids: tf.Tensor  # [B, N] int64, -1 padded
  scores: tf.Tensor  # [B, N] float32, -inf padded


def codes_to_items(table, codes, beam_scores, top_n) -> RetrievedItems:
  """Beams [B, W, L] + scores [B, W] -> top_n items (GenrecCodesToItems).

  top_n is a scalar int32 tensor (so it can vary per request) in
  [1, MAX_TOP_N]; the op checks its value.
  """
  return RetrievedItems(*_lib.genrec_codes_to_items(
      table, _tensor(codes, tf.int32, "codes"),
      _tensor(beam_scores, tf.float32, "beam_scores"),
      _tensor(top_n, tf.int32, "top_n")))


class GeneratedIds(NamedTuple):
  codes: tf.Tensor  # [B, W, L] int32, best first, -1 for invalid beams
  scores: tf.Tensor  # [B, W] float32, -inf for invalid beams


def generation_engine_handle(*, num_levels: int, codebook_size: int,
                             sid_offset: int, max_beam_width: int,
                             max_prompt_len: int, sid_softmax: str = "level",
                             max_queued_requests: int = 1024,
                             max_step_tokens: int = 8192, num_threads: int = 0,
                             prefix_cache_bytes: int = 0,
                             prefix_block_tokens: int = 16,
                             backend: str = "cpu", shared_name: str = "",
                             container: str = ""):
  """A handle to an empty generation engine (GenrecGenerationEngine);
  prefix_cache_bytes > 0 turns on its prefix K/V cache across requests."""
  return _lib.genrec_generation_engine(
      backend=backend, num_levels=num_levels, codebook_size=codebook_size,
      sid_offset=sid_offset, max_beam_width=max_beam_width,
      max_prompt_len=max_prompt_len, sid_softmax=sid_softmax,
      max_queued_requests=max_queued_requests,
      max_step_tokens=max_step_tokens, num_threads=num_threads,
      prefix_cache_bytes=prefix_cache_bytes,
      prefix_block_tokens=prefix_block_tokens, container=container,
      shared_name=shared_name)


def generation_engine_init(engine, filename):
  """Loads an engine file into `engine` (GenrecGenerationEngineInit)."""
  return _lib.genrec_generation_engine_init(
      engine, _tensor(filename, tf.string, "filename"))


ENGINE_STATS = ("requests_enqueued", "requests_completed", "requests_failed",
                "requests_rejected", "steps", "step_tokens",
                "max_step_requests", "queued", "prefix_cache_hits",
                "prefix_cache_misses", "prefix_cache_hit_tokens",
                "prefix_cache_evictions", "prefix_cache_bytes", "row_tile",
                "padding_rows")


def generation_engine_stats(engine) -> tf.Tensor:
  """int64 [len(ENGINE_STATS)] counters (GenrecGenerationEngineStats)."""
  return _lib.genrec_generation_engine_stats(engine,
                                            num_stats=len(ENGINE_STATS))


def generate(engine, input_ids, lengths, beam_width, *,
             num_levels: int) -> GeneratedIds:
  """Per-row beam search through the engine (GenrecGenerate).

  beam_width is [B] int32: row b's first beam_width[b] beams are its own
  beam_width[b]-wide search; W = max(beam_width).
  """
  return GeneratedIds(*_lib.genrec_generate(
      engine, _tensor(input_ids, tf.int32, "input_ids"),
      _tensor(lengths, tf.int32, "lengths"),
      _tensor(beam_width, tf.int32, "beam_width"), num_levels=num_levels))
