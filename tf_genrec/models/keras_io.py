"""The project's small Keras models on disk: config.json (the config
dataclass) + weights.npz (Keras weight order), and inside a SavedModel
(KerasModule)."""
import dataclasses
import json
import os

import numpy as np
import tensorflow as tf


def save_model(model, model_dir: str):
  """model.config (a dataclass) and model.get_weights() into model_dir."""
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "config.json"), "w") as f:
    json.dump(dataclasses.asdict(model.config), f, indent=1)
  np.savez(os.path.join(model_dir, "weights.npz"), *model.get_weights())


def load_model(model_dir: str, model_class, config_class, build):
  """model_class(config_class(**config.json)); build(model) creates its
  weights before the saved ones are set."""
  with open(os.path.join(model_dir, "config.json")) as f:
    model = model_class(config_class(**json.load(f)))
  build(model)
  with np.load(os.path.join(model_dir, "weights.npz")) as weights:
    model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
  return model


class _Untracked:
  """Hides an object from SavedModel object tracking."""

  def __init__(self, obj):
    self.obj = obj


class KerasModule(tf.Module):
  """A Keras 3 model inside a servable tf.Module, exported so that the
  loader of stock TF Serving restores the weights its graph reads.

  A tracked Keras 3 variable exports twice: the functions read the
  tf.Variable it wraps, while the SavedModel's restore op, which TF Serving
  (and tf.compat.v1's loader) runs, fills a copy, so the served graph reads
  uninitialised variables; tf.saved_model.load restores by object and hides
  this. Tracking the wrapped tf.Variables instead, and not the Keras object,
  leaves one variable each, restored where it is read (it also keeps Keras
  from adding a default signature of its own).
  """

  def __init__(self, model, name=None):
    super().__init__(name=name)
    self._keras = _Untracked(model)
    self.model_variables = [v.value for v in model.variables]
    for v in self.model_variables:
      if not isinstance(v, tf.Variable):
        raise TypeError(f"{model.name}: weight {v.name} is a "
                        f"{type(v).__name__}, not a tf.Variable (a dtype "
                        "policy that casts weights is not supported)")

  @property
  def model(self):
    return self._keras.obj
