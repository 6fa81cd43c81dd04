"""TF-native beam search over semantic IDs, constrained by a SemanticIdTrie.

Only the search lives here (candidate expansion, trie masks, top-k); the
model runs through models/qwen2/inference.Qwen2Inference (prefill once per
request, shared prompt KV, one decode step per level, each level scoring
only its K LM-head rows). The search's own cost choices: candidates are just
the trie children of each beam, padded to the level's static max fan-out;
the L levels are unrolled in one tf.function, so a request is one graph run
with no Python per step; every layer's beam cache is reordered with one
gather.

Scores are sums over levels of a log_softmax that matches how the model was
trained (`sid_softmax`): "level" normalises over the level's K codes and then
excludes codes not in the trie; "trie" normalises over the trie children of
the beam's prefix only, so the scores are log-probabilities over existing
SIDs and sum to one over the whole catalogue.
"""
import tensorflow as tf

from tf_genrec.generation.generation_config import check_sid_softmax
from tf_genrec.models.qwen2.inference import Qwen2Inference


class BeamSearchGenerator(tf.Module):
  """Generator contract of DEVELOPERS.md over a Qwen2ForCausalLM.

  compute_dtype: "float32" (exact) or "bfloat16" (Qwen2Inference). Not
  exact: on peaked models the best SIDs agree with float32 and scores differ
  by up to ~10% (tests/test_beam_search.py).
  """

  def __init__(self, model, trie, sid_offset: int, max_beam_width: int,
               compute_dtype: str = "float32", sid_softmax: str = "level",
               name="beam_search_generator"):
    super().__init__(name=name)
    if not 1 <= max_beam_width <= 1024:
      raise ValueError(f"max_beam_width must be in [1, 1024], got "
                       f"{max_beam_width}")
    check_sid_softmax(sid_softmax)
    vocab = model.config.vocab_size
    sid_end = sid_offset + trie.num_levels * trie.codebook_size
    if sid_offset < 0 or sid_end > vocab:
      raise ValueError(f"SID tokens [sid_offset={sid_offset}, {sid_end}) must "
                       f"lie in the model's vocabulary [0, {vocab})")
    self.trie = trie
    self.sid_offset = int(sid_offset)
    self.max_beam_width = int(max_beam_width)
    self.compute_dtype = compute_dtype
    self.sid_softmax = sid_softmax
    # One head per level: its K LM-head rows.
    self._decoder = Qwen2Inference(
        model, (self.sid_offset, trie.codebook_size, trie.num_levels),
        compute_dtype)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None], tf.int32, name="input_ids"),
      tf.TensorSpec([None], tf.int32, name="lengths"),
      tf.TensorSpec(None, tf.int32, name="beam_width"),
  ])
  def generate(self, input_ids, lengths, beam_width):
    """Top beam_width[b] semantic IDs of each prompt, best first.

    The batch decodes at its widest row, W = max(beam_width), and every row
    is pruned to its own width at every level, so row b's beams are exactly
    those of a beam_width[b]-wide search of that row alone, whatever its
    batch-mates ask for.

    Args:
      input_ids: [B, P] int32 prompts, left-padded; B >= 1.
      lengths: [B] int32 prompt lengths in [1, P].
      beam_width: [B] int32 widths in [1, max_beam_width], or a scalar for
        every row.
    Returns:
      codes: [B, W, L] int32; -1 for invalid beams (fewer than beam_width[b]
        SIDs reachable, or beams past beam_width[b]).
      scores: [B, W] float32 log-probabilities; -inf for invalid beams.
    """
    input_ids, lengths, beam_width = self._check_inputs(input_ids, lengths,
                                                        beam_width)
    batch = tf.shape(input_ids)[0]
    width = tf.reduce_max(beam_width)
    k, num_levels = self.trie.codebook_size, self.trie.num_levels
    prompt_kv, key_bias, last_hidden = self._decoder.prefill(input_ids, lengths)
    beam_pos = tf.range(width)[tf.newaxis, :]
    in_width = beam_pos < beam_width[:, tf.newaxis]  # [B, W]

    # Only beam 0 starts valid: top-W over W copies of the root then picks
    # the root's children without a special first step.
    scores = tf.where(beam_pos == 0, 0.0, float("-inf")) * tf.ones([batch, 1])
    nodes = tf.zeros([batch, width], tf.int32)
    codes = tf.zeros([batch, width, 0], tf.int32)
    hidden = last_hidden[:, tf.newaxis, :]  # [B, 1, H]: one root per row
    beam_kv = None
    for level in range(num_levels):
      logits = self._decoder.head_logits(hidden, level)  # [B, W or 1, K]
      if self.sid_softmax == "level":
        logits = tf.nn.log_softmax(logits)
      if level == 0:
        logits = tf.broadcast_to(logits, [batch, width, k])
      child_codes, child_ids, valid = self.trie.children(level, nodes)
      child_scores = tf.where(
          valid, tf.gather(logits, child_codes, batch_dims=2), float("-inf"))
      if self.sid_softmax == "trie":  # where(): a childless row gives NaN.
        child_scores = tf.where(valid, tf.nn.log_softmax(child_scores),
                                float("-inf"))
      fanout = self.trie.max_children[level]
      candidates = tf.reshape(scores[..., tf.newaxis] + child_scores,
                              [batch, -1])
      scores, picked = tf.math.top_k(candidates, width)
      # A row's beams past its own width drop out here, so their children
      # (-inf) never compete at the next level: the row's first beam_width[b]
      # candidates are the top of exactly its own search's candidates, in the
      # same order (top_k is stable and a narrower search's candidate list is
      # a prefix of this one).
      scores = tf.where(in_width, scores, float("-inf"))
      parents = picked // fanout
      new_codes = tf.gather(tf.reshape(child_codes, [batch, -1]), picked,
                            batch_dims=1)
      nodes = tf.gather(tf.reshape(child_ids, [batch, -1]), picked,
                        batch_dims=1)
      codes = tf.concat([tf.gather(codes, parents, batch_dims=1),
                         new_codes[..., tf.newaxis]], axis=-1)
      if level + 1 == num_levels:
        break
      if beam_kv is not None:
        # One gather reorders every layer's beam cache.
        beam_kv = tf.gather(beam_kv, parents, batch_dims=1)
      tokens = self.sid_offset + level * k + new_codes
      hidden, beam_kv = self._decoder.decode_step(
          tokens, lengths + level, prompt_kv, key_bias, beam_kv)

    invalid = tf.math.is_inf(scores)
    codes = tf.where(invalid[..., tf.newaxis], -1, codes)
    return codes, scores

  def _check_inputs(self, input_ids, lengths, beam_width):
    prompt_len = tf.shape(input_ids)[1]
    width_shape = tf.debugging.assert_equal(
        tf.logical_or(tf.rank(beam_width) == 0,
                      tf.equal(tf.size(beam_width), tf.shape(input_ids)[0])),
        True, message="beam_width must have one entry per input_ids row "
        "(or be a scalar)")
    with tf.control_dependencies([width_shape]):
      beam_width = tf.broadcast_to(beam_width, tf.shape(input_ids)[:1])
    checks = [
        tf.debugging.assert_greater_equal(
            tf.shape(input_ids)[0], 1,
            message="input_ids must have at least one row"),
        tf.debugging.assert_greater_equal(
            beam_width, 1, message="beam_width must be >= 1"),
        tf.debugging.assert_less_equal(
            beam_width, self.max_beam_width,
            message=f"beam_width must be <= max_beam_width="
            f"{self.max_beam_width} (set at export)"),
        tf.debugging.assert_equal(
            tf.shape(lengths)[0], tf.shape(input_ids)[0],
            message="lengths must have one entry per input_ids row"),
        tf.debugging.assert_greater_equal(
            lengths, 1, message="lengths must be >= 1"),
        tf.debugging.assert_less_equal(
            lengths, prompt_len,
            message="lengths must be <= input_ids.shape[1]"),
    ]
    with tf.control_dependencies(checks):
      return (tf.identity(input_ids), tf.identity(lengths),
              tf.identity(beam_width))
