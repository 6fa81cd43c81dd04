"""Peak memory of the data input on a generated event log of any size.

  python -m tools.benchmark_data --num_events=5000000 --output_dir=runs/bench_data

Writes a TFRecord log (tf_genrec/data/synthetic.py; reused if present), then
in this process runs what the tools run on it: the SID-building input
(load_dataset, leave-one-out, item popularity, item texts) and the training
input (the generator's training sequences through PromptAssemble, with
random semantic IDs). Prints one JSON line: RSS before, the peak RSS of
each stage (Linux VmHWM, reset before the stage, so writing the log does not
count), wall and CPU seconds per stage (all threads), bytes per event.
"""
import json
import os
import time

import numpy as np
from absl import app, flags, logging

import graphs
from tf_genrec.data.amazon import item_popularity, leave_one_out, load_dataset
from tf_genrec.data.synthetic import write_synthetic_dataset
from tf_genrec.training.examples import build_sequences

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_events", 5_000_000, "Events in the generated log.")
flags.DEFINE_integer("num_items", 100_000, "Items in the catalogue.")
flags.DEFINE_integer("num_shards", 4, "Event files.")
flags.DEFINE_string("output_dir", "runs/bench_data", "Where the log goes "
                    "(a subdirectory per size).")
flags.DEFINE_integer("max_history", 20, "History items per training prompt.")


def _status_mib(key: str) -> float:
  with open("/proc/self/status", encoding="ascii") as f:
    for line in f:
      if line.startswith(key + ":"):
        return int(line.split()[1]) / 1024.0
  raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak_rss() -> float:
  """Starts a new peak (VmHWM := VmRSS); returns the RSS now in MiB."""
  with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
    f.write("5")
  return _status_mib("VmRSS")


def main(argv):
  del argv
  data_dir = os.path.abspath(os.path.join(
      FLAGS.output_dir, f"events_{FLAGS.num_events}"))
  if not os.path.isdir(data_dir):
    logging.info("writing %d events to %s", FLAGS.num_events, data_dir)
    write_synthetic_dataset(data_dir, FLAGS.num_events, FLAGS.num_items,
                            num_shards=FLAGS.num_shards)
  log_bytes = sum(os.path.getsize(os.path.join(data_dir, f))
                  for f in os.listdir(data_dir) if f.startswith("events"))
  template = graphs.get("ad_recall").graph_config(
      num_levels=4, codebook_size=256,
      max_history=FLAGS.max_history).template
  build_sequences([np.zeros(2, np.int64)], {0: [0, 0, 0, 0]}, template, 2)
  # TF, the op library and a PromptAssemble run are loaded.
  before = _reset_peak_rss()

  start, cpu = time.time(), time.process_time()
  dataset = load_dataset(data_dir)
  split = leave_one_out(dataset.histories)
  item_popularity(split.train, dataset.num_items)
  texts = [item.text() for item in dataset.items]
  sid_input_s, sid_input_cpu_s = time.time() - start, time.process_time() - cpu
  sid_input_mib = _status_mib("VmHWM")
  _reset_peak_rss()

  start, cpu = time.time(), time.process_time()
  codes = np.random.default_rng(0).integers(
      0, template.codebook_size, (dataset.num_items, template.num_levels))
  item_codes = dict(enumerate(codes.tolist()))
  fit = split.fit_histories()
  sequences = build_sequences(fit.select(fit.lengths >= 2), item_codes,
                              template, FLAGS.max_history)
  training_input_s = time.time() - start
  training_input_cpu_s = time.process_time() - cpu
  events = dataset.num_interactions
  peak = max(sid_input_mib, _status_mib("VmHWM"))
  print(json.dumps({
      "events_in_log": FLAGS.num_events, "events_kept": events,
      "users": dataset.num_users, "items": dataset.num_items,
      "texts": len(texts), "log_mib": round(log_bytes / 2**20, 1),
      "training_sequences": len(sequences),
      "rss_before_mib": round(before, 1),
      "peak_rss_sid_input_mib": round(sid_input_mib, 1),
      "peak_rss_training_input_mib": round(peak, 1),
      "sid_input_bytes_per_event": round(
          (sid_input_mib - before) * 2**20 / max(events, 1), 1),
      "training_input_bytes_per_event": round(
          (peak - before) * 2**20 / max(events, 1), 1),
      "sid_input_s": round(sid_input_s, 1),
      "sid_input_cpu_s": round(sid_input_cpu_s, 1),
      "training_input_s": round(training_input_s, 1),
      "training_input_cpu_s": round(training_input_cpu_s, 1)}))


if __name__ == "__main__":
  app.run(main)
