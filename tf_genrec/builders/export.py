"""Exports a GenerativeRecallModel as a versioned TF Serving SavedModel."""
import os

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tf_genrec.core.saved_model_layout import (ENGINE_STATS_SIGNATURE,
                                               WARMUP_FILE)


def export_saved_model(model, base_path, version, warmup_inputs=(),
                       model_name="tf_genrec"):
  """Writes `base_path/<version>/` with `serving_default` + warmup requests.

  Args:
    model: a GenerativeRecallModel or a MultiBranchRecallModel.
    base_path: the model's base path as TF Serving sees it.
    version: positive int; TF Serving loads the numerically largest.
    warmup_inputs: dicts of numpy inputs, written as PredictionLogs that TF
      Serving (and tf-genrec serve) replay at load time.
    model_name: model spec name in the warmup requests.
  Returns:
    The version directory.
  """
  if int(version) < 1:
    raise ValueError(f"version must be a positive integer, got {version}")
  export_dir = os.path.join(base_path, str(int(version)))
  if tf.io.gfile.exists(export_dir):
    raise FileExistsError(f"{export_dir} exists; versions are immutable")
  # Write to a temporary directory first so a polling server never sees a
  # half-written version.
  tmp_dir = os.path.join(base_path, f".tmp-{int(version)}")
  signatures = {"serving_default": model.serving_function()}
  # A MultiBranchRecallModel adds its "branches" signature and metadata.
  signatures.update(getattr(model, "extra_signatures", dict)())
  engine_stats = getattr(getattr(model, "generator", None), "engine_stats",
                         None)
  if engine_stats is not None:  # The engine op's counters, for the server.
    signatures[ENGINE_STATS_SIGNATURE] = engine_stats
  tf.saved_model.save(model, tmp_dir, signatures=signatures)
  for name, text in getattr(model, "extra_files", dict)().items():
    tf.io.gfile.makedirs(os.path.join(tmp_dir, "assets.extra"))
    with tf.io.gfile.GFile(os.path.join(tmp_dir, "assets.extra", name),
                           "w") as f:
      f.write(text)
  if warmup_inputs:
    write_warmup_requests(tmp_dir, warmup_inputs, model_name)
  tf.io.gfile.rename(tmp_dir, export_dir)
  logging.info("exported %s", export_dir)
  return export_dir


def write_warmup_requests(export_dir, warmup_inputs, model_name):
  path = os.path.join(export_dir, WARMUP_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for inputs in warmup_inputs:
      request = predict_pb2.PredictRequest()
      request.model_spec.name = model_name
      request.model_spec.signature_name = "serving_default"
      for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
