"""Leave-one-out evaluation of a multi-branch SavedModel, branch by branch.

One pass over the users calls the export's `branches` signature, which
returns every branch's own ranked list and the merged list from the same
graph that serves; each is scored with the same metrics, and each branch's
unique hits (targets only that branch finds) say what it adds to the rest.
"""
import json
import os

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import tf_genrec.ops  # noqa: F401  (registers the custom ops for loading)
from tf_genrec.builders.merge import MergeConfig, MergeStage
from tf_genrec.builders.multi_branch import BRANCHES_FILE, BRANCHES_SIGNATURE
from tf_genrec.evaluation.metrics import evaluate_ranking, target_ranks
from tf_genrec.evaluation.saved_model_recall import history_requests

MERGED = "merged"


def branch_names(export_dir):
  with open(os.path.join(export_dir, "assets.extra", BRANCHES_FILE)) as f:
    return json.load(f)["branches"]


def rank_branches(export_dir, histories, batch_size=64):
  """({branch name | "merged": [U, N] item ids}, the merged list's producing
  branch [U, N], {branch name: [U, N_i] scores})."""
  names = branch_names(export_dir)
  loaded = tf.saved_model.load(export_dir)  # owns the resources fn uses
  fn = loaded.signatures[BRANCHES_SIGNATURE]
  lists = {name: [] for name in names + [MERGED]}
  scores = {name: [] for name in names}
  producer = []
  for start in tqdm(range(0, len(histories), batch_size), desc="branches",
                    unit="batch"):
    inputs = history_requests(histories[start:start + batch_size])
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    for name in names:
      lists[name].append(out[f"{name}_item_ids"].numpy())
      scores[name].append(out[f"{name}_scores"].numpy())
    lists[MERGED].append(out["item_ids"].numpy())
    producer.append(out["branch"].numpy())
  return ({k: np.concatenate(v) for k, v in lists.items()},
          np.concatenate(producer),
          {k: np.concatenate(v) for k, v in scores.items()})


def remerge(ranked, scores, names, quotas, normalization, batch_size=1024):
  """The merged list again under other quotas / normalisation (the same
  MergeStage as the graph), to choose them on validation without
  re-exporting. Returns ([U, sum(quotas)] item ids, producing branch)."""
  merge = MergeStage(MergeConfig(tuple(names), tuple(quotas), normalization))
  items, producer = [], []
  for s in range(0, len(ranked[names[0]]), batch_size):
    out = merge([ranked[n][s:s + batch_size] for n in names],
                [scores[n][s:s + batch_size] for n in names])
    items.append(out["item_ids"].numpy())
    producer.append(out["branch"].numpy())
  return np.concatenate(items), np.concatenate(producer)


def branch_report(ranked, producer, targets, names, recall_ks):
  """Recall@K of each list; unique hits and merged-hit credit per branch.

  A branch's hits are targets in its whole list; unique hits are those no
  other branch's list holds. Merged credit: of the merged list's hits, how
  many each branch produced.
  """
  report = {name: {**evaluate_ranking(ranked[name], targets, recall_ks, ()),
                   "list_size": int(ranked[name].shape[1])}
            for name in ranked}
  hits = {name: target_ranks(ranked[name], targets) >= 0 for name in names}
  merged_rank = target_ranks(ranked[MERGED], targets)
  credit = producer[np.arange(len(targets)), np.maximum(merged_rank, 0)]
  for name in names:
    others = np.zeros(len(targets), bool)
    for other in names:
      if other != name:
        others |= hits[other]
    report[name]["hits"] = int(hits[name].sum())
    report[name]["unique_hits"] = int((hits[name] & ~others).sum())
    report[name]["merged_hits_credited"] = int(
        ((merged_rank >= 0) & (credit == names.index(name))).sum())
  union = np.any(np.stack(list(hits.values())), axis=0)
  report["union_of_branch_lists"] = {"hits": int(union.sum()),
                                     "recall": float(union.mean())}
  report[MERGED]["hits"] = int((merged_rank >= 0).sum())
  return report
