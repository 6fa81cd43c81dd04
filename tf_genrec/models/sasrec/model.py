"""SASRec (Kang & McAuley, 2018) over item ids, its config and save/load."""
import dataclasses

import numpy as np
import tensorflow as tf

from tf_genrec.models.keras_io import load_model, save_model


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


def load_sasrec(model_dir: str, num_items=None) -> SASRec:
  """The SASRec saved by save_sasrec, ready to score; num_items: the
  catalogue it must have been trained on (checked)."""
  model = load_model(model_dir, SASRec, SASRecConfig, lambda m: m(
      tf.zeros([1, m.config.max_len], tf.int32)))
  if num_items is not None and model.config.num_items != num_items:
    raise ValueError(f"{model_dir} has num_items={model.config.num_items}, "
                     f"the dataset {num_items}")
  return model


def pad_left(sequences, max_len: int) -> np.ndarray:
  """Keeps the last max_len tokens of each sequence, left-pads with 0."""
  out = np.zeros((len(sequences), max_len), np.int32)
  for row, seq in enumerate(sequences):
    seq = seq[-max_len:]
    if len(seq):
      out[row, max_len - len(seq):] = seq
  return out
