"""One loaded SavedModel version: signatures, request validation, execution."""
import functools
import importlib
import os
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import prediction_log_pb2

from tf_genrec.core.saved_model_layout import (ENGINE_STATS_SIGNATURE,
                                               WARMUP_FILE)
from tf_genrec.serving import tensors
from tf_genrec.serving.errors import ServingError, invalid

DEFAULT_SIGNATURE = "serving_default"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit per version.
_STATUS_BY_TF_CODE = {code.value[0]: code for code in grpc.StatusCode}


@functools.lru_cache(maxsize=None)
def load_op_library():
  """Registers tf_genrec's custom ops so its SavedModels can be loaded."""
  try:
    importlib.import_module("tf_genrec.ops")
  except ImportError as e:  # Plain SavedModels still load without it.
    logging.warning("tf_genrec.ops not importable (%s); SavedModels using "
                    "tf_genrec custom ops will fail to load", e)


class Signature:
  """A SignatureDef's inputs/outputs as (numpy dtype, shape) + defaults."""

  def __init__(self, name, signature_def):
    self.name = name
    self.method_name = signature_def.method_name
    self.inputs = {k: _spec(v) for k, v in signature_def.inputs.items()}
    self.outputs = {k: _spec(v) for k, v in signature_def.outputs.items()}
    # Optional inputs: SignatureDef.defaults, filled when a request omits them.
    self.defaults = {k: tf.make_ndarray(v)
                     for k, v in signature_def.defaults.items()}

  def validate(self, inputs, output_filter=()):
    """Raises INVALID_ARGUMENT naming the offending input; returns batch size.

    `inputs` maps names to arrays or to what a request declares (anything
    with .dtype and .shape, e.g. tensors.Declared), so a request can be
    checked before it is decoded. The batch size is dim 0 shared by every
    given input of rank >= 1 (None if all inputs are scalars).
    """
    for key in inputs:
      if key not in self.inputs:
        raise invalid(f"input '{key}' is not an input of signature "
                      f"'{self.name}' (inputs: {sorted(self.inputs)})")
    for key in self.inputs:
      if key not in inputs and key not in self.defaults:
        raise invalid(f"input '{key}' of signature '{self.name}' is missing "
                      f"(required: {sorted(set(self.inputs) - set(self.defaults))})")
    batch, batch_key = None, None
    for key, value in sorted(inputs.items()):  # Deterministic messages.
      dtype, shape = self.inputs[key]
      got = list(value.shape)
      if value.dtype != dtype and not (dtype == object and
                                       value.dtype.kind in "SUO"):
        raise invalid(f"input '{key}' must be {_dtype_name(dtype)}, got "
                      f"{_dtype_name(value.dtype)}")
      if shape is not None:
        if len(got) != len(shape):
          raise invalid(f"input '{key}' must have rank {len(shape)} (shape "
                        f"{_shape_str(shape)}), got shape {got}")
        for axis, (want, size) in enumerate(zip(shape, got)):
          if want != -1 and want != size:
            raise invalid(f"input '{key}' must have size {want} in dim "
                          f"{axis} (shape {_shape_str(shape)}), got shape "
                          f"{got}")
      if got:
        if got[0] == 0:
          raise invalid(f"input '{key}' has batch size 0 (shape {got}): a "
                        f"request needs at least one row")
        if batch is None:
          batch, batch_key = got[0], key
        elif got[0] != batch:
          raise invalid(f"input '{key}' has batch size {got[0]} but "
                        f"input '{batch_key}' has {batch}: dim 0 must agree")
    for key in output_filter:
      if key not in self.outputs:
        raise invalid(f"output_filter '{key}' is not an output of signature "
                      f"'{self.name}' (outputs: {sorted(self.outputs)})")
    return batch


def _spec(tensor_info):
  dtype = tf.dtypes.as_dtype(tensor_info.dtype).as_numpy_dtype
  if tensor_info.tensor_shape.unknown_rank:
    return np.dtype(dtype), None
  return np.dtype(dtype), tuple(d.size for d in tensor_info.tensor_shape.dim)


def _dtype_name(dtype):
  return "string" if np.dtype(dtype).kind in "SUO" else np.dtype(dtype).name


def _shape_str(shape):
  return "[" + ", ".join("?" if d == -1 else str(d) for d in shape) + "]"


# Lines of a graph-mode error that locate the op rather than explain it.
_LOCATION_LINE = re.compile(r"^(Graph execution error:|Detected at node |"
                            r"<stack traces unavailable>|\s*\[\[\{\{)")


def _op_error_message(message):
  """The op's own message (e.g. "lengths[0]=5 is outside [0, T=1]") first,
  without the graph-location boilerplate TF wraps around it."""
  lines = [line.strip() for line in message.splitlines()
           if line.strip() and not _LOCATION_LINE.match(line)]
  return " ".join(lines) or message


class Servable:
  """A loaded model version. Requests hold a reference while they run, so
  unloading waits for in-flight work (`retire`) instead of failing it.

  The version is loaded into a graph and session of its own, as TF Serving's
  SavedModelBundle is, and signatures run as Session.run over the
  SignatureDef's tensor names. Closing the session frees everything the
  version holds (variables, item table, generation engine); a
  `tf.saved_model.load` object instead leaves ~8x the SavedModel's size
  behind in TF's eager context on every load, whatever is deleted
  (docs/reliability.md, "Soak")."""

  def __init__(self, model_name, version, path):
    self.model_name = model_name
    self.version = int(version)
    self.path = path
    load_op_library()
    self._graph = tf.Graph()
    # The process-wide thread settings (tools/serve.py) apply per session.
    self._session = tf.compat.v1.Session(
        graph=self._graph, config=tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=(
                tf.config.threading.get_intra_op_parallelism_threads()),
            inter_op_parallelism_threads=(
                tf.config.threading.get_inter_op_parallelism_threads())))
    try:
      with self._graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(
            self._session, ["serve"], path)
    except Exception:
      self._session.close()
      raise
    self.signature_defs = meta_graph.signature_def
    self.signatures = {k: Signature(k, v)
                       for k, v in self.signature_defs.items()
                       if not k.startswith("__")}  # e.g. __saved_model_init_op
    self._refs = 0
    self._retired = False
    self._cond = threading.Condition()

  def signature(self, name):
    name = name or DEFAULT_SIGNATURE
    if name not in self.signatures:
      raise invalid(f"signature_name '{name}' not found in model "
                    f"'{self.model_name}' version {self.version} "
                    f"(signatures: {sorted(self.signatures)})")
    return self.signatures[name]

  def run(self, signature, inputs, output_filter=()):
    """Runs a validated request; omitted optional inputs take their defaults.

    Returns {output name: numpy array}, only `output_filter` if given.
    """
    signature_def = self.signature_defs[signature.name]
    feeds = dict(signature.defaults)
    feeds.update(inputs)
    keys = output_filter or signature_def.outputs.keys()
    try:
      return self._session.run(
          {k: signature_def.outputs[k].name for k in keys},
          {signature_def.inputs[k].name: v for k, v in feeds.items()})
    except tf.errors.OpError as e:
      raise ServingError(_STATUS_BY_TF_CODE.get(e.error_code,
                                                grpc.StatusCode.INTERNAL),
                         _op_error_message(e.message)) from e

  def warmup(self):
    """Replays assets.extra/tf_serving_warmup_requests (PredictLogs only)."""
    path = os.path.join(self.path, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
      return 0
    count = 0
    for record in tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS):
      log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      if log.WhichOneof("log_type") != "predict_log":
        raise ValueError(f"{path}: only predict_log warmup records are "
                         f"supported, got {log.WhichOneof('log_type')}")
      request = log.predict_log.request
      signature = self.signature(request.model_spec.signature_name)
      inputs = {k: tensors.to_numpy(v, k) for k, v in request.inputs.items()}
      signature.validate(inputs, request.output_filter)
      self.run(signature, inputs, tuple(request.output_filter))
      count += 1
    logging.info("warmed up %s version %d with %d requests", self.model_name,
                 self.version, count)
    return count

  def engine_stats(self):
    """{counter: value} of this version's generation engine
    (tf_genrec.ops.ENGINE_STATS), or None if its generator is not the
    engine op (no ENGINE_STATS_SIGNATURE)."""
    signature_def = self.signature_defs.get(ENGINE_STATS_SIGNATURE)
    if signature_def is None:
      return None
    from tf_genrec.ops import ENGINE_STATS  # pylint: disable=import-outside-toplevel
    (output,) = signature_def.outputs.values()
    return dict(zip(ENGINE_STATS,
                    self._session.run(output.name).tolist()))

  def acquire(self):
    with self._cond:
      if self._retired:
        raise ServingError(grpc.StatusCode.UNAVAILABLE,
                           f"model '{self.model_name}' version "
                           f"{self.version} is unloading")
      self._refs += 1

  def release(self):
    with self._cond:
      self._refs -= 1
      self._cond.notify_all()
      if self._retired and self._refs == 0:
        self._free()

  def retire(self, timeout=None):
    """Refuses new requests, waits up to `timeout` seconds for in-flight ones,
    then frees the version: its resources now, or when the last request
    still running releases it. Returns whether all requests had finished."""
    with self._cond:
      self._retired = True
      drained = self._cond.wait_for(lambda: self._refs == 0, timeout)
      if drained:
        self._free()
    return drained

  def _free(self):
    """Closes the version's session, which destroys its resources (item
    table, generation engine) and frees its graph."""
    self._session.close()
