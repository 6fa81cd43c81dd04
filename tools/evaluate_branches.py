"""tf-genrec evaluate_branches: each branch alone vs the merged list.

Scores a multi-branch export (`tf-genrec export --graph=ad_recall_multi`)
on the leave-one-out split of the dataset, full catalogue: Recall@K of every
branch's own list and of the merged list (N = the sum of the quotas), each
branch's unique hits, and which branch produced the merged list's hits.
Export the branches with top_n equal to the merged N to compare at the same
N (docs/quality.md).

  tf-genrec evaluate_branches --saved_model_dir=runs/branches/models/multi/1 \
    --split=test
"""
import json
import os

from absl import app, flags, logging

from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.branch_recall import (branch_names, branch_report,
                                                rank_branches, remerge)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_string("saved_model_dir", None, "A multi-branch version dir.")
flags.DEFINE_enum("split", "valid", ["valid", "test"], "Tune on valid only.")
flags.DEFINE_list("recall_ks", ["10", "50", "100", "300"], "Recall@K cut-offs.")
flags.DEFINE_integer("batch_size", 64, "Users per SavedModel call.")
flags.DEFINE_integer("max_users", 0, "Evaluate the first N users (0: all).")
flags.DEFINE_string("output", None, "Also write the JSON report here.")
flags.DEFINE_multi_string("sweep", [], "Also re-merge the branch lists with "
                          "other quotas: 'normalization:q1,q2,...' (one per "
                          "branch, in branches.json order); repeatable. For "
                          "choosing quotas on --split=valid.")
flags.mark_flag_as_required("saved_model_dir")


def main(argv):
  del argv
  split = leave_one_out(load_dataset(FLAGS.data_dir).histories)
  inputs, targets = split.inputs_and_targets(FLAGS.split)
  if FLAGS.max_users:
    inputs, targets = inputs[:FLAGS.max_users], targets[:FLAGS.max_users]
  ranked, producer, scores = rank_branches(FLAGS.saved_model_dir, inputs,
                                           FLAGS.batch_size)
  names = branch_names(FLAGS.saved_model_dir)
  ks = [int(k) for k in FLAGS.recall_ks]
  report = {"split": FLAGS.split, "users": len(inputs),
            **branch_report(ranked, producer, targets, names, ks)}
  for sweep in FLAGS.sweep:
    normalization, quotas = sweep.split(":")
    items, by = remerge(ranked, scores, names,
                        [int(q) for q in quotas.split(",")], normalization)
    report[f"merged[{sweep}]"] = branch_report(
        dict(ranked, merged=items), by, targets, names, ks)["merged"]
  logging.info("%s", report)
  if FLAGS.output:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=1)
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  app.run(main)
