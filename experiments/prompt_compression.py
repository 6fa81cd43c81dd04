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
Scores are appended to --output as each finishes (a re-run skips those
there); batch-1 latencies are then timed for all of them in rotating rounds.
"""
import json
import os
import time

import numpy as np
from absl import app, flags, logging
from tqdm import tqdm

import graphs
from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.metrics import evaluate_ranking, target_ranks
from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.engine_generator import EngineGenerator
from tf_genrec.generation.generation_config import (load_prompt_spec,
                                                    load_sid_softmax)
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.models.qwen2.checkpoint import load_hf_checkpoint
from tf_genrec.tables.item_table import read_item_table
from tf_genrec.training.validation import (BeamRecallValidator,
                                           ValidationConfig)

flags.DEFINE_string("data_dir", "../shared/datasets/amazon-scientific",
                    "Dataset directory.")
flags.DEFINE_string("item_table", "runs/transfer/sci/sids/item_table.tsv",
                    "The item table every variant's checkpoint trained on.")
flags.DEFINE_string("output", "runs/compression/valid.json", "JSON results.")
flags.DEFINE_multi_string("variant", [], "name=checkpoint_dir[:{json prompt "
                          "overrides}]; repeated, the first is the reference.")
flags.DEFINE_list("latency_widths", ["5", "50"], "Beam widths of the "
                  "batch-1 latency measurement.")
flags.DEFINE_integer("latency_users", 100, "Validation prompts timed alone "
                     "(0: scores only).")
flags.DEFINE_integer("valid_users", ValidationConfig.num_users,
                     "Fixed sample of validation users (the trainer's).")
FLAGS = flags.FLAGS


def _parse(spec):
  name, _, rest = spec.partition("=")
  checkpoint, _, text = rest.partition(":")
  return name, checkpoint, json.loads(text) if text else {}


def _rolled_over(history, max_len, rollover):
  """The events BehaviorSequence keeps of a history with this rollover (its
  op doc): truncation drops the oldest `rollover` at a time."""
  c = len(history)
  if c <= max_len:
    return history
  return history[-(max_len - rollover + 1 + (c - max_len - 1) % rollover):]


def _hits(ranks, k=10):
  """1 where the target is in the top k (ranks: -1 when absent)."""
  return ((ranks >= 0) & (ranks < k)).astype(int)


class Variant:
  """One prompt layout over one checkpoint, on the validation users.

  overrides: prompt keys, and `rollover` (the serving BehaviorConfig's;
  training prompts slide by one item)."""

  def __init__(self, checkpoint, overrides, split, table):
    overrides = dict(overrides)
    self.rollover = overrides.pop("rollover", 1)
    self.checkpoint = checkpoint
    self.spec = dict(load_prompt_spec(checkpoint), **overrides)
    self.template = graphs.get(self.spec["scene"]).graph_config(
        num_levels=self.spec["num_levels"],
        codebook_size=self.spec["codebook_size"],
        max_history=self.spec["max_history"],
        full_items=self.spec.get("full_items", 0),
        old_item_levels=self.spec.get("old_item_levels", 1)).template
    self.sid_softmax = load_sid_softmax(checkpoint)
    inputs, targets = split.inputs_and_targets("valid")
    inputs = [_rolled_over(h, self.spec["max_history"], self.rollover)
              for h in inputs]
    self.validator = BeamRecallValidator(inputs, targets, table,
                                         self.template,
                                         self.spec["max_history"],
                                         self.sid_softmax, ValidationConfig(
                                             num_users=FLAGS.valid_users))

  def score(self) -> dict:
    """Recall/NDCG@10, per-user hits and prompt lengths."""
    v = self.validator
    ranked = v.rank(load_hf_checkpoint(self.checkpoint))
    metrics = evaluate_ranking(ranked, v.targets, recall_ks=(10,),
                               ndcg_ks=(10,))
    lengths = np.array([len(p) for p in v.prompts])
    return {"checkpoint": self.checkpoint, "prompt": self.spec,
            "rollover": self.rollover, "users": len(ranked),
            **{k: round(x, 4) for k, x in metrics.items()},
            "hits@10": _hits(target_ranks(ranked, v.targets)).tolist(),
            "prompt_tokens_mean": round(float(lengths.mean()), 2),
            "prompt_tokens_p90": float(np.percentile(lengths, 90))}


def latencies_ms(variants, generator, width, rounds=5):
  """Mean batch-1 ms of `generator` per variant's prompts (the first
  --latency_users of each), timed in rotating rounds so that every variant
  sees the same machine load. The cost depends on the prompt's length, not
  on the weights, so one model times them all."""

  def run(prompt):
    generator.generate(np.asarray(prompt, np.int32)[np.newaxis],
                       np.array([len(prompt)], np.int32), width)

  run(variants[0].validator.prompts[0])  # traces
  seconds = [0.0] * len(variants)
  chunk = FLAGS.latency_users // rounds
  for r in tqdm(range(rounds), desc=f"latency W={width}"):
    for i, variant in enumerate(variants):
      prompts = variant.validator.prompts
      start = time.perf_counter()
      for u in range(r * chunk, (r + 1) * chunk):
        run(prompts[u])
      seconds[i] += time.perf_counter() - start
  return [1e3 * s / (rounds * chunk) for s in seconds]


def main(_):
  results = {}
  if os.path.exists(FLAGS.output):
    with open(FLAGS.output, encoding="utf-8") as f:
      results = json.load(f)
  split = leave_one_out(load_dataset(FLAGS.data_dir).histories)
  table = read_item_table(FLAGS.item_table)
  names = [_parse(v)[0] for v in FLAGS.variant]
  variants = [Variant(c, o, split, table)
              for _, c, o in map(_parse, FLAGS.variant)]
  for name, variant in zip(names, variants):
    if name not in results:
      results[name] = variant.score()
    reference = np.array(results[names[0]]["hits@10"])
    diff = np.array(results[name]["hits@10"]) - reference
    results[name]["recall@10_vs_reference"] = {
        "ratio": round(float(results[name]["recall@10"] / reference.mean()),
                       4),
        "difference": round(float(diff.mean()), 4),
        "paired_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4)}
    logging.info("%s: %s", name, {k: v for k, v in results[name].items()
                                  if k != "hits@10"})
    _write(results)
  if not FLAGS.latency_users:
    return
  model = load_hf_checkpoint(variants[0].checkpoint)
  trie = SemanticIdTrie(table.codes, variants[0].template.codebook_size)
  sid_offset, sid_softmax = (variants[0].template.sid_offset,
                             variants[0].sid_softmax)
  widths = [int(w) for w in FLAGS.latency_widths]
  generators = {  # the served engine (--engine=cpu) and the TF-native one
      "cpu": EngineGenerator(model, trie, sid_offset, max(widths),
                             sid_softmax=sid_softmax, num_threads=2),
      "tf": BeamSearchGenerator(model, trie, sid_offset, max(widths),
                                sid_softmax=sid_softmax)}
  for engine, generator in generators.items():
    for width in widths:
      for name, ms in zip(names, latencies_ms(variants, generator, width)):
        results[name].setdefault("latency_ms_batch1", {})[
            f"{engine} W={width}"] = round(ms, 2)
  for name in names:
    logging.info("%s: prompt %.1f tokens, batch-1 ms %s", name,
                 results[name]["prompt_tokens_mean"],
                 results[name]["latency_ms_batch1"])
  _write(results)


def _write(results):
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  with open(FLAGS.output, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
