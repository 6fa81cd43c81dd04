"""Leave-one-out evaluation through an exported recall SavedModel.

The same graph that serves is scored: raw histories go in as behaviour events
(positions stand in for timestamps, the dataset has none) and the ranked item
ids that come out are compared with the held-out targets.
"""
import numpy as np
import tensorflow as tf
from tqdm import tqdm

import tf_genrec.ops  # noqa: F401  (registers the custom ops for loading)
from tf_genrec.evaluation.metrics import evaluate_ranking


def history_requests(histories):
  """Histories (oldest first) -> serving_default inputs, time = position."""
  width = max(max(len(h) for h in histories), 1)
  item_ids = np.zeros((len(histories), width), np.int64)
  timestamps = np.zeros((len(histories), width), np.int64)
  for row, h in enumerate(histories):
    item_ids[row, :len(h)] = h
    timestamps[row, :len(h)] = np.arange(1, len(h) + 1)
  lengths = np.array([len(h) for h in histories], np.int32)
  return {
      "item_ids": item_ids,
      "timestamps": timestamps,
      "action_types": np.zeros_like(item_ids, np.int32),
      "lengths": lengths,
      "request_time": lengths.astype(np.int64) + 1,
  }


def recall_saved_model(export_dir, histories, beam_width, top_n,
                       batch_size=64):
  """Runs serving_default over histories -> [num_users, top_n] item ids."""
  # The loaded object owns the model's resources (an engine op's engine is
  # destroyed with it), so it stays referenced while its signature runs.
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures["serving_default"]
  ranked = []
  for start in tqdm(range(0, len(histories), batch_size), desc="recall",
                    unit="batch"):
    chunk = histories[start:start + batch_size]
    inputs = history_requests(chunk)
    inputs["beam_width"] = np.full([len(chunk)], beam_width, np.int32)
    inputs["top_n"] = np.full([len(chunk)], top_n, np.int32)
    out = serve(**{k: tf.constant(v) for k, v in inputs.items()})
    ranked.append(out["item_ids"].numpy())
  return np.concatenate(ranked)


def evaluate_saved_model(export_dir, histories, targets, beam_width, top_n=50,
                         batch_size=64, exclude_history=False):
  """Metrics of the SavedModel's rankings.

  exclude_history: the model must have been exported with --exclude_history
  (so baselines scored alike compare fairly). Returning a user's latest
  click, which every history window keeps, fails.
  """
  ranked = recall_saved_model(export_dir, histories, beam_width, top_n,
                              batch_size)
  if exclude_history:
    for row, history in enumerate(histories):
      if len(history) and history[-1] in ranked[row]:
        raise ValueError(
            f"{export_dir} returned item {history[-1]}, user {row}'s latest "
            "click; export it with --exclude_history to score it that way")
  return evaluate_ranking(ranked, targets)
