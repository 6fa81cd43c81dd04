"""The non-generator stages of the recall path, one small module per job.

Each stage is a tf.Module with one __call__, so a builder can swap any of them
(another feature extractor, another generator) without touching the rest.
"""
import tensorflow as tf

from tf_genrec import ops
from tf_genrec.builders.config import BehaviorConfig, RetrievalConfig
from tf_genrec.core.op_constants import MAX_TOP_N
from tf_genrec.core.prompt import PromptTemplate


class BehaviorFeatures(tf.Module):
  """Raw behaviour events -> cleaned click history (BehaviorSequence op)."""

  def __init__(self, config: BehaviorConfig):
    super().__init__(name="behavior_features")
    self._config = config

  def __call__(self, item_ids, timestamps, action_types, lengths,
               request_time):
    c = self._config
    history, history_lengths, _ = ops.behavior_sequence(
        item_ids, timestamps, action_types, lengths, request_time,
        allowed_action_types=c.allowed_action_types,
        max_age_seconds=c.max_age_seconds, dedup_mode=c.dedup_mode,
        max_len=c.max_len, rollover=c.rollover)
    return history, history_lengths


class SemanticIdEncoder(tf.Module):
  """Click history item ids -> their semantic-ID codes (SemanticIdLookup)."""

  def __init__(self, item_table, missing: str):
    super().__init__(name="semantic_id_encoder")
    self.item_table = item_table
    self._missing = missing

  def __call__(self, history, history_lengths):
    return self.item_table.lookup(history, history_lengths,
                                  missing=self._missing)


class PromptBuilder(tf.Module):
  """History codes (+ optional context tokens) -> generator input ids."""

  def __init__(self, template: PromptTemplate):
    super().__init__(name="prompt_builder")
    self._template = template

  def __call__(self, codes, code_lengths, context_ids, context_lengths):
    t = self._template
    return ops.prompt_assemble(
        codes, code_lengths, context_ids, context_lengths,
        prefix_ids=t.prefix_ids, separator_ids=t.separator_ids,
        suffix_ids=t.suffix_ids, sid_offset=t.sid_offset,
        codebook_size=t.codebook_size, pad_token_id=t.pad_token_id,
        max_prompt_len=t.max_prompt_len, truncate=t.truncate,
        full_items=t.full_items, old_item_levels=t.old_item_levels)


class ItemRetriever(tf.Module):
  """Generated semantic IDs + beam scores -> top-N item ids (CodesToItems).

  Rows of one batch may ask for different result sizes: each row keeps its
  own first top_n[b] items (the generator already scores a row's beams past
  its beam_width -inf). With `exclude_history`, items of
  the row's click history are dropped and the next ones move up, so a row
  still gets top_n items when the beams hold that many.
  """

  def __init__(self, item_table, config: RetrievalConfig):
    super().__init__(name="item_retriever")
    self.item_table = item_table
    self._config = config

  def __call__(self, codes, beam_scores, top_n, history, history_lengths):
    max_n = tf.reduce_max(top_n)
    wanted = max_n
    if self._config.exclude_history:
      # As many more as history items could be dropped.
      wanted = tf.minimum(max_n + tf.shape(history)[1], MAX_TOP_N)
    item_ids, scores = self.item_table.codes_to_items(codes, beam_scores,
                                                      wanted)
    if self._config.exclude_history:
      item_ids, scores = _drop_history_items(item_ids, scores, history,
                                             history_lengths, max_n)
    item_pos = tf.range(tf.shape(item_ids)[1])[tf.newaxis, :]
    keep = item_pos < top_n[:, tf.newaxis]
    return (tf.where(keep, item_ids, tf.constant(-1, tf.int64)),
            tf.where(keep, scores, float("-inf")))


def _drop_history_items(item_ids, scores, history, history_lengths, n):
  """Removes ranked items that occur in the history; keeps the first n left.

  top_k is stable, so the kept items stay in rank order; the dropped and
  padding slots (score -inf) sink to the end and come out as id -1.
  """
  in_history = tf.sequence_mask(history_lengths, tf.shape(history)[1])
  seen = tf.reduce_any(
      (item_ids[:, :, tf.newaxis] == history[:, tf.newaxis, :])
      & in_history[:, tf.newaxis, :], axis=2)
  scores = tf.where(seen, float("-inf"), scores)
  scores, order = tf.math.top_k(scores, tf.minimum(n, tf.shape(scores)[1]))
  item_ids = tf.gather(item_ids, order, batch_dims=1)
  return tf.where(scores > float("-inf"), item_ids,
                  tf.constant(-1, tf.int64)), scores
