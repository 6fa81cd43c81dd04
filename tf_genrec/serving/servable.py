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
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2

from tf_genrec.serving import tensors
from tf_genrec.serving.errors import ServingError, invalid

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
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


def _read_signature_defs(path):
  """SignatureDefs of the 'serve' MetaGraph, as TF Serving sees them."""
  saved_model = saved_model_pb2.SavedModel()
  with tf.io.gfile.GFile(os.path.join(path, "saved_model.pb"), "rb") as f:
    saved_model.ParseFromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    if "serve" in meta_graph.meta_info_def.tags:
      return meta_graph.signature_def
  raise ValueError(f"{path}: no MetaGraph tagged 'serve'")


class Servable:
  """A loaded model version. Requests hold a reference while they run, so
  unloading waits for in-flight work (`retire`) instead of failing it."""

  def __init__(self, model_name, version, path):
    self.model_name = model_name
    self.version = int(version)
    self.path = path
    load_op_library()
    self.signature_defs = _read_signature_defs(path)
    self.signatures = {k: Signature(k, v)
                       for k, v in self.signature_defs.items()
                       if not k.startswith("__")}  # e.g. __saved_model_init_op
    self._loaded = tf.saved_model.load(path, tags=["serve"])
    self._functions = dict(self._loaded.signatures)
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
    feeds = {k: tf.constant(v) for k, v in inputs.items()}
    for key, value in signature.defaults.items():
      feeds.setdefault(key, tf.constant(value))
    try:
      outputs = self._functions[signature.name](**feeds)
    except tf.errors.OpError as e:
      raise ServingError(_STATUS_BY_TF_CODE.get(e.error_code,
                                                grpc.StatusCode.INTERNAL),
                         _op_error_message(e.message)) from e
    keys = output_filter or outputs.keys()
    return {k: outputs[k].numpy() for k in keys}

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
    engine op (EngineGenerator.engine_stats)."""
    stats = getattr(getattr(self._loaded, "generator", None), "engine_stats",
                    None)
    if stats is None:
      return None
    from tf_genrec.ops import ENGINE_STATS  # pylint: disable=import-outside-toplevel
    return dict(zip(ENGINE_STATS, stats().numpy().tolist()))

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
    """Destroys the version's resources (item table, generation engine).

    TF frees a restored resource only through a destroyer saved with it,
    and such a destroyer would fail `load(path).signatures[...]` users once
    the root is collected; the server instead knows when a version is done
    with, so it destroys every resource of the loaded object here (the
    functions are dropped at the same time, so nothing can use them)."""
    if self._loaded is None:
      return
    for obj in tf.train.TrackableView(self._loaded).descendants():
      if isinstance(obj, tf.saved_model.experimental.TrackableResource):
        tf.raw_ops.DestroyResourceOp(resource=obj.resource_handle,
                                     ignore_lookup_error=True)
    self._functions = {}
    self._loaded = None
