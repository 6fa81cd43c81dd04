"""User histories -> generator training sequences, in the serving template.

The prompt part of every sequence is produced by the very PromptAssemble op
that the serving graph runs, so training and serving prompts cannot drift
apart; the target item's semantic-ID tokens follow it.
"""
import numpy as np
import tensorflow as tf

from tf_genrec import ops
from tf_genrec.core.prompt import PromptTemplate
from tf_genrec.data.ragged import Ragged


def _token_bound(lengths: np.ndarray, template: PromptTemplate,
                 max_history: int) -> int:
  """Tokens of the sequences of histories of these lengths, at most (the
  prompt of n items is prefix + n SIDs + n - 1 separators + suffix, cut to
  max_prompt_len, compression aside; the target's SID follows)."""
  n = np.clip(lengths - 1, 0, max_history)
  prompt = (len(template.prefix_ids) + n * template.num_levels
            + np.maximum(n - 1, 0) * len(template.separator_ids)
            + len(template.suffix_ids))
  return int((np.minimum(prompt, template.max_prompt_len)
              + template.num_levels).sum())


def build_sequences(histories, item_codes, template: PromptTemplate,
                    max_history: int, batch_size: int = 1024) -> Ragged:
  """Tokenises histories (each oldest first, >= 2 items) for training.

  Args:
    histories: sequence of item-id arrays (a list or a Ragged); the last
      item of each is the target.
    item_codes: dict item_id -> codes (L ints).
    template: the scene's prompt template.
    max_history: behaviour max_len of the serving graph (older items go).
  Returns:
    Ragged of int32 rows: serving prompt of history[:-1] +
    sid(history[-1]). One flat token array, not an array per user.
  """
  lengths = np.array([len(h) for h in histories], np.int64)
  # Filled in place and trimmed at the end (realloc, no copy): collecting
  # per-batch arrays and concatenating them would hold the tokens twice.
  tokens = np.zeros(_token_bound(lengths, template, max_history), np.int32)
  filled = 0
  for start in range(0, len(histories), batch_size):
    chunk = [h[-(max_history + 1):] for h in histories[start:start + batch_size]]
    context = [h[:-1] for h in chunk]
    context_lengths = np.array([len(c) for c in context], np.int32)
    codes = np.full((len(chunk), max(context_lengths.max(), 1),
                     template.num_levels), -1, np.int32)
    for row, items in enumerate(context):
      for col, item in enumerate(items):
        codes[row, col] = item_codes[item]
    input_ids, prompt_lengths = ops.prompt_assemble(
        tf.constant(codes), tf.constant(context_lengths),
        tf.zeros([len(chunk), 0], tf.int32), tf.zeros([len(chunk)], tf.int32),
        prefix_ids=template.prefix_ids, separator_ids=template.separator_ids,
        suffix_ids=template.suffix_ids, sid_offset=template.sid_offset,
        codebook_size=template.codebook_size,
        pad_token_id=template.pad_token_id,
        max_prompt_len=template.max_prompt_len, truncate=template.truncate,
        full_items=template.full_items,
        old_item_levels=template.old_item_levels)
    input_ids, prompt_lengths = input_ids.numpy(), prompt_lengths.numpy()
    for row, items in enumerate(chunk):
      prompt = input_ids[row, input_ids.shape[1] - prompt_lengths[row]:]
      target = template.sid_tokens(item_codes[items[-1]])
      end = filled + len(prompt) + len(target)
      tokens[filled:end - len(target)] = prompt
      tokens[end - len(target):end] = target
      lengths[start + row] = end - filled
      filled = end
  tokens.resize(filled, refcheck=False)  # no view of it exists yet
  return Ragged.from_lengths(tokens, lengths)


def pad_batch(sequences, pad_token_id):
  """Left-pads like the serving prompts: returns input_ids and mask [B, S]."""
  width = max(len(s) for s in sequences)
  input_ids = np.full((len(sequences), width), pad_token_id, np.int32)
  mask = np.zeros((len(sequences), width), np.int32)
  for row, seq in enumerate(sequences):
    input_ids[row, width - len(seq):] = seq
    mask[row, width - len(seq):] = 1
  return input_ids, mask
