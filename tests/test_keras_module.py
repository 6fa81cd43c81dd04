"""KerasModule: a Keras 3 model inside a SavedModel runs under the loader
stock TF Serving uses (tf.compat.v1's, which runs the restore op), not only
under tf.saved_model.load (which restores by object)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_genrec.models.keras_io import KerasModule


def _mlp():
  model = tf.keras.Sequential([tf.keras.layers.Dense(4, activation="gelu"),
                               tf.keras.layers.Dense(2)])
  model(tf.zeros([1, 3]))
  return model


def _export(module, path):
  spec = tf.TensorSpec([None, 3], tf.float32, "x")
  fn = tf.function(lambda x: {"y": module.model(x)}, input_signature=[spec])
  tf.saved_model.save(module, path, signatures={"serving_default": fn})


def _run_as_tf_serving(path, x):
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as session:
    with graph.as_default():
      meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"],
                                                        path)
    signature = meta_graph.signature_def["serving_default"]
    return session.run(signature.outputs["y"].name,
                       {signature.inputs["x"].name: x})


class _TrackedKeras(tf.Module):
  """The Keras model as a plain tracked attribute."""

  def __init__(self, model):
    super().__init__()
    self.model = model


def test_weights_restored_where_the_graph_reads_them(tmp_path):
  model = _mlp()
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  _export(KerasModule(model), str(tmp_path / "m"))
  np.testing.assert_allclose(_run_as_tf_serving(str(tmp_path / "m"), x),
                             model(x).numpy(), rtol=1e-6)


def test_a_tracked_keras_model_would_not_run(tmp_path):
  # Why KerasModule exists: the plain way exports graphs that read
  # variables the restore op never fills.
  _export(_TrackedKeras(_mlp()), str(tmp_path / "m"))
  with pytest.raises(tf.errors.FailedPreconditionError,
                     match="Could not find variable"):
    _run_as_tf_serving(str(tmp_path / "m"), np.zeros([1, 3], np.float32))
