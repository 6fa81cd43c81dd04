"""Server-side dynamic batching of concurrent Predict calls.

Mirrors TF Serving's SharedBatchScheduler + BatchingSession: one queue per
(model version, signature, input names, output filter); a batch closes when
it reaches max_batch_size, and is run by one of num_batch_threads workers once
a worker is free and either the batch is closed or batch_timeout_micros has
passed since its first task arrived. More than max_enqueued_batches batches in
a queue -> UNAVAILABLE. Outputs are split along dim 0 back to the callers.

Two deliberate differences from TF Serving:
- Without pad_variable_length_inputs, requests whose non-batch dims differ go
  to different queues instead of failing the merged batch; with it, only
  dims within a power of two of each other share a queue (bounded padding).
- If a merged batch fails with INVALID_ARGUMENT (e.g. one caller's lengths
  exceed T), its tasks are re-run one by one so only the bad caller fails.
"""
import collections
import concurrent.futures
import threading
import time

import grpc
import numpy as np
from absl import logging

from tf_genrec.serving.errors import ServingError, invalid


class _Batch:

  def __init__(self):
    self.tasks = []
    self.size = 0
    self.start = time.monotonic()


class _Task:

  def __init__(self, inputs, size):
    self.inputs = inputs
    self.size = size
    self.future = concurrent.futures.Future()


class _Queue:

  def __init__(self, servable, signature, output_filter):
    self.servable = servable
    self.signature = signature
    self.output_filter = output_filter
    self.batches = collections.deque()


class BatchScheduler:
  """Merges concurrent requests; `run` blocks until the caller's rows are in."""

  def __init__(self, config, on_batch=None):
    self.config = config
    self._on_batch = on_batch or (lambda size: None)
    self._cond = threading.Condition()
    self._queues = {}
    self._stopped = False
    self._workers = [
        threading.Thread(target=self._work, daemon=True, name=f"batch-{i}")
        for i in range(config.num_batch_threads)]
    for worker in self._workers:
      worker.start()

  def run(self, servable, signature, inputs, output_filter, batch_size):
    """Runs one validated request (batch_size rows) as part of a batch."""
    if batch_size is None or any(v.ndim == 0 for v in inputs.values()):
      # A scalar input has no batch dimension to merge along.
      return servable.run(signature, inputs, output_filter)
    if batch_size > self.config.max_batch_size:
      raise invalid(f"batch size {batch_size} of the request is larger than "
                    f"max_batch_size={self.config.max_batch_size}")
    key = (id(servable), signature.name, tuple(output_filter),
           tuple(sorted((k, self._shape_key(v.shape[1:]))
                        for k, v in inputs.items())))
    task = _Task(inputs, batch_size)
    with self._cond:
      if self._stopped:
        raise ServingError(grpc.StatusCode.UNAVAILABLE, "server is stopping")
      queue = self._queues.get(key)
      if queue is None:
        queue = self._queues[key] = _Queue(servable, signature, output_filter)
      if (not queue.batches or queue.batches[-1].size + batch_size >
          self.config.max_batch_size):
        if len(queue.batches) >= self.config.max_enqueued_batches:
          raise ServingError(
              grpc.StatusCode.UNAVAILABLE,
              f"the batch queue of model '{servable.model_name}' is full "
              f"(max_enqueued_batches={self.config.max_enqueued_batches})")
        queue.batches.append(_Batch())
      batch = queue.batches[-1]
      batch.tasks.append(task)
      batch.size += batch_size
      self._cond.notify_all()
    return task.future.result()

  def _shape_key(self, dims):
    """Requests whose non-batch dims map to the same key share batches.
    Padding merges dims within a power of two of each other, so a long
    request pads its batch-mates to at most twice their own size."""
    if not self.config.pad_variable_length_inputs:
      return tuple(dims)
    return tuple((d - 1).bit_length() for d in dims)

  def stop(self):
    with self._cond:
      self._stopped = True
      self._cond.notify_all()
    for worker in self._workers:
      worker.join()

  def _next_batch(self):
    """Under the lock: waits for a ready batch, oldest first (None: stop)."""
    timeout = self.config.batch_timeout_micros / 1e6
    while True:
      now = time.monotonic()
      ready, wake = None, None
      for key, queue in self._queues.items():
        if not queue.batches:
          continue
        head = queue.batches[0]
        if (self._stopped or len(queue.batches) > 1 or
            now >= head.start + timeout or
            head.size >= self.config.max_batch_size):
          if ready is None or head.start < ready[1].batches[0].start:
            ready = (key, queue)
        else:
          deadline = head.start + timeout
          wake = deadline if wake is None else min(wake, deadline)
      if ready is not None:
        key, queue = ready
        batch = queue.batches.popleft()
        if not queue.batches:
          del self._queues[key]
        return queue, batch
      if self._stopped:
        return None
      self._cond.wait(None if wake is None else max(wake - now, 0))

  def _work(self):
    while True:
      with self._cond:
        item = self._next_batch()
      if item is None:
        return
      queue, batch = item
      try:
        self._process(queue, batch)
      except Exception as e:  # pylint: disable=broad-except
        logging.exception("batch failed")
        for task in batch.tasks:
          if not task.future.done():
            task.future.set_exception(
                ServingError(grpc.StatusCode.INTERNAL, str(e)))

  def _process(self, queue, batch):
    tasks = batch.tasks
    self._on_batch(batch.size)
    if len(tasks) == 1:
      self._run_alone(queue, tasks[0])
      return
    inputs, total = self._merge(tasks)
    try:
      outputs = queue.servable.run(queue.signature, inputs, queue.output_filter)
    except ServingError as e:
      if e.code != grpc.StatusCode.INVALID_ARGUMENT:
        for task in tasks:
          task.future.set_exception(e)
        return
      for task in tasks:  # Isolate the caller(s) whose rows are invalid.
        self._run_alone(queue, task)
      return
    for key, value in outputs.items():
      if value.ndim == 0 or value.shape[0] != total:
        raise ValueError(f"output '{key}' has shape {list(value.shape)}; "
                         f"batching needs dim 0 == batch size {total}")
    offset = 0
    for task in tasks:
      task.future.set_result({k: v[offset:offset + task.size]
                              for k, v in outputs.items()})
      offset += task.size

  @staticmethod
  def _run_alone(queue, task):
    try:
      task.future.set_result(queue.servable.run(queue.signature, task.inputs,
                                                queue.output_filter))
    except ServingError as e:
      task.future.set_exception(e)

  def _merge(self, tasks):
    """Concatenates the tasks' inputs (padded) and pads the batch to the next
    allowed batch size. Returns (inputs, rows incl. batch padding)."""
    merged = {}
    for key in tasks[0].inputs:
      values = [t.inputs[key] for t in tasks]
      if self.config.pad_variable_length_inputs:
        target = np.max([v.shape for v in values], axis=0)
        values = [_pad(v, target) for v in values]
      merged[key] = np.concatenate(values, axis=0)
    total = sum(t.size for t in tasks)
    for allowed in self.config.allowed_batch_sizes:
      if allowed >= total:
        if allowed > total:
          merged = {k: np.concatenate([v, np.repeat(v[:1], allowed - total,
                                                    axis=0)])
                    for k, v in merged.items()}
        return merged, allowed
    return merged, total


def _pad(value, target):
  """Pads dims >= 1 at the end with the tensor's first element, as TF
  Serving does (zero for an empty tensor, where TF Serving would fail)."""
  widths = [(0, 0)] + [(0, int(t) - s) for t, s in
                       zip(target[1:], value.shape[1:])]
  if not any(after for _, after in widths):
    return value
  fill = value.flat[0] if value.size else np.zeros((), value.dtype)[()]
  return np.pad(value, widths, constant_values=fill)
