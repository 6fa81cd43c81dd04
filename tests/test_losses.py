"""Loss terms against their definitions, on fixed tensors."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec.training.losses import Distillation, ItemLoss, StepTensors


def _tensors(rng, m=6, k=5):
  logits = tf.constant(rng.normal(size=(m, k)), tf.float32)
  sid = tf.constant(rng.integers(0, k, m), tf.int32)
  ce = tf.nn.sparse_softmax_cross_entropy_with_logits(sid, logits)
  hidden = tf.constant(rng.normal(size=(2, 4, 3)), tf.float32)
  return StepTensors({"item_rows": tf.constant([[0, -1, 1], [2, -1, -1]])},
                     hidden, tf.zeros([m, 2], tf.int64), sid, logits, ce)


def test_distillation_mixes_each_target_with_its_soft_target():
  rng = np.random.default_rng(0)
  t = _tensors(rng)
  soft = rng.dirichlet(np.ones(5), size=6).astype(np.float32)
  has = np.array([1, 0, 1, 1, 0, 1], bool)
  soft[~has] = 0  # DistillTargets: no teacher, a zero soft row
  term = Distillation(0.3, lambda batch, positions, sid: (soft, has))
  added, logged = term(t)
  ce = t.sid_ce.numpy()
  log_p = tf.nn.log_softmax(t.logits).numpy()
  soft_ce = -(soft * log_p).sum(-1)
  w = 0.3 * has
  # The step's objective: mean of (1 - w) * CE + w * soft CE per target.
  assert float(tf.reduce_mean(t.sid_ce) + added) == pytest.approx(
      np.mean((1 - w) * ce + w * soft_ce), rel=1e-5)
  assert float(logged) == pytest.approx(soft_ce[has].mean(), rel=1e-5)


def test_item_loss_term_is_the_weighted_item_loss():
  t = _tensors(np.random.default_rng(1))
  embeddings = tf.Variable(np.random.default_rng(2).normal(size=(3, 3)),
                           dtype=tf.float32)
  added, logged = ItemLoss(0.5, embeddings)(t)
  assert float(added) == pytest.approx(0.5 * float(logged), rel=1e-6)
  assert float(logged) > 0
