"""Save / load of the project's small Keras models: config.json (the config
dataclass) + weights.npz (Keras weight order)."""
import dataclasses
import json
import os

import numpy as np


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
