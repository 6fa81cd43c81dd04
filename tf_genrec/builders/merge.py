"""MergeStage: several recall branches' ranked lists -> one list of N items.

The rule, applied per request row (the reference in tests/test_multi_branch.py
implements the same words independently):

1. Normalise each branch's scores (`normalization`):
   - "none": raw scores (branches must share a scale);
   - "minmax": per row and branch, (s - min) / (max - min) over its valid
     items (1.0 when all are equal);
   - "rank": 1 / (1 + position in the branch's list).
2. De-duplicate: an item returned by several branches is kept once, by the
   branch that gives it the highest normalised score (ties: the lower
   branch index, then the better position); its other copies are removed
   and the later items of those branches move up.
3. Quotas: branch i keeps its first quotas[i] remaining items.
4. Fill: when a branch has fewer items than its quota, the free slots go to
   the best remaining (de-duplicated, over-quota) items of any branch by
   normalised score, so a row still gets sum(quotas) items when the
   branches hold that many.
5. The kept items are ordered by normalised score (ties as in 2); the
   output is item_ids [B, N], scores [B, N] (normalised), branch [B, N]
   (int32 index into the branch names), N = sum(quotas); missing slots are
   item -1, score -inf, branch -1.

Valid entries of a branch's list are item ids >= 0 with a finite score
(recall models pad with -1 / -inf).
"""
import dataclasses
from typing import Tuple

import tensorflow as tf

NORMALIZATIONS = ("none", "minmax", "rank")


@dataclasses.dataclass(frozen=True)
class MergeConfig:
  """Branch names (output `branch` indexes them), quotas, normalisation."""
  branch_names: Tuple[str, ...]
  quotas: Tuple[int, ...]
  normalization: str = "rank"

  def __post_init__(self):
    if not self.branch_names:
      raise ValueError("MergeConfig.branch_names: need at least one branch")
    if len(set(self.branch_names)) != len(self.branch_names):
      raise ValueError(f"MergeConfig.branch_names must be unique, got "
                       f"{self.branch_names}")
    if len(self.quotas) != len(self.branch_names):
      raise ValueError(f"MergeConfig.quotas: one per branch "
                       f"({len(self.branch_names)}), got {self.quotas}")
    if any(q < 0 for q in self.quotas) or sum(self.quotas) < 1:
      raise ValueError(f"MergeConfig.quotas must be >= 0 with a positive "
                       f"sum, got {self.quotas}")
    if self.normalization not in NORMALIZATIONS:
      raise ValueError(f"MergeConfig.normalization must be one of "
                       f"{NORMALIZATIONS}, got {self.normalization!r}")

  @property
  def top_n(self) -> int:
    return sum(self.quotas)


class MergeStage(tf.Module):
  """Merges per-branch (item_ids [B, N_i], scores [B, N_i]) lists."""

  def __init__(self, config: MergeConfig):
    super().__init__(name="merge_stage")
    self._config = config

  @property
  def config(self) -> MergeConfig:
    return self._config

  def __call__(self, branch_items, branch_scores):
    c = self._config
    if not len(branch_items) == len(branch_scores) == len(c.quotas):
      raise ValueError(f"MergeStage: {len(c.quotas)} branches configured, "
                       f"got {len(branch_items)} item and "
                       f"{len(branch_scores)} score lists")
    items, norm, branch, position, valid = [], [], [], [], []
    for i, (ids, scores) in enumerate(zip(branch_items, branch_scores)):
      ids = tf.cast(ids, tf.int64)
      scores = tf.cast(scores, tf.float32)
      ok = (ids >= 0) & tf.math.is_finite(scores)
      pos = tf.broadcast_to(tf.range(tf.shape(ids)[1])[tf.newaxis],
                            tf.shape(ids))
      items.append(ids)
      norm.append(self._normalize(scores, ok, pos))
      branch.append(tf.fill(tf.shape(ids), i))
      position.append(pos)
      valid.append(ok)
    # All candidates of a row side by side, branch by branch in rank order,
    # so a stable sort on score breaks ties by branch, then position.
    items, norm, branch, position, valid = (
        tf.concat(x, axis=1) for x in (items, norm, branch, position, valid))
    norm = tf.where(valid, norm, float("-inf"))

    keep = valid & _first_occurrence(items, norm)
    quotas = tf.constant(c.quotas, tf.int32)
    # Rank of each kept candidate within its own branch's kept candidates.
    one_hot = tf.cast(keep, tf.int32)[..., tf.newaxis] * tf.one_hot(
        branch, len(c.quotas), dtype=tf.int32)
    rank_in_branch = tf.reduce_sum(
        (tf.cumsum(one_hot, axis=1) - one_hot) * tf.one_hot(
            branch, len(c.quotas), dtype=tf.int32), axis=2)
    in_quota = keep & (rank_in_branch < tf.gather(quotas, branch))
    spare = c.top_n - tf.reduce_sum(tf.cast(in_quota, tf.int32), axis=1)
    leftover = keep & ~in_quota
    fill_rank = _descending_rank(tf.where(leftover, norm, float("-inf")))
    chosen = in_quota | (leftover & (fill_rank < spare[:, tf.newaxis]))

    order = tf.argsort(tf.where(chosen, norm, float("-inf")), axis=1,
                       direction="DESCENDING", stable=True)
    n = tf.minimum(c.top_n, tf.shape(items)[1])
    order = order[:, :n]
    chosen = tf.gather(chosen, order, batch_dims=1)
    out_items = tf.where(chosen, tf.gather(items, order, batch_dims=1),
                         tf.constant(-1, tf.int64))
    out_scores = tf.where(chosen, tf.gather(norm, order, batch_dims=1),
                          float("-inf"))
    out_branch = tf.where(chosen, tf.gather(branch, order, batch_dims=1), -1)
    pad = [[0, 0], [0, c.top_n - n]]
    return {
        "item_ids": tf.pad(out_items, pad, constant_values=-1),
        "scores": tf.pad(out_scores, pad, constant_values=float("-inf")),
        "branch": tf.pad(out_branch, pad, constant_values=-1),
    }

  def _normalize(self, scores, valid, position):
    mode = self._config.normalization
    if mode == "none":
      return scores
    if mode == "rank":
      return 1.0 / (1.0 + tf.cast(position, tf.float32))
    high = tf.reduce_max(tf.where(valid, scores, float("-inf")), axis=1,
                         keepdims=True)
    low = tf.reduce_min(tf.where(valid, scores, float("inf")), axis=1,
                        keepdims=True)
    span = high - low
    return tf.where(span > 0, (scores - low) / tf.where(span > 0, span, 1.0),
                    1.0)


def _descending_rank(values):
  """0-based rank of each entry when a row is sorted descending (stable)."""
  order = tf.argsort(values, axis=1, direction="DESCENDING", stable=True)
  return tf.argsort(order, axis=1, stable=True)


def _first_occurrence(items, norm):
  """True where a candidate is its item's best copy in the row (rule 2).

  Sorting by score (stable: ties keep branch/position order), then stably by
  item id, puts each item's best copy first in its run of equal ids.
  """
  by_score = tf.argsort(norm, axis=1, direction="DESCENDING", stable=True)
  ids = tf.gather(items, by_score, batch_dims=1)
  by_id = tf.argsort(ids, axis=1, stable=True)
  order = tf.gather(by_score, by_id, batch_dims=1)
  sorted_ids = tf.gather(items, order, batch_dims=1)
  first = tf.concat([tf.ones_like(sorted_ids[:, :1], tf.bool),
                     sorted_ids[:, 1:] != sorted_ids[:, :-1]], axis=1)
  # Scatter the flags back to candidate positions (order is a permutation).
  return tf.gather(first, tf.argsort(order, axis=1, stable=True),
                   batch_dims=1)
