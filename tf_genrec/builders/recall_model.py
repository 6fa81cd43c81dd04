"""GenerativeRecallModel: the whole recall path as one tf.Module.

BehaviorSequence -> SemanticIdLookup -> PromptAssemble -> generator ->
CodesToItems. The generator is anything with the contract of DEVELOPERS.md
(`generate(input_ids, lengths, beam_width [B]) -> (codes, scores)`): the
TF-native BeamSearchGenerator today, a TensorRT-LLM op wrapper later.
"""
import tensorflow as tf

from tf_genrec.builders.config import RecallGraphConfig
from tf_genrec.builders.stages import (BehaviorFeatures, ItemRetriever,
                                       PromptBuilder, SemanticIdEncoder)

# The serving signature's behaviour inputs (every scene) and its optional
# per-row request options, in signature order.
BEHAVIOR_INPUT_SPECS = (
    tf.TensorSpec([None, None], tf.int64, "item_ids"),
    tf.TensorSpec([None, None], tf.int64, "timestamps"),
    tf.TensorSpec([None, None], tf.int32, "action_types"),
    tf.TensorSpec([None], tf.int32, "lengths"),
    tf.TensorSpec([None], tf.int64, "request_time"),
)


def behavior_input_specs(item_vocabulary=None):
  """BEHAVIOR_INPUT_SPECS, with item_ids in the vocabulary's dtype (the
  catalogue's own ids) when there is one."""
  if item_vocabulary is None:
    return BEHAVIOR_INPUT_SPECS
  return (tf.TensorSpec([None, None], item_vocabulary.dtype, "item_ids"),
          *BEHAVIOR_INPUT_SPECS[1:])


REQUEST_OPTION_SPECS = (
    tf.TensorSpec([None], tf.int32, "beam_width"),
    tf.TensorSpec([None], tf.int32, "top_n"),
)


class GenerativeRecallModel(tf.Module):

  def __init__(self, config: RecallGraphConfig, item_table, generator,
               behavior=None, encoder=None, prompt=None, retriever=None,
               item_vocabulary=None):
    """item_vocabulary: an ItemVocabulary, for a serving signature that
    takes and returns the catalogue's own item ids (recall() keeps the
    model's ids)."""
    super().__init__(name=config.name)
    self._config = config
    self.item_table = item_table
    self.item_vocabulary = item_vocabulary
    self.behavior = behavior or BehaviorFeatures(config.behavior)
    self.encoder = encoder or SemanticIdEncoder(item_table,
                                                config.behavior.missing_items)
    self.prompt = prompt or PromptBuilder(config.template)
    self.generator = generator
    self.retriever = retriever or ItemRetriever(item_table, config.retrieval)

  @property
  def config(self) -> RecallGraphConfig:
    return self._config

  def recall(self, item_ids, timestamps, action_types, lengths, request_time,
             context_ids=None, context_lengths=None, beam_width=None,
             top_n=None):
    """Runs the recall path; per-row beam_width/top_n default to the config's.

    A request of zero rows gets empty outputs ([0, 0], [0, 0], [0, 0, L]).
    """
    c, r = self._config, self._config.retrieval
    batch = tf.shape(item_ids)[0]
    beam_width = self._per_row(beam_width, r.default_beam_width, batch,
                               "beam_width", r.max_beam_width)
    top_n = self._per_row(top_n, r.default_top_n, batch, "top_n", r.max_top_n)
    if context_ids is None:
      context_ids = tf.zeros([batch, 0], tf.int32)
      context_lengths = tf.zeros([batch], tf.int32)
    else:
      context_ids, context_lengths = self._check_context(context_ids,
                                                         context_lengths)

    def run():
      history, history_lengths = self.behavior(item_ids, timestamps,
                                               action_types, lengths,
                                               request_time)
      codes, code_lengths = self.encoder(history, history_lengths)
      input_ids, prompt_lengths = self.prompt(codes, code_lengths, context_ids,
                                              context_lengths)
      sids, beam_scores = self.generator.generate(input_ids, prompt_lengths,
                                                  beam_width)
      out_items, out_scores = self.retriever(sids, beam_scores, top_n,
                                             history, history_lengths)
      return {"item_ids": out_items, "scores": out_scores,
              "semantic_ids": sids}

    def empty():
      # The stages assume B >= 1: the widest row of no rows is undefined.
      return {"item_ids": tf.zeros([0, 0], tf.int64),
              "scores": tf.zeros([0, 0], tf.float32),
              "semantic_ids": tf.zeros([0, 0, c.template.num_levels],
                                       tf.int32)}

    return tf.cond(batch > 0, run, empty)

  def _check_context(self, context_ids, context_lengths):
    """Context width and lengths against max_context_len (set at export)."""
    limit = self._config.max_context_len
    checks = [
        tf.debugging.assert_less_equal(
            tf.shape(context_ids)[1], limit,
            message=f"context_ids.shape[1] must be <= max_context_len={limit} "
            "(set at export)"),
        tf.debugging.assert_less_equal(
            context_lengths, limit,
            message=f"context_lengths must be <= max_context_len={limit} "
            "(set at export)"),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(context_ids), tf.identity(context_lengths)

  @staticmethod
  def _per_row(value, default, batch, name, limit):
    """A [B] (or [1], broadcast) int32 option, checked against its limit."""
    if value is None:
      return tf.fill([batch], tf.constant(default, tf.int32))
    value = tf.broadcast_to(tf.convert_to_tensor(value, tf.int32), [batch])
    checks = [
        tf.debugging.assert_greater_equal(
            value, 1, message=f"{name} must be >= 1"),
        tf.debugging.assert_less_equal(
            value, limit, message=f"{name} must be <= {limit} (set at export)"),
    ]
    with tf.control_dependencies(checks):
      return tf.identity(value)

  def _serve(self, item_ids, *args, **kwargs):
    """recall() behind the signature: with a vocabulary, its ids in and out."""
    vocabulary = self.item_vocabulary
    if vocabulary is None:
      return self.recall(item_ids, *args, **kwargs)
    out = self.recall(vocabulary.to_dense(item_ids), *args, **kwargs)
    return dict(out, item_ids=vocabulary.to_external(out["item_ids"]))

  def serving_function(self):
    """The `serving_default` tf.function (TF Serving predict method).

    beam_width/top_n are optional: their SignatureDef defaults ([1]-shaped,
    broadcast along the batch) apply when a request omits them. Saving the
    tf.function itself (not a concrete function) is what records them.
    """
    c, r = self._config, self._config.retrieval
    core = list(behavior_input_specs(self.item_vocabulary))
    options = list(REQUEST_OPTION_SPECS)
    default_w = tf.constant([r.default_beam_width], tf.int32)
    default_n = tf.constant([r.default_top_n], tf.int32)
    if c.context_input:
      context = [tf.TensorSpec([None, None], tf.int32, "context_ids"),
                 tf.TensorSpec([None], tf.int32, "context_lengths")]

      @tf.function(input_signature=core + context + options)
      def serve(item_ids, timestamps, action_types, lengths, request_time,
                context_ids, context_lengths, beam_width=default_w,
                top_n=default_n):
        return self._serve(item_ids, timestamps, action_types, lengths,
                           request_time, context_ids, context_lengths,
                           beam_width, top_n)
    else:

      @tf.function(input_signature=core + options)
      def serve(item_ids, timestamps, action_types, lengths, request_time,
                beam_width=default_w, top_n=default_n):
        return self._serve(item_ids, timestamps, action_types, lengths,
                           request_time, beam_width=beam_width, top_n=top_n)

    return serve
