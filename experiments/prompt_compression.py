"""Issue #20's prompt compression: prompt layouts scored on amazon-scientific
validation only (the trainer's fixed 2,000-user sample, beam 64, as early
stopping scores them), with their prompt lengths and generator latency.

  .venv/bin/python experiments/prompt_compression.py \
      --output=runs/compression/valid.json \
      --variant=full=runs/transfer/sci/recall_default/hf \
      --variant='window_5=runs/transfer/sci/recall_default/hf:{"max_history": 5}' \
      --variant=coarse_3x1=runs/compression/coarse_3x1/hf

A variant is name=checkpoint_dir, optionally :{json} overriding the prompt
the checkpoint recorded (max_history, full_items, old_item_levels) or the
serving rollover (the prefix-stable truncation of issue #20); a model
trained on a compressed layout (`tf-genrec train --full_items=...`) records
its own. The first variant is the reference: every other one reports its
Recall@10 difference on the same users with the paired standard error.
Results are appended to --output as each finishes; a re-run skips those there.
"""
import json
import os
import time

import numpy as np
from absl import app, flags, logging

import graphs
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.metrics import evaluate_ranking, target_ranks
from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.generation_config import (load_prompt_spec,
                                                    load_sid_softmax)
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.training.validation import BeamRecallValidator

flags.DEFINE_string("data_dir", "../shared/datasets/amazon-scientific",
                    "Dataset directory.")
flags.DEFINE_string("item_table", "runs/transfer/sci/sids/item_table.tsv",
                    "The item table every variant's checkpoint trained on.")
flags.DEFINE_string("output", "runs/compression/valid.json", "JSON results.")
flags.DEFINE_multi_string("variant", [], "name=checkpoint_dir[:{json prompt "
                          "overrides}]; repeated, the first is the reference.")
flags.DEFINE_list("latency_widths", ["5", "50"], "Beam widths of the "
                  "batch-1 latency measurement.")
flags.DEFINE_integer("latency_users", 100, "Validation prompts timed alone.")
FLAGS = flags.FLAGS


def _parse(spec):
  name, _, rest = spec.partition("=")
  checkpoint, _, text = rest.partition(":")
  return name, checkpoint, json.loads(text) if text else {}


def _latency_ms(model, trie, template, sid_softmax, prompts, width):
  """Mean ms of the generator on each prompt alone (batch 1)."""
  generator = BeamSearchGenerator(model, trie, template.sid_offset, width,
                                  sid_softmax=sid_softmax)

  def run(prompt):
    generator.generate(np.asarray(prompt, np.int32)[np.newaxis],
                       np.array([len(prompt)], np.int32), width)

  run(prompts[0])  # traces
  start = time.perf_counter()
  for prompt in prompts:
    run(prompt)
  return 1e3 * (time.perf_counter() - start) / len(prompts)


def _rolled_over(history, max_len, rollover):
  """The events BehaviorSequence keeps of a history with this rollover (its
  op doc): truncation drops the oldest `rollover` at a time."""
  c = len(history)
  if c <= max_len:
    return history
  return history[-(max_len - rollover + 1 + (c - max_len - 1) % rollover):]


def evaluate_variant(checkpoint, overrides, split, table):
  """Recall/NDCG@10, per-user hits, prompt lengths and latency.

  overrides: prompt keys, and `rollover` (the serving BehaviorConfig's;
  training prompts slide by one item)."""
  overrides = dict(overrides)
  rollover = overrides.pop("rollover", 1)
  spec = dict(load_prompt_spec(checkpoint), **overrides)
  template = graphs.get(spec["scene"]).graph_config(
      num_levels=spec["num_levels"], codebook_size=spec["codebook_size"],
      max_history=spec["max_history"],
      full_items=spec.get("full_items", 0),
      old_item_levels=spec.get("old_item_levels", 1)).template
  sid_softmax = load_sid_softmax(checkpoint)
  inputs, targets = split.inputs_and_targets("valid")
  inputs = [_rolled_over(h, spec["max_history"], rollover) for h in inputs]
  validator = BeamRecallValidator(inputs, targets, table, template,
                                  spec["max_history"], sid_softmax)
  model = load_hf_checkpoint(checkpoint)
  start = time.time()
  ranked = validator.rank(model)
  seconds = time.time() - start
  metrics = evaluate_ranking(ranked, validator.targets, recall_ks=(10,),
                             ndcg_ks=(10,))
  lengths = np.array([len(p) for p in validator.prompts])
  trie = SemanticIdTrie(table.codes, template.codebook_size)
  sample = [validator.prompts[i] for i in range(FLAGS.latency_users)]
  latency = {f"W={w}": round(_latency_ms(model, trie, template, sid_softmax,
                                         sample, int(w)), 2)
             for w in FLAGS.latency_widths}
  return {"checkpoint": checkpoint, "prompt": spec, "rollover": rollover,
          "users": len(ranked),
          **{k: round(v, 4) for k, v in metrics.items()},
          "hits@10": (target_ranks(ranked, validator.targets) < 10).astype(
              int).tolist(),
          "prompt_tokens_mean": round(float(lengths.mean()), 2),
          "prompt_tokens_p90": float(np.percentile(lengths, 90)),
          "latency_ms_batch1": latency, "rank_seconds": round(seconds, 1)}


def main(_):
  results = {}
  if os.path.exists(FLAGS.output):
    with open(FLAGS.output, encoding="utf-8") as f:
      results = json.load(f)
  split = leave_one_out(load_dataset(FLAGS.data_dir).histories)
  table = read_item_table(FLAGS.item_table)
  variants = [_parse(v) for v in FLAGS.variant]
  for name, checkpoint, overrides in variants:
    if name not in results:
      results[name] = evaluate_variant(checkpoint, overrides, split, table)
    reference = np.array(results[variants[0][0]]["hits@10"])
    diff = np.array(results[name]["hits@10"]) - reference
    results[name]["recall@10_vs_reference"] = {
        "ratio": round(results[name]["recall@10"] / reference.mean(), 4),
        "difference": round(float(diff.mean()), 4),
        "paired_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4)}
    logging.info("%s: %s", name, {k: v for k, v in results[name].items()
                                  if k != "hits@10"})
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)),
                exist_ok=True)
    with open(FLAGS.output, "w", encoding="utf-8") as f:
      json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
