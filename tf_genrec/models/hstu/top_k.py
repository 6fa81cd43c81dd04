"""Full-catalogue top-k over item vectors: an ABC and brute-force MIPS.

The retrieval graph calls `top_k(queries, k)`; an approximate index (ScaNN,
HNSW, ...) with the same contract replaces BruteForceMIPS without touching
the model.
"""
import abc

import tensorflow as tf


class TopK(tf.Module, abc.ABC):
  """Maps query vectors [B, D] to the k best items by inner product."""

  @abc.abstractmethod
  def __call__(self, queries, k):
    """-> (item rows [B, k] int32, scores [B, k] float32), best first."""


class BruteForceMIPS(TopK):
  """Exact: one [B, D] x [D, num_items] matmul and tf.math.top_k."""

  def __init__(self, item_vectors, name="brute_force_mips"):
    super().__init__(name=name)
    self.item_vectors = tf.Variable(item_vectors, trainable=False,
                                    name="item_vectors")

  def __call__(self, queries, k):
    scores = tf.matmul(queries, self.item_vectors, transpose_b=True)
    scores, rows = tf.math.top_k(scores, k)
    return rows, scores
