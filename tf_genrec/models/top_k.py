"""Top-k retrieval over a fixed candidate set: the TopK ABC and exact search.

Every embedding-retrieval branch (two-tower, SASRec, HSTU) encodes the user
and asks a TopK for the k candidates with the highest inner product; how the
search is done (exact here, an ANN index such as ScaNN elsewhere) is the
TopK's business, so an index slots in without touching the model.
"""
import abc

import tensorflow as tf


class TopK(tf.Module, abc.ABC):
  """Finds the k best candidates for each query embedding."""

  @property
  @abc.abstractmethod
  def num_candidates(self) -> int:
    """Candidates in the index (k is capped by it)."""

  @abc.abstractmethod
  def __call__(self, queries, k):
    """queries [B, D], k (int or scalar tensor) -> (candidate ids
    [B, min(k, num_candidates)] int64, scores [B, ...] float32), best first."""


class BruteForceTopK(TopK):
  """Exact search: one [B, D] x [D, M] matmul and tf.math.top_k.

  Fast enough for catalogues up to a few million items on CPU for recall;
  the candidates are constants of the SavedModel.
  """

  def __init__(self, candidate_embeddings, candidate_ids=None,
               name="brute_force_top_k"):
    super().__init__(name=name)
    embeddings = tf.convert_to_tensor(candidate_embeddings, tf.float32)
    if embeddings.shape.rank != 2:
      raise ValueError(f"candidate_embeddings must be [M, D], got shape "
                       f"{embeddings.shape}")
    m = int(embeddings.shape[0])
    if candidate_ids is None:
      candidate_ids = tf.range(m, dtype=tf.int64)
    candidate_ids = tf.convert_to_tensor(candidate_ids, tf.int64)
    if candidate_ids.shape != (m,):
      raise ValueError(f"candidate_ids must be [M={m}], got shape "
                       f"{candidate_ids.shape}")
    self._embeddings = tf.Variable(embeddings, trainable=False,
                                   name="embeddings")
    self._ids = tf.Variable(candidate_ids, trainable=False, name="ids")

  @property
  def num_candidates(self) -> int:
    return int(self._ids.shape[0])

  def __call__(self, queries, k):
    scores = tf.matmul(queries, self._embeddings, transpose_b=True)
    k = tf.minimum(tf.cast(k, tf.int32), self.num_candidates)
    scores, index = tf.math.top_k(scores, k)
    return tf.gather(self._ids, index), scores
