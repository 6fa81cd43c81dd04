"""Baselines for leave-one-out full-catalogue recall: most-popular and SASRec.

Both expose `score(histories) -> [len(histories), num_items]` so that
`evaluate_scorer` ranks them the same way. Items already in a history stay
rankable unless `exclude_history` is set, which matches a recall model
exported with `--exclude_history`.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.data.amazon import item_popularity
from tf_genrec.evaluation.early_stopping import ValidationEarlyStopping
from tf_genrec.evaluation.metrics import (DEFAULT_NDCG_KS, DEFAULT_RECALL_KS,
                                          evaluate_ranking, top_k_from_scores)
from tf_genrec.models.keras_io import load_model, save_model


def evaluate_scorer(score_fn, histories, targets, recall_ks=DEFAULT_RECALL_KS,
                    ndcg_ks=DEFAULT_NDCG_KS, batch_size=1024,
                    exclude_history=False) -> dict:
  """Ranks the full catalogue with `score_fn` per batch, then the metrics.

  exclude_history: a user's own history items are never ranked.
  """
  top = max(tuple(recall_ks) + tuple(ndcg_ks))
  ranked = []
  for s in range(0, len(histories), batch_size):
    chunk = histories[s:s + batch_size]
    scores = score_fn(chunk)
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


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  num_items: int
  max_len: int = 50
  hidden_dim: int = 64
  num_blocks: int = 2
  num_heads: int = 2
  dropout: float = 0.3
  learning_rate: float = 1e-3
  batch_size: int = 256
  max_epochs: int = 100
  eval_every: int = 2  # epochs between validation passes
  patience: int = 5  # validation passes without improvement before stopping
  seed: int = 0

  def __post_init__(self):
    for name in ("num_items", "max_len", "hidden_dim", "num_blocks",
                 "num_heads", "batch_size", "max_epochs", "eval_every",
                 "patience"):
      if getattr(self, name) <= 0:
        raise ValueError(f"SASRecConfig.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.hidden_dim % self.num_heads:
      raise ValueError(f"SASRecConfig.hidden_dim={self.hidden_dim} must be "
                       f"divisible by num_heads={self.num_heads}")
    if not 0 <= self.dropout < 1:
      raise ValueError(f"SASRecConfig.dropout must be in [0, 1), got "
                       f"{self.dropout}")


class SASRec(tf.keras.Model):
  """Self-attentive sequential recommendation (Kang & McAuley, 2018).

  Pre-LN causal transformer over item-id embeddings with learned positions;
  the output at position t scores every item by a dot product with the
  (shared) item embeddings, trained with softmax cross-entropy over the full
  catalogue, which is a stronger objective than the paper's sampled BCE.
  Inputs are left-padded with 0 and item id i is token i + 1, so the last
  position always holds the most recent item.
  """

  def __init__(self, config: SASRecConfig):
    super().__init__(name="sasrec")
    c = self.config = config
    self.item_emb = tf.keras.layers.Embedding(c.num_items + 1, c.hidden_dim)
    self.pos_emb = tf.keras.layers.Embedding(c.max_len, c.hidden_dim)
    self.emb_dropout = tf.keras.layers.Dropout(c.dropout)
    self.blocks = []
    for _ in range(c.num_blocks):
      self.blocks.append((
          tf.keras.layers.LayerNormalization(epsilon=1e-8),
          tf.keras.layers.MultiHeadAttention(
              c.num_heads, c.hidden_dim // c.num_heads, dropout=c.dropout),
          tf.keras.layers.LayerNormalization(epsilon=1e-8),
          tf.keras.Sequential([
              tf.keras.layers.Dense(c.hidden_dim, activation="relu"),
              tf.keras.layers.Dropout(c.dropout),
              tf.keras.layers.Dense(c.hidden_dim),
              tf.keras.layers.Dropout(c.dropout)]),
      ))
    self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)

  def call(self, tokens, training=False):
    """tokens [B, T] (0 = pad) -> hidden states [B, T, hidden_dim]."""
    t = tf.shape(tokens)[1]
    mask = tokens > 0
    x = self.item_emb(tokens) * (self.config.hidden_dim ** 0.5)
    x += self.pos_emb(tf.range(t))[tf.newaxis]
    x = self.emb_dropout(x, training=training)
    x *= tf.cast(mask, x.dtype)[..., tf.newaxis]
    causal = tf.linalg.band_part(tf.ones([t, t], tf.bool), -1, 0)
    attn_mask = tf.logical_and(causal[tf.newaxis], mask[:, tf.newaxis, :])
    for norm1, attention, norm2, ffn in self.blocks:
      q = norm1(x)
      x = x + attention(q, q, attention_mask=attn_mask, training=training)
      x = x + ffn(norm2(x), training=training)
      x *= tf.cast(mask, x.dtype)[..., tf.newaxis]
    return self.final_norm(x)

  def item_logits(self, hidden):
    """[..., hidden_dim] -> [..., num_items] (pad token excluded)."""
    return tf.matmul(hidden, self.item_emb.embeddings[1:], transpose_b=True)

  def item_embeddings(self) -> np.ndarray:
    """[num_items, hidden_dim]; row i is item id i (the pad row dropped)."""
    return self.item_emb.embeddings[1:].numpy()

  def score(self, histories):
    tokens = pad_left([np.asarray(h) + 1 for h in histories],
                      self.config.max_len)
    hidden = self(tf.constant(tokens), training=False)[:, -1]
    return self.item_logits(hidden).numpy()


def save_sasrec(model: SASRec, model_dir: str):
  """config.json + weights.npz (Keras weight order) in model_dir."""
  save_model(model, model_dir)


def load_sasrec(model_dir: str) -> SASRec:
  """The SASRec saved by save_sasrec, ready to score."""
  return load_model(model_dir, SASRec, SASRecConfig, lambda m: m(
      tf.zeros([1, m.config.max_len], tf.int32)))


def pad_left(sequences, max_len: int) -> np.ndarray:
  """Keeps the last max_len tokens of each sequence, left-pads with 0."""
  out = np.zeros((len(sequences), max_len), np.int32)
  for row, seq in enumerate(sequences):
    seq = seq[-max_len:]
    if len(seq):
      out[row, max_len - len(seq):] = seq
  return out


def _training_pairs(train_histories, max_len):
  """Per user: inputs s[:-1] and next-item targets s[1:] (as tokens)."""
  seqs = [np.asarray(h) + 1 for h in train_histories if len(h) >= 2]
  return (pad_left([s[:-1] for s in seqs], max_len),
          pad_left([s[1:] for s in seqs], max_len))


def train_sasrec(train_histories, valid_histories, valid_targets,
                 config: SASRecConfig, select_metric: str = "ndcg@10"):
  """Trains on training histories; early-stops on the validation split only.

  With valid_histories None (a refit whose epochs were chosen on validation
  before) it trains exactly config.max_epochs and keeps the final weights.
  Returns (model with the best validation weights, history of dicts).
  """
  tf.keras.utils.set_random_seed(config.seed)
  rng = np.random.default_rng(config.seed)
  model = SASRec(config)
  inputs, targets = _training_pairs(train_histories, config.max_len)
  if not len(inputs):
    raise ValueError("train_histories: no history has >= 2 items")
  model(tf.constant(inputs[:1]))
  optimizer = tf.keras.optimizers.Adam(config.learning_rate, beta_2=0.98)

  @tf.function(reduce_retracing=True)
  def train_step(x, y):
    with tf.GradientTape() as tape:
      hidden = model(x, training=True)
      # Logits only where there is a target: most positions are padding.
      where = tf.where(y > 0)
      logits = model.item_logits(tf.gather_nd(hidden, where))
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=tf.gather_nd(y, where) - 1, logits=logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  stopper, history = ValidationEarlyStopping(select_metric, config.patience), []
  progress = tqdm(range(config.max_epochs), desc="sasrec", unit="epoch")
  for epoch in progress:
    order = rng.permutation(len(inputs))
    losses = []
    for start in range(0, len(inputs), config.batch_size):
      rows = order[start:start + config.batch_size]
      losses.append(float(train_step(tf.constant(inputs[rows]),
                                     tf.constant(targets[rows]))))
    record = {"epoch": epoch, "loss": float(np.mean(losses))}
    history.append(record)
    if valid_histories is None:
      progress.set_postfix(loss=f"{record['loss']:.3f}")
    elif (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.max_epochs:
      metrics = evaluate_scorer(model.score, valid_histories, valid_targets)
      record["valid"] = metrics
      logging.info("epoch %d loss %.4f valid %s", epoch, record["loss"],
                   metrics)
      progress.set_postfix(loss=f"{record['loss']:.3f}",
                           **{select_metric: f"{metrics[select_metric]:.4f}"})
      if stopper.update(epoch, metrics, model):
        break
  stopper.restore_best(model)
  return model, history


def best_epochs(history, select_metric: str = "ndcg@10") -> int:
  """Epochs up to the best validation pass of a train_sasrec history."""
  passes = [r for r in history if "valid" in r]
  if not passes:
    raise ValueError("history has no validation pass")
  best = max(passes, key=lambda r: r["valid"][select_metric])
  return best["epoch"] + 1


def fit_sasrec(split, config: SASRecConfig, refit: bool = False):
  """SASRec as every leave-one-out protocol fits it.

  Always early-stops on validation first (split.train -> validation
  targets). With refit it then trains a fresh model on h[:-1]
  (split.fit_histories(refit=True)) for exactly the epochs that validation
  chose, the test-time model of the refit protocol. Returns (model, info):
  info has "epochs_run" (the validation run) and, with refit, "refit_epochs".
  """
  model, history = train_sasrec(split.train,
                                *split.inputs_and_targets("valid"), config)
  info = {"epochs_run": len(history)}
  if refit:
    info["refit_epochs"] = best_epochs(history)
    model, _ = train_sasrec(
        split.fit_histories(refit=True), None, None,
        dataclasses.replace(config, max_epochs=info["refit_epochs"]))
  return model, info
