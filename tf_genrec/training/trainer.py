"""Trains a Qwen2 generator on semantic-ID sequences; resumable.

One code path for one process or several workers (distribute.py): each step
runs under the Trainer's tf.distribute strategy, every replica on its slice
of the global batch.
"""
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from tf_genrec.core.prompt import PromptTemplate
from tf_genrec.generation.generation_config import (check_sid_softmax,
                                                    save_sid_softmax)
from tf_genrec.models.qwen2.checkpoint import save_hf_checkpoint
from tf_genrec.training import distribute
from tf_genrec.training.distill import DistillTargets
from tf_genrec.training.examples import pad_batch
from tf_genrec.training.item_loss import ItemTargets, item_embedding_table
from tf_genrec.training.losses import Distillation, ItemLoss, StepTensors
from tf_genrec.training.optimizer import AdamW, OptimizerConfig
from tf_genrec.training.trie_softmax import TrieSoftmaxTargets


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  batch_size: int = 64
  # Training-only dropout of the decoder (modeling.py); 0 disables it.
  dropout: float = 0.0
  # "level" or "trie" (generation_config.SID_SOFTMAXES); "trie" needs the
  # trie of the item table passed to the Trainer.
  sid_softmax: str = "level"
  # Weight of the auxiliary item-ID loss (item_loss.py); > 0 needs the item
  # table's codes passed to the Trainer.
  item_loss_weight: float = 0.0
  # Share of each SID target's loss taken by a teacher's soft target
  # (distill.py); > 0 needs the item table's codes and a teacher.
  distill_weight: float = 0.0
  distill_temperature: float = 1.0
  optimizer: OptimizerConfig = OptimizerConfig()
  checkpoint_every: int = 500
  log_every: int = 50
  # Early stopping (fit with a validator): a validation every eval_every
  # steps (0: none); training stops after `patience` validations in a row
  # without a better score (0: runs to total_steps, still keeping the best).
  eval_every: int = 0
  patience: int = 0
  seed: int = 0

  def __post_init__(self):
    for name in ("eval_every", "patience"):
      if getattr(self, name) < 0:
        raise ValueError(f"TrainConfig.{name} must be >= 0, got "
                         f"{getattr(self, name)}")


def sid_logits(model, template: PromptTemplate, hidden, input_ids, mask,
               last_item_only=False, trie_bias=None):
  """Logits of every semantic-ID target, each over its own level's K codes.

  hidden: the decoder's final states for input_ids, [B, S, H].
  Returns positions [M, 2] of the targets in input_ids[:, 1:], their SID
  tokens minus sid_offset (level * K + code) [M] and logits [M, K].

  last_item_only scores just each sequence's final item (the held-out target
  of a validation sequence), not the history items the model trained on.

  Each target is scored against the K codes of its own level only (the LM-head
  rows sid_offset + l*K + [0, K)), exactly as the beam search scores at decode
  time, so training optimises the quantity that decoding ranks by.
  trie_bias = (bias [R, K], rows [B, S]) from TrieSoftmaxTargets further
  restricts each target to its trie siblings (beam search sid_softmax="trie").
  """
  L, K = template.num_levels, template.codebook_size
  hidden = hidden[:, :-1]
  sid = input_ids[:, 1:] - template.sid_offset
  is_sid = (sid >= 0) & (sid < L * K) & (mask[:, 1:] > 0)
  if last_item_only:  # Rows are left-padded: the last L targets are the item.
    width = tf.shape(sid)[1]
    is_sid &= (tf.range(width) >= width - L)[tf.newaxis, :]
  positions = tf.where(is_sid)
  h = tf.gather_nd(hidden, positions)  # [M, H]
  sid = tf.gather_nd(sid, positions)
  head = model.lm_head_weight()[template.sid_offset:template.sid_offset +
                                L * K]
  logits = tf.reshape(tf.matmul(h, head, transpose_b=True), [-1, L, K])
  logits = tf.gather(logits, sid // K, batch_dims=1)  # [M, K]
  if trie_bias is not None:
    bias, rows = trie_bias
    logits += tf.gather(bias, tf.gather_nd(rows[:, 1:], positions))
  return positions, sid, logits


def sid_loss(model, template: PromptTemplate, hidden, input_ids, mask,
             last_item_only=False, trie_bias=None):
  """Mean next-token cross-entropy over every semantic-ID position."""
  _, sid, logits = sid_logits(model, template, hidden, input_ids, mask,
                              last_item_only, trie_bias)
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      sid % template.codebook_size, logits))


class Trainer:
  """Owns the training state; `fit` resumes from the latest checkpoint.

  strategy: the tf.distribute strategy to train under (default: the current
  one; distribute.strategy_from_env picks it from TF_CONFIG), whose scope
  the model must have been built in. config.batch_size is the global batch.
  A checkpoint holds one copy of every variable, so it resumes under any
  number of workers.
  """

  def __init__(self, model, template: PromptTemplate, config: TrainConfig,
               work_dir, trie=None, item_codes=None, teacher=None,
               strategy=None):
    self.strategy = strategy or tf.distribute.get_strategy()
    if not all(self.strategy.extended.variable_created_in_scope(v)
               for v in model.trainable_variables):
      raise ValueError("build the model under the Trainer's strategy.scope()")
    if config.batch_size < self.strategy.num_replicas_in_sync:
      raise ValueError(f"batch_size {config.batch_size} (the global batch) "
                       f"must be >= the {self.strategy.num_replicas_in_sync} "
                       "replicas")
    self.model = model
    self.template = template
    self.config = config
    self.work_dir = work_dir
    check_sid_softmax(config.sid_softmax)
    if (config.sid_softmax == "trie") != (trie is not None):
      raise ValueError("pass the item table's trie exactly when "
                       "sid_softmax='trie'")
    self._trie_targets = (None if trie is None
                          else TrieSoftmaxTargets(trie, template))
    distill = config.distill_weight > 0
    if not 0 <= config.distill_weight <= 1:
      raise ValueError(f"distill_weight must be in [0, 1], got "
                       f"{config.distill_weight}")
    if distill != (teacher is not None):
      raise ValueError("pass a teacher exactly when distill_weight > 0")
    if (config.item_loss_weight > 0 or distill) != (item_codes is not None):
      raise ValueError("pass the item table's codes exactly when "
                       "item_loss_weight > 0 or distill_weight > 0")
    self._item_targets = (None if item_codes is None
                          else ItemTargets(item_codes, template))
    self._distill = (DistillTargets(teacher, item_codes, template,
                                    config.distill_temperature)
                     if distill else None)
    self._variables = list(model.trainable_variables)
    extra = {}
    self._terms = []  # the auxiliary objectives (losses.py)
    if distill:
      self._terms.append(Distillation(config.distill_weight,
                                      self.teacher_targets))
    with self.strategy.scope():
      self._item_embeddings = None  # the item loss's own table
      if config.item_loss_weight > 0:
        self._item_embeddings = item_embedding_table(
            len(item_codes), model.config.hidden_size, config.seed)
        self._variables.append(self._item_embeddings)
        extra["item_embeddings"] = self._item_embeddings
        self._terms.append(ItemLoss(config.item_loss_weight,
                                    self._item_embeddings))
      self.optimizer = AdamW(config.optimizer, self._variables)
    self._ckpt = tf.train.Checkpoint(model=model, optimizer=self.optimizer,
                                     **extra)
    # Every worker restores the chief's checkpoints (a shared work_dir).
    self._manager = tf.train.CheckpointManager(
        self._ckpt, os.path.join(work_dir, "checkpoints"), max_to_keep=2)
    self._chief = distribute.is_chief(self.strategy)
    self._state = None  # the last validation's (best_state)
    spec = tf.TensorSpec([None, None], tf.int32)
    # Batches differ in shape: trace once for any shape, not per shape.
    self._train_step = tf.function(self._distributed_step,
                                   reduce_retracing=True)
    self._eval_loss = tf.function(
        lambda ids, mask, rows: sid_loss(
            self.model, self.template, self.model.model(ids, mask), ids, mask,
            last_item_only=True, trie_bias=self._trie_bias(rows)),
        input_signature=[spec] * 3)

  def _batch(self, sequences):
    """input_ids, mask and trie bias rows (zeros without a trie) [B, S].

    No sequences (a replica's share of a global batch smaller than the
    replica count) gives one row of padding, which has no target."""
    pad = self.template.pad_token_id
    ids, mask = pad_batch(sequences or [np.array([pad], np.int32)], pad)
    if not sequences:
      mask[:] = 0
    rows = (self._trie_targets.rows(ids) if self._trie_targets is not None
            else np.zeros_like(ids))
    return ids, mask, rows

  def _train_batch(self, sequences):
    """_batch as a dict, plus the inputs of the enabled auxiliary losses."""
    ids, mask, rows = self._batch(sequences)
    batch = {"input_ids": ids, "mask": mask, "trie_rows": rows}
    if self._item_targets is not None:
      batch["item_rows"] = self._item_targets.rows(ids)
    if self._distill is not None:
      (batch["teacher_tokens"], batch["sid_rows"],
       batch["teacher_states"]) = self._distill.inputs(batch["item_rows"])
    return batch

  def _trie_bias(self, rows):
    if self._trie_targets is None:
      return None
    return self._trie_targets.bias, rows

  def teacher_targets(self, batch, positions, sid):
    """Soft targets [M, K] and has-teacher [M] of the SID targets of
    sid_logits(positions, sid) in a _train_batch."""
    return self._distill.soft_targets(
        batch["teacher_tokens"],
        tf.gather_nd(batch["teacher_states"][:, 1:], positions),
        tf.gather_nd(batch["sid_rows"][:, 1:], positions),
        sid // self.template.codebook_size)

  def _distribute(self, sequences, rows):
    """The global batch of sequences[rows], each replica's slice as its
    _train_batch (under one replica: the whole batch)."""
    def replica_batch(ctx):
      batch = self._train_batch(
          [sequences[i] for i in distribute.replica_rows(rows, ctx)])
      return tf.nest.map_structure(tf.convert_to_tensor, batch)

    return self.strategy.experimental_distribute_values_from_function(
        replica_batch)

  def _distributed_step(self, batch):
    """_step on every replica; its (identical) results from this worker's."""
    results = self.strategy.run(self._step, args=(batch,))
    return tf.nest.map_structure(
        lambda x: self.strategy.experimental_local_results(x)[0], results)

  def _step(self, batch):
    """One update; returns the SID loss, the auxiliary losses, lr, grad norm.

    Each objective is a mean over the global batch's SID targets: a replica
    weighs its own means by its share of the targets (each term averages
    over these targets, or over their items, L targets each) and the
    gradients and logged losses are summed over the replicas. Under one
    replica the share is exactly 1: the numbers of a plain step.
    """
    ids, mask = batch["input_ids"], batch["mask"]
    replica = tf.distribute.get_replica_context()
    aux = {}
    with tf.GradientTape() as tape:
      hidden = self.model.model(ids, mask, self.config.dropout)
      positions, sid, logits = sid_logits(
          self.model, self.template, hidden, ids, mask,
          trie_bias=self._trie_bias(batch["trie_rows"]))
      sid_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
          sid % self.template.codebook_size, logits)
      targets = tf.cast(tf.size(sid_ce), tf.float32)
      share = targets / replica.all_reduce(tf.distribute.ReduceOp.SUM,
                                           targets)
      # multiply_no_nan: a replica without targets adds 0, not mean([]) = NaN.
      weigh = lambda value: tf.math.multiply_no_nan(value, share)
      loss = total = weigh(tf.reduce_mean(sid_ce))
      tensors = StepTensors(batch, hidden, positions, sid, logits, sid_ce)
      for term in self._terms:
        added, logged = term(tensors)
        total += weigh(added)
        aux[term.name] = weigh(logged)
    grads = replica.all_reduce(tf.distribute.ReduceOp.SUM,
                               tape.gradient(total, self._variables))
    loss, aux = replica.all_reduce(tf.distribute.ReduceOp.SUM, (loss, aux))
    lr, grad_norm = self.optimizer.apply(grads, self._variables)
    return loss, aux, lr, grad_norm

  def evaluate_loss(self, sequences):
    """Mean SID loss of each sequence's last item (its target)."""
    bs = self.config.batch_size
    losses = [self._eval_loss(*self._batch(sequences[i:i + bs]))
              for i in range(0, len(sequences), bs)]
    return float(np.mean(losses))

  @property
  def step(self) -> int:
    """Optimizer steps taken (.numpy(): a MirroredVariable has no int())."""
    return int(self.optimizer.step.numpy())

  @property
  def best_dir(self):
    """HF checkpoint of the best validation so far (fit with a validator)."""
    return os.path.join(self.work_dir, "best")

  def _best_state_path(self):
    return os.path.join(self.work_dir, "best.json")

  def best_state(self):
    """{"step", "metrics", "score", "waited", "stopped", "history"} or None:
    this process's last validation, else the chief's file."""
    if self._state is not None:
      return self._state
    if not os.path.exists(self._best_state_path()):
      return None
    with open(self._best_state_path()) as f:
      return json.load(f)

  def _validate(self, validator, metric, step, state):
    """Scores the model; keeps it in best_dir if it beats state's best.

    Every worker validates (they must agree on stopping); the chief writes."""
    metrics = distribute.chief_values(self.strategy, validator(self.model))
    state = dict(state or {"score": None, "waited": 0, "history": []})
    state["history"] = state["history"] + [{"step": step, **metrics}]
    score = metrics[metric]
    if state["score"] is None or score > state["score"]:
      if self._chief:
        self.save_hf(self.best_dir)
      state.update(step=step, metrics=metrics, score=score, waited=0)
    else:
      state["waited"] += 1
    patience = self.config.patience
    state["stopped"] = bool(patience and state["waited"] >= patience)
    # The optimizer state goes with best.json, so a resume continues both.
    self._save(step)
    if self._chief:
      with open(self._best_state_path(), "w") as f:
        json.dump(state, f, indent=1)
    self._state = state
    logging.info("step %d validation %s (best %.4f at step %d, %d without "
                 "a better one)", step, metrics, state["score"], state["step"],
                 state["waited"])
    return state

  def fit(self, sequences, valid_sequences=None, validator=None,
          metric="recall@10"):
    """Trains to optimizer.total_steps or an early stop; returns the final
    training SID loss.

    sequences: a list of token arrays, or a callable step -> list giving the
    (e.g. augmented) sequences of the epoch that starts at that step.
    validator: model -> metrics dict (e.g. validation.BeamRecallValidator),
    run every config.eval_every steps and at the end; the best model by
    `metric` is written to best_dir, and config.patience validations without
    a better one stop training.
    """
    epoch_sequences = sequences if callable(sequences) else (
        lambda step: sequences)
    if self._manager.latest_checkpoint:
      self._ckpt.restore(self._manager.latest_checkpoint)
      logging.info("resumed from %s at step %d",
                   self._manager.latest_checkpoint,
                   self.step)
    c = self.config
    if validator is not None and not c.eval_every:
      raise ValueError("a validator needs TrainConfig.eval_every > 0")
    state = self.best_state() if validator is not None else None
    total = c.optimizer.total_steps
    rng = np.random.default_rng(c.seed + self.step)
    losses, aux_losses = [], []
    self.loss_curve = []  # (step, mean SID loss of the log_every before)
    stopped = bool(state and state["stopped"])
    with tqdm(total=total, initial=self.step,
              desc="train generator", unit="step",
              disable=not self._chief) as bar:
      while self.step < total and not stopped:
        sequences = epoch_sequences(self.step)
        # Batches of similar lengths waste less compute on padding.
        order = np.argsort([len(s) for s in sequences], kind="stable")
        batches = [order[i:i + c.batch_size]
                   for i in range(0, len(order), c.batch_size)]
        for b in rng.permutation(len(batches)):
          step = self.step
          if step >= total:
            break
          loss, aux, lr, grad_norm = self._train_step(
              self._distribute(sequences, batches[b]))
          losses.append(float(loss))
          aux_losses.append({k: float(v) for k, v in aux.items()})
          bar.update(1)
          if (step + 1) % c.log_every == 0:
            mean = np.mean(losses[-c.log_every:])
            self.loss_curve.append((step + 1, float(mean)))
            bar.set_postfix(loss=f"{mean:.3f}", lr=f"{float(lr):.2e}")
            extra = "".join(
                f" {k} {np.mean([a[k] for a in aux_losses[-c.log_every:]]):.4f}"
                for k in sorted(aux))
            logging.info("step %d loss %.4f%s lr %.2e grad_norm %.2f",
                         step + 1, mean, extra, float(lr), float(grad_norm))
          if validator is not None and ((step + 1) % c.eval_every == 0 or
                                        step + 1 == total):
            state = self._validate(validator, metric, step + 1, state)
            if state["stopped"]:
              stopped = True
              break
          elif (step + 1) % c.checkpoint_every == 0:
            self._save(step + 1)
        if valid_sequences:
          logging.info("step %d validation loss %.4f",
                       self.step,
                       self.evaluate_loss(valid_sequences))
    if validator is not None and (state is None or
                                  state["history"][-1]["step"] !=
                                  self.step):
      state = self._validate(validator, metric, self.step,
                             state)
    self._save(self.step)
    return float(np.mean(losses[-c.log_every:])) if losses else float("nan")

  def _save(self, step):
    distribute.save_checkpoint(self.strategy, self._manager, step)

  def save_hf(self, model_dir):
    """HF checkpoint + the sid_softmax the export must decode with."""
    save_hf_checkpoint(self.model, model_dir)
    save_sid_softmax(model_dir, self.config.sid_softmax)
    return model_dir
