"""Where the generator trains: one process, or the workers TF_CONFIG names.

The trainer runs one code path under a tf.distribute strategy: the default
strategy (one replica, no collective op: the single-process behaviour) or a
MultiWorkerMirroredStrategy when TF_CONFIG's cluster has several chief/worker
tasks. Every worker computes the same global batch order (same seed) and
trains on its own contiguous slice of each global batch; gradients are summed
over the workers by collective all-reduce (RING over gRPC: CPU workers need
no NCCL), so each worker applies the same update to its copy of the weights.
Only the chief (`strategy.extended.should_checkpoint`) keeps checkpoints and
writes the outputs; the others still run each save, into a temporary
directory they delete, because a save may run collective ops that every
worker must join.
"""
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

_TRAINING_JOBS = ("chief", "worker")


def strategy_from_env():
  """MultiWorkerMirroredStrategy if TF_CONFIG names several chief/worker
  tasks, else the default strategy.

  Call it before any TensorFlow op runs: the multi-worker strategy starts
  this process's collective-ops server, which TF wants at program start.
  """
  raw = os.environ.get("TF_CONFIG", "")
  try:
    cluster = json.loads(raw).get("cluster", {}) if raw else {}
  except ValueError as e:
    raise ValueError(f"TF_CONFIG is not JSON: {raw[:200]!r}") from e
  other = sorted(set(cluster) - set(_TRAINING_JOBS))
  if other:
    raise ValueError(f"TF_CONFIG cluster jobs must be {_TRAINING_JOBS} "
                     f"(MultiWorkerMirroredStrategy), got {other}")
  if sum(len(cluster.get(job, ())) for job in _TRAINING_JOBS) <= 1:
    return tf.distribute.get_strategy()
  comm = tf.distribute.experimental.CommunicationImplementation.RING
  return tf.distribute.MultiWorkerMirroredStrategy(
      communication_options=tf.distribute.experimental.CommunicationOptions(
          implementation=comm))


def is_chief(strategy) -> bool:
  """Whether this process keeps checkpoints and writes the outputs."""
  return strategy.extended.should_checkpoint


def replica_rows(rows, ctx: tf.distribute.experimental.ValueContext):
  """This replica's contiguous slice of a global batch's rows (sizes differ
  by at most one; a replica gets none when there are fewer rows than
  replicas)."""
  return np.array_split(rows, ctx.num_replicas_in_sync)[
      ctx.replica_id_in_sync_group]


def save_checkpoint(strategy, manager, step):
  """manager.save on the chief; the same save into a discarded temporary
  directory elsewhere."""
  if is_chief(strategy):
    return manager.save(checkpoint_number=step)
  scratch = tempfile.mkdtemp(prefix="tf_genrec_worker_checkpoint_")
  try:
    tf.train.CheckpointManager(manager.checkpoint, scratch,
                               max_to_keep=1).save(checkpoint_number=step)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return None


def chief_values(strategy, values: dict) -> dict:
  """The chief's float values, on every worker.

  Workers validate identical weights and should agree; taking the chief's
  figures makes their early-stopping decisions identical even if float
  noise told them apart (a worker that stopped alone would hang the rest).
  """
  keys = sorted(values)
  mine = tf.constant([float(values[k]) for k in keys], tf.float64)
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda ctx: mine if ctx.replica_id_in_sync_group == 0
      else tf.zeros_like(mine))
  summed = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
  return dict(zip(keys, summed.numpy().tolist()))
