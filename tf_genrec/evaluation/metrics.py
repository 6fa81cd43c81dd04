"""Recall@K and NDCG@K for full-catalogue leave-one-out ranking.

Each user has one held-out target, so Recall@K equals HR@K and the ideal DCG
is 1: NDCG@K = 1 / log2(rank + 2) for a 0-based rank < K, else 0.
"""
import numpy as np

# 50-300: the depth a recall stage hands to ranking.
DEFAULT_RECALL_KS = (5, 10, 50, 100, 300)
DEFAULT_NDCG_KS = (5, 10)


def target_ranks(ranked, targets) -> np.ndarray:
  """0-based position of each user's target in its ranked list, -1 if absent.

  Args:
    ranked: [num_users, N] int item ids, best first, right-padded with -1.
    targets: [num_users] int item ids (>= 0).
  """
  ranked = np.asarray(ranked)
  targets = np.asarray(targets)
  if ranked.ndim != 2:
    raise ValueError(f"ranked must be [num_users, N], got shape {ranked.shape}")
  if targets.shape != (ranked.shape[0],):
    raise ValueError(f"targets must be [num_users={ranked.shape[0]}], got "
                     f"shape {targets.shape}")
  if targets.size and targets.min() < 0:
    raise ValueError("targets must be item ids >= 0")
  hits = ranked == targets[:, None]
  # argmax finds the first hit, so a duplicated item counts at its best rank.
  return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)


def _recall(ranks, k):
  return float(np.mean((ranks >= 0) & (ranks < k)))


def _ndcg(ranks, k):
  hit = (ranks >= 0) & (ranks < k)
  return float(np.mean(np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0),
                                0.0)))


def recall_at_k(ranked, targets, k: int) -> float:
  return _recall(target_ranks(ranked, targets), k)


def ndcg_at_k(ranked, targets, k: int) -> float:
  return _ndcg(target_ranks(ranked, targets), k)


def evaluate_ranking(ranked, targets, recall_ks=DEFAULT_RECALL_KS,
                     ndcg_ks=DEFAULT_NDCG_KS) -> dict:
  """{"recall@5": ..., "ndcg@10": ...} averaged over users.

  A list shorter than K is scored as is (missing positions are misses), so a
  recall stage that returns N < K items is not flattered.
  """
  ranks = target_ranks(ranked, targets)
  out = {f"recall@{k}": _recall(ranks, k) for k in recall_ks}
  out.update({f"ndcg@{k}": _ndcg(ranks, k) for k in ndcg_ks})
  return out


def top_k_from_scores(scores, k: int) -> np.ndarray:
  """[num_users, num_items] scores -> [num_users, k] item ids, best first."""
  scores = np.asarray(scores)
  k = min(k, scores.shape[1])
  part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
  order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1,
                     kind="stable")
  return np.take_along_axis(part, order, axis=1)
