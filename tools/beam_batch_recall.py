"""tf-genrec beam_batch_recall: every user's recall through an exported
recall SavedModel, as one Apache Beam job (RunInference).

  tf-genrec beam_batch_recall --saved_model_dir=runs/demo/models/ad_recall/2 \
      --output_dir=runs/beam/recall                               # DirectRunner
  ... --users='gs://b/users-*.jsonl' -- --runner=DataflowRunner ...   # docs/scaling.md

Writes <output_dir>/recall-*.jsonl, one {"user_id", "item_ids", "scores"}
line per user. --history=valid|test recalls from the leave-one-out inputs
that `tf-genrec evaluate --split` scores (same lists). Without --users the
bundled dataset's users are written as JSON Lines under <output_dir>/input.
Beam pipeline options follow `--`.
"""
import glob
import json
import os

import apache_beam as beam
from absl import app, flags, logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.pipelines import records
from tf_genrec.pipelines.batch_recall import HISTORIES, batch_recall
from tf_genrec.pipelines.runner import local_pipeline_options

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model_dir", None, "An exported version directory "
                    "(every worker reads it).")
flags.DEFINE_string("users", None, "User JSON Lines glob; default: the "
                    "bundled dataset, converted.")
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Bundled dataset directory "
                    "used when --users is not given.")
flags.DEFINE_string("output_dir", "runs/beam/recall", "Output directory.")
flags.DEFINE_enum("history", "full", HISTORIES, "full: whole histories; "
                  "valid/test: the leave-one-out inputs of that split.")
flags.DEFINE_integer("beam_width", 256, "Beam width (as evaluate).")
flags.DEFINE_integer("top_n", 50, "Items per user.")
flags.DEFINE_integer("batch_size", 64, "Max users per SavedModel call.")
flags.DEFINE_integer("num_shards", 0, "Output shards (0: runner decides).")
flags.mark_flag_as_required("saved_model_dir")


def main(argv):
  users = FLAGS.users or records.write_dataset_jsonl(
      load_dataset(FLAGS.data_dir),
      os.path.join(FLAGS.output_dir, "input"))[1]
  prefix = os.path.join(FLAGS.output_dir, "recall")
  with beam.Pipeline(options=local_pipeline_options(argv[1:])) as pipeline:
    batch_recall(pipeline, users, FLAGS.saved_model_dir, prefix,
                 FLAGS.beam_width, FLAGS.top_n, FLAGS.history,
                 FLAGS.batch_size, FLAGS.num_shards)
  report = {"users": users, "shards": sorted(glob.glob(prefix + "-*.jsonl"))}
  logging.info("%s", report)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
