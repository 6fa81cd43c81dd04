"""The generator's training objective as a sum of small loss terms.

Every step computes the SID cross-entropy (the objective decoding ranks by:
each target over its level's K codes or its trie siblings, trainer.sid_logits)
and adds each enabled auxiliary term; a new objective is a new LossTerm, not
a branch in the trainer's step.
"""
import abc
import dataclasses
from typing import Callable

import tensorflow as tf

from tf_genrec.training.distill import distill_loss
from tf_genrec.training.item_loss import item_loss


@dataclasses.dataclass(frozen=True)
class StepTensors:
  """What a step's forward produced, for the loss terms to read."""
  batch: dict  # the trainer's _train_batch
  hidden: tf.Tensor  # [B, S, H] decoder states
  positions: tf.Tensor  # [M, 2] SID targets in input_ids[:, 1:]
  sid: tf.Tensor  # [M] level * K + code
  logits: tf.Tensor  # [M, K]
  sid_ce: tf.Tensor  # [M] per-target SID cross-entropy


class LossTerm(abc.ABC):
  """An auxiliary objective: its addition to the SID loss, and what to log."""
  name: str

  @abc.abstractmethod
  def __call__(self, t: StepTensors):
    """(scalar added to the step's objective, scalar logged as `name`)."""


class Distillation(LossTerm):
  """Each SID target's loss becomes (1 - w) * one-hot CE + w * soft CE
  against the teacher's target (distill.py), where the item has a teacher;
  added to the mean SID CE as mean(w * (soft CE - CE))."""
  name = "distill_loss"

  def __init__(self, weight: float, soft_targets: Callable):
    self.weight = weight  # in [0, 1] (TrainConfig's check)
    # (batch, positions, sid) -> (soft [M, K], has_teacher [M])
    self._soft_targets = soft_targets

  def __call__(self, t: StepTensors):
    soft, has = self._soft_targets(t.batch, t.positions, t.sid)
    soft_ce = distill_loss(t.logits, tf.stop_gradient(soft))
    has = tf.cast(has, soft_ce.dtype)
    added = tf.reduce_mean(self.weight * has * (soft_ce - t.sid_ce))
    logged = tf.reduce_sum(soft_ce) / tf.maximum(tf.reduce_sum(has), 1.0)
    return added, logged


class ItemLoss(LossTerm):
  """weight * the item-ID softmax at each item's first SID position
  (item_loss.py)."""
  name = "item_loss"

  def __init__(self, weight: float, embeddings: tf.Variable):
    self.weight = weight
    self.embeddings = embeddings

  def __call__(self, t: StepTensors):
    value = item_loss(t.hidden[:, :-1], t.batch["item_rows"], self.embeddings)
    return self.weight * value, value
