"""HSTU scenes as servable tf.Modules: the same behaviour inputs (and
BehaviorSequence op) as the semantic-ID scenes, an HSTU model behind them.

hstu_retrieval: behaviour -> user vector -> full-catalogue top-N (a TopK).
hstu_ranking:   behaviour + candidate_item_ids [B, C] -> per-task scores
                [B, C], by M-FALCON.
"""
import numpy as np
import tensorflow as tf

from tf_genrec.builders.hstu_config import HSTUSceneConfig
from tf_genrec.builders.recall_model import (BEHAVIOR_INPUT_SPECS,
                                             GenerativeRecallModel)
from tf_genrec.builders.stages import BehaviorFeatures
from tf_genrec.models.keras_io import KerasModule
from tf_genrec.models.top_k import BruteForceTopK

TOP_N_SPEC = tf.TensorSpec([None], tf.int32, "top_n")
CANDIDATES_SPEC = tf.TensorSpec([None, None], tf.int64, "candidate_item_ids")
# A candidate the model cannot score (not in its vocabulary, or -1 padding)
# gets this score: no probability is negative.
UNSCORED = -1.0


class HistoryEvents(tf.Module):
  """Raw behaviour events -> the model's token rows, times and actions.

  The BehaviorSequence op filters (action type, age, future events), orders
  by time and keeps the max_len most recent events. It is fed each event's
  column index in place of its item id, so what comes out says which events
  were kept; their item ids, times and action types are gathered from the
  inputs. Items outside the model's vocabulary are dropped (or rejected,
  behavior.missing_items == "error") and the rest move left.
  """

  def __init__(self, config: HSTUSceneConfig, item_ids):
    super().__init__(name="history_events")
    self._config = config
    self.behavior = BehaviorFeatures(config.behavior)
    item_ids = np.asarray(item_ids, np.int64)
    self.rows = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            item_ids, np.arange(len(item_ids), dtype=np.int64)), -1)

  def token(self, item_ids):
    """Item ids -> tokens (row + 1), 0 for unknown ids."""
    return tf.cast(self.rows.lookup(item_ids) + 1, tf.int32)

  def __call__(self, item_ids, timestamps, action_types, lengths,
               request_time):
    columns = tf.broadcast_to(
        tf.range(tf.shape(item_ids, out_type=tf.int64)[1]), tf.shape(item_ids))
    # Missing item ids (negative) stay missing for the op.
    columns = tf.where(item_ids >= 0, columns, -1)
    kept, kept_lengths = self.behavior(columns, timestamps, action_types,
                                       lengths, request_time)
    kept_events = lambda t: tf.gather(t, tf.maximum(kept, 0), batch_dims=1)
    kept_items = kept_events(item_ids)
    tokens = self.token(kept_items)
    in_history = tf.sequence_mask(kept_lengths, tf.shape(kept)[1])
    known = in_history & (tokens > 0)
    if self._config.behavior.missing_items == "error":
      unknown = tf.boolean_mask(kept_items, in_history & ~known)
      tf.debugging.assert_equal(
          tf.size(unknown), 0,
          message="item_ids holds items the model does not know",
          data=[unknown[:10]])
    # Stable sort: known events first, in time order.
    order = tf.argsort(tf.cast(~known, tf.int32), axis=1, stable=True)
    known = tf.gather(known, order, batch_dims=1)
    pick = lambda t: tf.where(known, tf.gather(t, order, batch_dims=1),
                              tf.zeros([], t.dtype))
    return (pick(tokens), pick(kept_events(timestamps)),
            pick(kept_events(action_types)),
            tf.reduce_sum(tf.cast(known, tf.int32), axis=1))


class _HSTUServable(KerasModule):
  """What both scenes hold: the config, the behaviour stage and the model."""

  def __init__(self, config: HSTUSceneConfig, model, item_ids):
    super().__init__(model, name=config.name)
    self._config = config
    self.events = HistoryEvents(config, item_ids)


class HSTURetrievalModel(_HSTUServable):
  """Scene hstu_retrieval over an HSTURetrieval model.

  item_ids[row] is the item id of model row `row`; top_k defaults to exact
  brute-force MIPS over the unit item vectors (an ANN TopK slots in).
  """

  def __init__(self, config: HSTUSceneConfig, model, item_ids, top_k=None):
    if len(item_ids) != model.num_items:
      raise ValueError(f"{len(item_ids)} item ids for a model of "
                       f"{model.num_items} items")
    if config.behavior.max_len > model.config.max_len:
      raise ValueError(f"behavior.max_len {config.behavior.max_len} > the "
                       f"model's max_len {model.config.max_len}")
    super().__init__(config, model, item_ids)
    self.top_k = top_k or BruteForceTopK(model.item_vectors(), item_ids)

  def recall(self, item_ids, timestamps, action_types, lengths, request_time,
             top_n=None):
    c = self._config
    top_n = GenerativeRecallModel._per_row(  # pylint: disable=protected-access
        top_n, c.default_top_n, tf.shape(item_ids)[0], "top_n", c.max_top_n)
    tokens, times, _, _ = self.events(item_ids, timestamps, action_types,
                                      lengths, request_time)
    users = self.model.user_vectors(
        tokens, times if self.model.config.time_bias else None)
    k = tf.minimum(tf.reduce_max(top_n), self.model.num_items)
    ids, scores = self.top_k(users, k)
    keep = tf.range(k)[tf.newaxis] < top_n[:, tf.newaxis]
    return {"item_ids": tf.where(keep, ids, tf.constant(-1, tf.int64)),
            "scores": tf.where(keep, scores, float("-inf"))}

  def serving_function(self):
    default_n = tf.constant([self._config.default_top_n], tf.int32)

    @tf.function(input_signature=list(BEHAVIOR_INPUT_SPECS) + [TOP_N_SPEC])
    def serve(item_ids, timestamps, action_types, lengths, request_time,
              top_n=default_n):
      return self.recall(item_ids, timestamps, action_types, lengths,
                         request_time, top_n)

    return serve


class HSTURankingModel(_HSTUServable):
  """Scene hstu_ranking over an HSTURanking model: outputs one [B, C] score
  (probability) per task, named by the task; UNSCORED for unknown ids."""

  def __init__(self, config: HSTUSceneConfig, model, item_ids):
    if config.behavior.max_len > model.max_history:
      raise ValueError(f"behavior.max_len {config.behavior.max_len} > the "
                       f"model's max history {model.max_history}")
    super().__init__(config, model, item_ids)

  def rank(self, item_ids, timestamps, action_types, lengths, request_time,
           candidate_item_ids):
    c = self._config
    num = tf.shape(candidate_item_ids)[1]
    check = tf.debugging.assert_less_equal(
        num, c.max_candidates,
        message=f"candidate_item_ids dim 1 must be <= max_candidates="
        f"{c.max_candidates}")
    with tf.control_dependencies([check]):
      tokens, times, actions, history_lengths = self.events(
          item_ids, timestamps, action_types, lengths, request_time)
    # An action type the model has no embedding for counts as type 0.
    actions = tf.where(actions < self.model.tasks.num_action_types,
                       tf.maximum(actions, 0), 0)
    time_bias = self.model.config.time_bias
    cache = self.model.encode_history(tokens, actions,
                                      times if time_bias else None)
    candidates = self.events.token(candidate_item_ids)
    logits = self.model.rank(cache, history_lengths, candidates, request_time,
                             c.micro_batch)
    scores = tf.where((candidates > 0)[..., tf.newaxis], tf.sigmoid(logits),
                      UNSCORED)
    return {name: scores[..., t]
            for t, name in enumerate(self.model.tasks.names)}

  def serving_function(self):

    @tf.function(input_signature=list(BEHAVIOR_INPUT_SPECS) +
                 [CANDIDATES_SPEC])
    def serve(item_ids, timestamps, action_types, lengths, request_time,
              candidate_item_ids):
      return self.rank(item_ids, timestamps, action_types, lengths,
                       request_time, candidate_item_ids)

    return serve
