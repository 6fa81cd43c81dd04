"""Distillation from an item-ID teacher (the in-project SASRec) into the SID head.

The generator over-fits its one-hot SID targets (training loss well below
held-out loss, docs/quality.md) and trails SASRec at the top of the list. A
teacher trained on the same training split gives, at every history position,
a distribution over all items; marginalised onto the trie it becomes a soft
target for each SID token: level l of the next item gets
P_teacher(code c | the item's true codes before level l). Only the training
objective changes: the teacher is not exported and the serving graph is the
same generator.
"""
import numpy as np
import tensorflow as tf

from tf_genrec.core.prompt import PromptTemplate
from tf_genrec.models.sasrec.model import SASRec, pad_left


class DistillTargets:
  """Teacher inputs per batch and the teacher's soft SID targets."""

  def __init__(self, teacher: SASRec, codes, template: PromptTemplate,
               temperature: float = 1.0):
    codes = np.asarray(codes, np.int64)
    if teacher.config.num_items != len(codes):
      raise ValueError(f"the teacher scores {teacher.config.num_items} items, "
                       f"the item table has {len(codes)}")
    if temperature <= 0:
      raise ValueError(f"distill temperature must be > 0, got {temperature}")
    self.teacher = teacher
    self.template = template
    self.temperature = temperature
    num_levels, k = template.num_levels, template.codebook_size
    # prefix_keys[l, i]: item i's codes before level l as one int (0 at l=0);
    # two items share a level-l prefix iff their keys at l are equal.
    keys = np.zeros((num_levels, len(codes)), np.int64)
    for level in range(1, num_levels):
      keys[level] = keys[level - 1] * k + codes[:, level - 1]
    if keys.max() >= 2**31:
      raise ValueError("semantic-ID prefixes do not fit in int32")
    self._prefix_keys = tf.constant(keys, tf.int32)
    self._codes = tf.constant(codes.T, tf.int32)  # [L, N]

  def inputs(self, item_rows: np.ndarray):
    """Teacher tokens and, per SID token, its item and teacher state.

    item_rows: [B, S] from ItemTargets.rows (item row at each item's level-0
    token). Returns teacher_tokens [B, max_len] (the items before each
    sequence's last, as SASRec reads them), sid_rows [B, S] (the item of each
    SID token that has a teacher state, -1 elsewhere) and states [B, S] (flat
    index b * max_len + t of the teacher state that predicts that item).
    A sequence's first item (no history) and items whose previous item is
    older than the teacher's last max_len inputs have no state.
    """
    max_len = self.teacher.config.max_len
    num_levels = self.template.num_levels
    sid_rows = np.full(item_rows.shape, -1, np.int32)
    states = np.full(item_rows.shape, -1, np.int32)
    contexts = []
    for b, row in enumerate(item_rows):
      cols = np.flatnonzero(row >= 0)
      items = row[cols]
      contexts.append(items[:-1] + 1)  # SASRec token = item + 1
      inputs = len(items) - 1
      for j in range(max(1, inputs - max_len + 1), len(items)):
        # Item j is predicted from input j - 1, at column max_len - inputs + j - 1.
        span = slice(cols[j], cols[j] + num_levels)
        sid_rows[b, span] = items[j]
        states[b, span] = b * max_len + max_len - inputs + j - 1
    return pad_left(contexts, max_len), sid_rows, states

  def soft_targets(self, teacher_tokens, states, rows, levels):
    """[M, K] teacher distributions over each SID target's level, and [M] bool.

    states, rows, levels: [M] per SID target (from `inputs`; levels =
    SID token // K). Targets without a teacher state get zeros and False.
    """
    has = states >= 0
    where = tf.where(has)[:, 0]
    hidden = self.teacher(teacher_tokens, training=False)
    hidden = tf.reshape(hidden, [-1, self.teacher.config.hidden_dim])
    logits = self.teacher.item_logits(tf.gather(hidden, tf.gather(states,
                                                                  where)))
    probs = tf.nn.softmax(logits / self.temperature)  # [M', N]
    levels = tf.gather(levels, where)
    prefix = tf.gather_nd(self._prefix_keys,
                          tf.stack([levels, tf.gather(rows, where)], 1))
    # Mass on the items that share the target's true prefix, summed per code.
    same = tf.gather(self._prefix_keys, levels) == prefix[:, tf.newaxis]
    probs *= tf.cast(same, probs.dtype)
    k = self.template.codebook_size
    m = tf.shape(probs)[0]
    segments = tf.range(m)[:, tf.newaxis] * k + tf.gather(self._codes, levels)
    dist = tf.reshape(tf.math.unsorted_segment_sum(
        tf.reshape(probs, [-1]), tf.reshape(segments, [-1]), m * k), [m, k])
    mass = tf.reduce_sum(dist, -1, keepdims=True)
    # The true item is in its own prefix, so mass > 0 unless it underflows.
    dist = tf.math.divide_no_nan(dist, mass)
    ok = mass[:, 0] > 0
    n = tf.shape(states, out_type=tf.int64)
    soft = tf.scatter_nd(where[:, tf.newaxis], dist,
                         tf.concat([n, [k]], 0))
    ok = tf.scatter_nd(where[:, tf.newaxis], tf.cast(ok, tf.float32), n)
    return soft, ok > 0


def distill_loss(logits, soft):
  """Per-target cross-entropy of SID logits [M, K] against soft targets [M, K]
  (0 for a target without a teacher: its soft row is zeros, the logits are
  finite, the trie bias included)."""
  return -tf.reduce_sum(soft * tf.nn.log_softmax(logits), -1)
