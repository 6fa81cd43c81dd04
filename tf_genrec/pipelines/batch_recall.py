"""Batch recall: every user's recall list through an exported recall
SavedModel, written as JSON Lines shards (records.recall_to_json).

  users ─input history─► RunInference(RecallModelHandler) ─► recall shards

The SavedModel is loaded once per worker process with the op library
(RecallModelHandler.load_model); the lists equal the evaluation's
(evaluation/saved_model_recall.recall_saved_model) for the same histories.
"""
import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from tf_genrec.data.amazon import leave_one_out
from tf_genrec.pipelines import records
from tf_genrec.pipelines.model_handlers import RecallModelHandler

# "full": the whole history (production recall); "valid" / "test": the
# leave-one-out inputs that `tf-genrec evaluate --split` scores.
HISTORIES = ("full", "valid", "test")


def input_history(user, history: str):
  user_id, items = user
  if history == "full":
    return user_id, items
  inputs, _ = leave_one_out([items]).inputs_and_targets(history)
  return user_id, inputs[0]


def batch_recall(pipeline, users_pattern, saved_model_dir, output_prefix,
                 beam_width: int, top_n: int, history: str = "full",
                 batch_size: int = 64, num_shards: int = 0):
  """Adds the job to `pipeline`; shards go to
  `<output_prefix>-SSSSS-of-NNNNN.jsonl`."""
  if history not in HISTORIES:
    raise ValueError(f"history must be one of {HISTORIES}, got {history!r}")
  return (
      pipeline
      | "ReadUsers" >> beam.io.ReadFromText(users_pattern)
      | "ParseUsers" >> beam.Map(records.user_from_json)
      | "InputHistory" >> beam.Map(input_history, history)
      | "Recall" >> RunInference(KeyedModelHandler(RecallModelHandler(
          saved_model_dir, beam_width, top_n, batch_size)))
      | "Format" >> beam.MapTuple(
          lambda user_id, result: records.recall_to_json(user_id,
                                                         *result.inference))
      | "Write" >> beam.io.WriteToText(output_prefix, file_name_suffix=".jsonl",
                                       num_shards=num_shards))
