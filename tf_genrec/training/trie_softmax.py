"""Trie-constrained training softmax: each SID target competes only with its
siblings in the trie (the codes that exist after its item's prefix).

A model trained this way spends no capacity on pushing down codes that no
item has, and its per-level scores mean exactly what the beam search with
sid_softmax="trie" sums: log-probabilities over existing SIDs.
"""
import numpy as np
import tensorflow as tf

from tf_genrec.core.prompt import PromptTemplate
from tf_genrec.generation.trie import SemanticIdTrie

# Finite so that a -inf can never meet a zero label weight (0 * -inf = NaN).
_EXCLUDED = -1e9


class TrieSoftmaxTargets:
  """Per-position rows of an additive logit bias over the K codes of a level.

  Row r belongs to one trie node (a SID prefix): 0 for its children's codes,
  _EXCLUDED for the rest. `rows` maps each SID token of a training batch to
  the node of the prefix it continues, from the tokens alone.
  """

  def __init__(self, trie: SemanticIdTrie, template: PromptTemplate):
    if (trie.num_levels, trie.codebook_size) != (template.num_levels,
                                                 template.codebook_size):
      raise ValueError(
          f"trie has L={trie.num_levels}, K={trie.codebook_size}; the "
          f"template expects L={template.num_levels}, "
          f"K={template.codebook_size}")
    self.template = template
    k = trie.codebook_size
    # Nodes of depth l are numbered in lexicographic order of their prefixes
    # (SemanticIdTrie), so the row of a prefix is the level's row offset plus
    # its rank among the level's sorted prefix keys.
    self._row_offsets = np.cumsum([0] + trie.num_nodes[:-2])
    self._keys = [np.zeros(1, np.int64)]  # depth 0: the root's empty prefix
    parent_keys = self._keys[0]
    bias = []
    for level in range(trie.num_levels):
      splits = trie.row_splits_np[level]
      children = trie.child_codes_np[level].astype(np.int64)
      parent_of_child = np.repeat(np.arange(len(splits) - 1), np.diff(splits))
      rows = np.full((len(splits) - 1, k), _EXCLUDED, np.float32)
      rows[parent_of_child, children] = 0.0
      bias.append(rows)
      parent_keys = parent_keys[parent_of_child] * k + children
      if level + 1 < trie.num_levels:
        self._keys.append(parent_keys)
    self.bias = tf.constant(np.concatenate(bias))  # [nodes below depth L, K]

  def rows(self, input_ids: np.ndarray) -> np.ndarray:
    """[B, S] int32 bias row of the SID token at each position (0 elsewhere).

    Raises ValueError if a SID token continues a prefix not in the trie.
    """
    t = self.template
    k = t.codebook_size
    sid = input_ids.astype(np.int64) - t.sid_offset
    is_sid = (sid >= 0) & (sid < t.num_levels * k)
    level = np.where(is_sid, sid // k, -1)
    code = np.where(is_sid, sid % k, 0)
    # key of the prefix before a level-l token: its l predecessors' codes,
    # most significant first.
    key = np.zeros_like(sid)
    for back in range(1, t.num_levels):
      prev = np.zeros_like(code)
      prev[:, back:] = code[:, :-back]
      key += np.where(level >= back, prev * k**(back - 1), 0)
    rows = np.zeros(sid.shape, np.int32)
    for l in range(t.num_levels):
      at = level == l
      if not at.any():
        continue
      rank = np.searchsorted(self._keys[l], key[at])
      rank = np.minimum(rank, len(self._keys[l]) - 1)
      if np.any(self._keys[l][rank] != key[at]):
        raise ValueError(f"a level-{l} SID token follows a prefix that no "
                         "item of the trie has")
      rows[at] = self._row_offsets[l] + rank
    return rows
