"""The set of valid semantic IDs as a prefix tree held in tensors.

Every level is one CSR block: the nodes at depth l (distinct prefixes of
length l, numbered in lexicographic order, depth 0 = the root) list their
children as a contiguous, code-sorted run of depth-(l+1) node ids. Because the
numbering is lexicographic, the children of node n are exactly the node ids
`row_splits_l[n] .. row_splits_l[n+1]-1`, so the CSR needs no child-id array:
one int32 per node for the splits and one for its code. At 1M random items,
K=256, L=4 that is 12 MB, whereas a dense [nodes, K] mask at depth 3 alone
would be ~250 MB.

Decoding asks for the children of a batch of beams padded to the level's
largest fan-out (a static number of the trie), which keeps every shape in the
beam search static except batch and beam width.
"""
import numpy as np
import tensorflow as tf

from tf_genrec.tables.item_table import read_item_table


class SemanticIdTrie(tf.Module):
  """Valid semantic IDs (code tuples of length L over [0, K)) as tensors."""

  def __init__(self, codes, codebook_size: int, name="semantic_id_trie"):
    """Builds the trie.

    Args:
      codes: [N, L] int array-like, one row per item; rows may repeat (several
        items sharing one semantic ID).
      codebook_size: K; every code must be in [0, K).
    """
    super().__init__(name=name)
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
      raise ValueError(f"codes must be a non-empty [N, L] array, got shape "
                       f"{codes.shape}")
    if codebook_size < 1:
      raise ValueError(f"codebook_size must be >= 1, got {codebook_size}")
    if codes.min() < 0 or codes.max() >= codebook_size:
      raise ValueError(f"codes must be in [0, codebook_size={codebook_size}), "
                       f"got range [{codes.min()}, {codes.max()}]")
    self.codebook_size = int(codebook_size)
    self.num_levels = int(codes.shape[1])
    # Sorted distinct SIDs: prefixes of equal length are then contiguous runs
    # and their first occurrences are in lexicographic order.
    sids = np.unique(codes.astype(np.int32), axis=0)
    self.sids_np = sids  # [num_sids, L], e.g. for an engine file
    self.num_sids = int(sids.shape[0])

    self.row_splits_np, self.child_codes_np, self.max_children = [], [], []
    parent = np.zeros(self.num_sids, np.int64)  # depth-0 node of each SID row
    num_parents = 1
    for level in range(self.num_levels):
      new_prefix = np.ones(self.num_sids, bool)
      new_prefix[1:] = np.any(sids[1:, :level + 1] != sids[:-1, :level + 1],
                              axis=1)
      first_rows = np.flatnonzero(new_prefix)
      fanout = np.bincount(parent[first_rows], minlength=num_parents)
      row_splits = np.zeros(num_parents + 1, np.int64)
      np.cumsum(fanout, out=row_splits[1:])
      self.row_splits_np.append(row_splits.astype(np.int32))
      self.child_codes_np.append(sids[first_rows, level])
      self.max_children.append(int(fanout.max()))
      parent = np.cumsum(new_prefix) - 1  # depth-(level+1) node of each row
      num_parents = len(first_rows)
    self.num_nodes = [len(s) - 1 for s in self.row_splits_np] + [num_parents]

    # Variables, not constants: they travel in the SavedModel's checkpoint
    # instead of bloating the GraphDef with up to tens of MB of constants.
    self._row_splits = [
        tf.Variable(s, trainable=False, name=f"row_splits_{l}")
        for l, s in enumerate(self.row_splits_np)
    ]
    self._child_codes = [
        tf.Variable(c, trainable=False, name=f"child_codes_{l}")
        for l, c in enumerate(self.child_codes_np)
    ]

  @classmethod
  def from_item_table(cls, path, codebook_size: int):
    """The trie of every semantic ID listed in an item table file."""
    return cls(read_item_table(path).codes, codebook_size)

  def children(self, level: int, node_ids):
    """Children of depth-`level` nodes, padded to the level's max fan-out.

    Args:
      level: python int in [0, L): the code level being chosen.
      node_ids: int32 tensor [...] of node ids at depth `level` (0 for the
        root at level 0).
    Returns:
      codes: int32 [..., C] child codes (0 where padding),
      child_ids: int32 [..., C] depth-(level+1) node ids (0 where padding),
      valid: bool [..., C]; C = max_children[level], a static number.
    """
    if not 0 <= level < self.num_levels:
      raise ValueError(f"level must be in [0, {self.num_levels}), got {level}")
    row_splits = self._row_splits[level]
    start = tf.gather(row_splits, node_ids)
    count = tf.gather(row_splits, node_ids + 1) - start
    offsets = tf.range(self.max_children[level], dtype=tf.int32)
    valid = offsets < count[..., tf.newaxis]
    child_ids = tf.where(valid, start[..., tf.newaxis] + offsets, 0)
    codes = tf.where(valid, tf.gather(self._child_codes[level], child_ids), 0)
    return codes, child_ids, valid

  def next_codes_np(self, prefix) -> np.ndarray:
    """Allowed codes after a code prefix (host side, e.g. for a reference
    decoder); empty if the prefix is not in the trie or is complete."""
    node = 0
    for level, code in enumerate(prefix):
      if level >= self.num_levels:
        return np.zeros(0, np.int32)
      lo, hi = self.row_splits_np[level][node:node + 2]
      # Children of a node are code-sorted: binary search the run.
      j = lo + np.searchsorted(self.child_codes_np[level][lo:hi], code)
      if j == hi or self.child_codes_np[level][j] != code:
        return np.zeros(0, np.int32)
      node = j
    level = len(prefix)
    if level >= self.num_levels:
      return np.zeros(0, np.int32)
    lo, hi = self.row_splits_np[level][node:node + 2]
    return self.child_codes_np[level][lo:hi]
