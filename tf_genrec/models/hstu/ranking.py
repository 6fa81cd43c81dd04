"""HSTU ranking: target-aware interleaving of items and actions, multi-task
heads, and M-FALCON inference.

The sequence is item_1, action_1, ..., item_n, action_n (right-padded);
token 2i holds item i and 2i + 1 its action, both at the item's time. The
state at an item token has not seen that item's action (causal mask), so
the heads there predict it: task t is "the action type is tasks[t]". At
serving time each candidate is an item token at position 2n (after the
history, at request time) and its head outputs are its per-task scores.
"""
import dataclasses
from typing import Tuple

import tensorflow as tf

from tf_genrec.models.hstu.config import HSTUConfig
from tf_genrec.models.hstu.encoder import HSTUEncoder
from tf_genrec.models.hstu.io import read_config, restore_weights, save_model


@dataclasses.dataclass(frozen=True)
class RankingTasks:
  """Task names and the action type each predicts."""
  names: Tuple[str, ...] = ("click", "purchase")
  action_types: Tuple[int, ...] = (1, 2)
  num_action_types: int = 3  # Embedded action vocabulary [0, num).

  def __post_init__(self):
    if len(self.names) != len(self.action_types) or not self.names:
      raise ValueError(f"RankingTasks: {len(self.names)} names for "
                       f"{len(self.action_types)} action types")
    bad = [a for a in self.action_types
           if not 0 <= a < self.num_action_types]
    if bad:
      raise ValueError(f"RankingTasks.action_types {bad} outside "
                       f"[0, num_action_types={self.num_action_types})")


class HSTURanking(tf.keras.Model):

  def __init__(self, config: HSTUConfig, num_items: int, tasks: RankingTasks):
    super().__init__(name="hstu_ranking")
    if config.max_len % 2 != 1:
      raise ValueError("HSTUConfig.max_len of a ranking model must be "
                       f"2 * max_history + 1 (odd), got {config.max_len}")
    self.config, self.num_items, self.tasks = config, num_items, tasks
    self.item_emb = tf.keras.layers.Embedding(num_items + 1, config.hidden_dim)
    self.action_emb = tf.keras.layers.Embedding(tasks.num_action_types,
                                                config.hidden_dim)
    self.input_dropout = tf.keras.layers.Dropout(config.dropout)
    self.encoder = HSTUEncoder(config, name="encoder")
    self.final_norm = tf.keras.layers.LayerNormalization(
        epsilon=config.epsilon)
    self.heads = tf.keras.layers.Dense(len(tasks.names), name="heads")

  @property
  def max_history(self) -> int:
    return self.config.max_len // 2

  def _items(self, tokens):
    return self.item_emb(tokens) * (self.config.hidden_dim ** 0.5)

  def _interleave(self, tokens, actions, times, training):
    """[B, n] items/actions/times -> tokens x [B, 2n, D], valid, times."""
    b, n = tf.shape(tokens)[0], tf.shape(tokens)[1]
    actions = tf.where(tokens > 0, actions, 0)
    pair = lambda a, c: tf.reshape(tf.stack([a, c], axis=2),
                                   tf.concat([[b, 2 * n], tf.shape(a)[2:]], 0))
    x = pair(self._items(tokens), self.action_emb(actions) *
             (self.config.hidden_dim ** 0.5))
    x = self.input_dropout(x, training=training)
    valid = pair(tokens > 0, tokens > 0)
    return x, valid, (pair(times, times) if self.config.time_bias else None)

  def call(self, tokens, actions, times=None, training=False):
    """Items [B, n] (0 = pad, right-padded), actions [B, n] int32, times
    [B, n] -> per-task logits at each item [B, n, num_tasks]."""
    x, valid, times = self._interleave(tokens, actions, times, training)
    states = self.encoder(x, valid, times, training=training)
    return self.heads(self.final_norm(states[:, 0::2]))

  def multitask_loss(self, tokens, actions, times=None, training=True):
    """Mean binary cross-entropy over valid items and tasks."""
    logits = self(tokens, actions, times, training=training)
    labels = tf.cast(actions[..., tf.newaxis] == tf.constant(
        self.tasks.action_types, actions.dtype), logits.dtype)
    per = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels,
                                                  logits=logits)
    weight = tf.cast(tokens > 0, per.dtype)[..., tf.newaxis]
    return tf.reduce_sum(per * weight) / tf.maximum(
        tf.reduce_sum(weight) * len(self.tasks.names), 1.0)

  def encode_history(self, tokens, actions, times=None):
    """The history's per-layer K/V cache (M-FALCON's encoder-level cache)."""
    x, valid, times = self._interleave(tokens, actions, times, False)
    return self.encoder.encode_history(x, valid, times)[1]

  def rank(self, cache, lengths, candidates, request_time=None,
           micro_batch=64):
    """Candidate tokens [B, C] after each row's `lengths` [B] history items
    -> per-task logits [B, C, num_tasks], m = micro_batch at a time."""
    states = self.encoder.m_falcon(
        cache, self._items(candidates), 2 * tf.cast(lengths, tf.int32),
        request_time if self.config.time_bias else None, micro_batch)
    return self.heads(self.final_norm(states))


def save_hstu_ranking(model: HSTURanking, model_dir: str):
  save_model(model, model_dir, {"num_items": model.num_items,
                                "hstu": dataclasses.asdict(model.config),
                                "tasks": dataclasses.asdict(model.tasks)})


def load_hstu_ranking(model_dir: str) -> HSTURanking:
  saved = read_config(model_dir)
  tasks = RankingTasks(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in saved["tasks"].items()})
  model = HSTURanking(HSTUConfig(**saved["hstu"]), saved["num_items"], tasks)
  model(tf.ones([1, 1], tf.int32), tf.zeros([1, 1], tf.int32),
        tf.zeros([1, 1], tf.int64))  # creates the weights
  return restore_weights(model, model_dir)
