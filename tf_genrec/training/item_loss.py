"""Auxiliary item-ID loss: the decoder state that predicts an item's first
semantic-ID token also classifies the item itself over the whole catalogue.

The SID head sees items only through their code prefixes; SASRec-style ID
models score every item directly and rank the first few better (NDCG@10 in
docs/quality.md). An item softmax at the same positions pushes those states
to tell single items apart. Its embedding table exists only in training (the
trainer's checkpoints), so exported graphs and HF checkpoints do not change.
ItemTargets also serves the distillation loss (distill.py), which needs the
same item of every SID token.
"""
import numpy as np
import tensorflow as tf

from tf_genrec.core.prompt import PromptTemplate


class ItemTargets:
  """Maps SID tokens back to item rows.

  Needs one item per semantic ID (the item table's collision_mode
  "disambiguate"), so that every SID in a sequence names exactly one item.
  """

  def __init__(self, codes, template: PromptTemplate):
    codes = np.asarray(codes, np.int64)
    if codes.ndim != 2 or codes.shape[1] != template.num_levels:
      raise ValueError(f"item codes must be [num_items, "
                       f"{template.num_levels}], got {codes.shape}")
    self.template = template
    keys = self._keys(codes)
    self._order = np.argsort(keys, kind="stable")
    self._sorted_keys = keys[self._order]
    if np.any(np.diff(self._sorted_keys) == 0):
      raise ValueError("item targets need one item per semantic ID; build "
                       "the item table with collision_mode='disambiguate'")

  def _keys(self, codes):
    """Each row of [M, L] codes as one int64, level 0 most significant."""
    t = self.template
    return np.ravel_multi_index(codes.T, [t.codebook_size] * t.num_levels)

  def rows(self, input_ids: np.ndarray) -> np.ndarray:
    """[B, S] int32 item row at each item's level-0 token, -1 elsewhere.

    Raises ValueError if an item's SID tokens are cut short or name no item.
    """
    t = self.template
    k, num_levels = t.codebook_size, t.num_levels
    sid = input_ids.astype(np.int64) - t.sid_offset
    rows = np.full(sid.shape, -1, np.int32)
    starts = np.argwhere((sid >= 0) & (sid < k))
    if not len(starts):
      return rows
    cols = starts[:, 1:2] + np.arange(num_levels)
    if cols.max() >= sid.shape[1]:
      raise ValueError("a sequence ends inside an item's semantic ID")
    tokens = sid[starts[:, :1], cols]  # [M, L]
    if np.any(tokens // k != np.arange(num_levels)):
      raise ValueError("an item's semantic-ID tokens are not one per level "
                       "in order")
    keys = self._keys(tokens % k)
    rank = np.minimum(np.searchsorted(self._sorted_keys, keys),
                      len(self._sorted_keys) - 1)
    if np.any(self._sorted_keys[rank] != keys):
      raise ValueError("a semantic ID in the sequence has no item in the "
                       "item table")
    rows[starts[:, 0], starts[:, 1]] = self._order[rank]
    return rows


def item_embedding_table(num_items: int, hidden_size: int, seed: int = 0):
  """The item loss's training-only [num_items, hidden_size] table."""
  init = tf.random.stateless_normal([num_items, hidden_size], [seed, 7],
                                    stddev=0.02)
  return tf.Variable(init, name="item_embeddings")


def item_loss(hidden, rows, embeddings):
  """Mean cross-entropy of each item against the whole catalogue.

  hidden: [B, S-1, H] decoder states predicting tokens 1..S-1; rows: [B, S]
  from ItemTargets.rows (the item is scored from the state before its first
  SID token, where the beam search starts decoding it).
  """
  positions = tf.where(rows[:, 1:] >= 0)
  logits = tf.matmul(tf.gather_nd(hidden, positions), embeddings,
                     transpose_b=True)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      tf.gather_nd(rows[:, 1:], positions), logits))
