"""Saving and loading HSTU models: config.json + weights.npz (Keras order)."""
import json
import os

import numpy as np

CONFIG_FILE, WEIGHTS_FILE = "config.json", "weights.npz"


def save_model(model, model_dir: str, config: dict):
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=1)
  np.savez(os.path.join(model_dir, WEIGHTS_FILE), *model.get_weights())


def read_config(model_dir: str) -> dict:
  with open(os.path.join(model_dir, CONFIG_FILE)) as f:
    return json.load(f)


def restore_weights(model, model_dir: str):
  """Sets the weights of a built model from model_dir/weights.npz."""
  with np.load(os.path.join(model_dir, WEIGHTS_FILE)) as weights:
    model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
  return model
