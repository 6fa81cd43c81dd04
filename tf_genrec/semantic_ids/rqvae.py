"""Residual-quantised VAE (RQ-VAE) that turns item embeddings into codes.

An MLP encoder maps an item embedding to a latent z; L codebooks of K vectors
quantise it residually (level l quantises what levels < l left over), and an
MLP decoder reconstructs the embedding from the sum of the chosen vectors. The
chosen indices are the item's semantic ID (c_0, ..., c_{L-1}), coarse to fine.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
  input_dim: int = 384
  hidden_dims: tuple = (512, 256, 128)
  latent_dim: int = 32
  num_levels: int = 3
  codebook_size: int = 256
  beta: float = 0.25  # commitment weight: pulls encoder outputs to the codes
  learning_rate: float = 1e-3
  batch_size: int = 1024
  epochs: int = 500
  kmeans_iters: int = 25
  kmeans_sample: int = 8192  # points used for the k-means initialisation
  dead_code_reset_every: int = 25  # epochs; 0 disables the reset
  seed: int = 0

  def __post_init__(self):
    for name in ("input_dim", "latent_dim", "num_levels", "codebook_size",
                 "batch_size", "epochs"):
      if getattr(self, name) <= 0:
        raise ValueError(f"RQVAEConfig.{name} must be > 0, got "
                         f"{getattr(self, name)}")
    if self.beta < 0:
      raise ValueError(f"RQVAEConfig.beta must be >= 0, got {self.beta}")


def _mlp(dims, out_dim, name):
  layers = [tf.keras.layers.Dense(d, activation="relu") for d in dims]
  return tf.keras.Sequential(layers + [tf.keras.layers.Dense(out_dim)],
                             name=name)


def _sq_distances(x, centers):
  """[N, D] x [K, D] -> [N, K] squared Euclidean distances."""
  return (tf.reduce_sum(x * x, 1, keepdims=True)
          - 2.0 * tf.matmul(x, centers, transpose_b=True)
          + tf.reduce_sum(centers * centers, 1)[tf.newaxis])


def kmeans(points, k, iters, rng):
  """Lloyd's k-means with k-means++ seeding; [k, D] float32 centres.

  With fewer distinct points than k, the surplus centres are jittered copies
  so that every code starts out distinct (the dead-code reset moves them later).
  """
  points = np.asarray(points, np.float32)
  n = points.shape[0]
  centers = np.empty((k, points.shape[1]), np.float32)
  centers[0] = points[rng.integers(n)]
  closest = ((points - centers[0]) ** 2).sum(1)
  for i in range(1, k):
    total = closest.sum()
    idx = (rng.choice(n, p=closest / total) if total > 0 else rng.integers(n))
    centers[i] = points[idx]
    closest = np.minimum(closest, ((points - centers[i]) ** 2).sum(1))
  scale = points.std() + 1e-6
  x = tf.constant(points)
  for _ in range(iters):
    assign = tf.argmin(_sq_distances(x, tf.constant(centers)), 1).numpy()
    sums = np.zeros_like(centers)
    np.add.at(sums, assign, points)
    counts = np.bincount(assign, minlength=k)
    used = counts > 0
    centers[used] = sums[used] / counts[used, None]
    # Empty clusters restart at random points (slightly jittered, not equal).
    empty = np.flatnonzero(~used)
    jitter = rng.normal(0, 1e-3 * scale, (empty.size, centers.shape[1]))
    centers[empty] = points[rng.integers(n, size=empty.size)] + jitter
  return centers


class RQVAE(tf.Module):

  def __init__(self, config: RQVAEConfig):
    super().__init__(name="rqvae")
    self.config = config
    c = config
    self.encoder = _mlp(c.hidden_dims, c.latent_dim, "encoder")
    self.decoder = _mlp(tuple(reversed(c.hidden_dims)), c.input_dim, "decoder")
    self.encoder.build([None, c.input_dim])
    self.decoder.build([None, c.latent_dim])
    init = tf.random.stateless_normal(
        [c.num_levels, c.codebook_size, c.latent_dim], seed=[c.seed, 1])
    self.codebooks = tf.Variable(init, name="codebooks")

  @property
  def trainable_variables(self):
    # Keras 3 layers are not tf.Modules, so tf.Module's attribute walk misses
    # the MLP weights; list them explicitly.
    return (self.encoder.trainable_variables
            + self.decoder.trainable_variables + [self.codebooks])

  def quantize(self, z):
    """z [N, D] -> (sum of chosen codes, codes [N, L] int32, residuals, loss).

    The codebook term moves codes towards (stopped) residuals; the commitment
    term (weight beta) moves the encoder towards (stopped) codes.
    """
    residual = z
    quantized = tf.zeros_like(z)
    codes, residuals, loss = [], [], 0.0
    for level in range(self.config.num_levels):
      book = self.codebooks[level]
      idx = tf.argmin(_sq_distances(residual, book), axis=1,
                      output_type=tf.int32)
      chosen = tf.gather(book, idx)
      loss += (tf.reduce_mean(tf.square(tf.stop_gradient(residual) - chosen))
               + self.config.beta * tf.reduce_mean(
                   tf.square(residual - tf.stop_gradient(chosen))))
      codes.append(idx)
      residuals.append(residual)
      quantized += chosen
      residual = residual - tf.stop_gradient(chosen)
    return quantized, tf.stack(codes, 1), residuals, loss

  def __call__(self, x, training=False):
    """x [N, input_dim] -> (reconstruction, codes, recon loss, quant loss)."""
    z = self.encoder(x, training=training)
    quantized, codes, _, quant_loss = self.quantize(z)
    # Straight-through: the decoder sees the codes, gradients reach z as is.
    z_q = z + tf.stop_gradient(quantized - z)
    recon = self.decoder(z_q, training=training)
    recon_loss = tf.reduce_mean(tf.reduce_sum(tf.square(recon - x), 1))
    return recon, codes, recon_loss, quant_loss

  def level_residuals(self, x):
    """Per level, the [N, D] residual that level quantises (numpy)."""
    _, _, residuals, _ = self.quantize(self.encoder(x))
    return [r.numpy() for r in residuals]

  def init_codebooks(self, x, rng):
    """k-means on each level's residuals, coarse level first."""
    residual = self.encoder(tf.constant(x)).numpy()
    books = []
    for level in range(self.config.num_levels):
      centers = kmeans(residual, self.config.codebook_size,
                       self.config.kmeans_iters, rng)
      idx = tf.argmin(_sq_distances(tf.constant(residual), centers), 1).numpy()
      residual = residual - centers[idx]
      books.append(centers)
      logging.info("k-means init level %d: %d/%d codes used", level,
                   len(np.unique(idx)), self.config.codebook_size)
    self.codebooks.assign(np.stack(books))

  def reset_dead_codes(self, x, usage, rng):
    """Codes unused since the last reset restart at random current residuals.

    Without this, codes that lose every point early stay dead and the
    effective codebook (and hence SID capacity) shrinks.
    """
    residuals = self.level_residuals(tf.constant(x))
    books = self.codebooks.numpy()
    reset = []
    for level, counts in enumerate(usage):
      dead = np.flatnonzero(counts == 0)
      if dead.size:
        books[level, dead] = residuals[level][
            rng.integers(len(x), size=dead.size)]
      reset.append(int(dead.size))
    self.codebooks.assign(books)
    return reset

  def get_state(self) -> dict:
    """Weights as numpy arrays: small, picklable, to ship a trained model
    to other processes (e.g. Beam workers, tf_genrec/pipelines)."""
    return {"encoder": self.encoder.get_weights(),
            "decoder": self.decoder.get_weights(),
            "codebooks": self.codebooks.numpy()}

  @classmethod
  def from_state(cls, config: RQVAEConfig, state: dict) -> "RQVAE":
    model = cls(config)
    model.encoder.set_weights(state["encoder"])
    model.decoder.set_weights(state["decoder"])
    model.codebooks.assign(state["codebooks"])
    return model

  def encode_codes(self, x, batch_size=4096) -> np.ndarray:
    """[N, input_dim] -> [N, L] int32 codes."""
    out = []
    for start in range(0, len(x), batch_size):
      z = self.encoder(tf.constant(x[start:start + batch_size], tf.float32))
      out.append(self.quantize(z)[1].numpy())
    return np.concatenate(out).astype(np.int32)

  def reconstruction_loss(self, x, batch_size=4096) -> float:
    """Mean over items of the squared reconstruction error."""
    total = 0.0
    for start in range(0, len(x), batch_size):
      chunk = tf.constant(x[start:start + batch_size], tf.float32)
      total += float(self(chunk)[2]) * len(chunk)
    return total / len(x)


def codebook_usage(codes, codebook_size) -> list:
  """Per level, the fraction of the K codes that some item uses."""
  codes = np.asarray(codes)
  return [len(np.unique(codes[:, level])) / codebook_size
          for level in range(codes.shape[1])]


def train_rqvae(embeddings, config: RQVAEConfig):
  """Trains an RQ-VAE on [N, input_dim] embeddings.

  Returns:
    (model, history) with history a list of per-epoch dicts (loss terms and
    the number of dead codes reset).
  """
  x = np.asarray(embeddings, np.float32)
  if x.ndim != 2 or x.shape[1] != config.input_dim:
    raise ValueError(f"embeddings must be [N, input_dim={config.input_dim}], "
                     f"got shape {x.shape}")
  tf.keras.utils.set_random_seed(config.seed)
  rng = np.random.default_rng(config.seed)
  model = RQVAE(config)
  sample = x[rng.permutation(len(x))[:config.kmeans_sample]]
  model.init_codebooks(sample, rng)
  optimizer = tf.keras.optimizers.Adam(config.learning_rate)
  variables = model.trainable_variables

  @tf.function(reduce_retracing=True)
  def train_step(batch):
    with tf.GradientTape() as tape:
      _, codes, recon_loss, quant_loss = model(batch, training=True)
      loss = recon_loss + quant_loss
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return recon_loss, quant_loss, codes

  history = []
  usage = np.zeros([config.num_levels, config.codebook_size], np.int64)
  progress = tqdm(range(config.epochs), desc="rq-vae", unit="epoch")
  for epoch in progress:
    order = rng.permutation(len(x))
    recon_sum = quant_sum = 0.0
    for start in range(0, len(x), config.batch_size):
      batch = x[order[start:start + config.batch_size]]
      recon_loss, quant_loss, codes = train_step(tf.constant(batch))
      recon_sum += float(recon_loss) * len(batch)
      quant_sum += float(quant_loss) * len(batch)
      for level, col in enumerate(codes.numpy().T):
        usage[level] += np.bincount(col, minlength=config.codebook_size)
    record = {"epoch": epoch, "recon_loss": recon_sum / len(x),
              "quant_loss": quant_sum / len(x), "codes_reset": 0}
    if (config.dead_code_reset_every
        and (epoch + 1) % config.dead_code_reset_every == 0
        and epoch + 1 < config.epochs):
      record["codes_reset"] = sum(model.reset_dead_codes(x, usage, rng))
      usage[:] = 0
    history.append(record)
    progress.set_postfix(recon=f"{record['recon_loss']:.4f}",
                         quant=f"{record['quant_loss']:.4f}")
    if epoch % 50 == 0 or epoch + 1 == config.epochs:
      logging.info("epoch %d recon %.5f quant %.5f reset %d", epoch,
                   record["recon_loss"], record["quant_loss"],
                   record["codes_reset"])
  return model, history
