"""Leave-one-out full-catalogue scoring of any scorer, and most-popular.

A scorer (MostPopular here, SASRec in tf_genrec/models/sasrec/) exposes
`score(histories) -> [len(histories), num_items]` so that `evaluate_scorer`
ranks them the same way. Items already in a history stay
rankable unless `exclude_history` is set, which matches a recall model
exported with `--exclude_history`.
"""
import numpy as np

from tf_genrec.data.amazon import item_popularity
from tf_genrec.evaluation.metrics import (DEFAULT_NDCG_KS, DEFAULT_RECALL_KS,
                                          evaluate_ranking, top_k_from_scores)


def evaluate_scorer(score_fn, histories, targets, recall_ks=DEFAULT_RECALL_KS,
                    ndcg_ks=DEFAULT_NDCG_KS, batch_size=1024,
                    exclude_history=False, times=None) -> dict:
  """Ranks the full catalogue with `score_fn` per batch, then the metrics.

  exclude_history: a user's own history items are never ranked.
  times: timestamps parallel to the histories, or None; when given, the
  scorer is called as score_fn(histories, times).
  """
  top = max(tuple(recall_ks) + tuple(ndcg_ks))
  ranked = []
  for s in range(0, len(histories), batch_size):
    chunk = histories[s:s + batch_size]
    scores = (score_fn(chunk) if times is None else
              score_fn(chunk, times[s:s + batch_size]))
    if exclude_history:
      scores = np.array(scores, np.float32)  # writable (most-popular is not)
      for row, history in enumerate(chunk):
        scores[row, np.asarray(history, np.int64)] = -np.inf
    ranked.append(top_k_from_scores(scores, top))
  return evaluate_ranking(np.concatenate(ranked), targets, recall_ks, ndcg_ks)


class MostPopular:
  """Ranks items by interaction count in the histories it was fitted on."""

  def __init__(self, train_histories, num_items: int):
    self.popularity = item_popularity(train_histories, num_items)

  def score(self, histories):
    return np.broadcast_to(self.popularity, (len(histories),
                                             len(self.popularity)))
