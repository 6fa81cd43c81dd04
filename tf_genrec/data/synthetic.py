"""A generated event log of any size, written chunk by chunk (for memory
benchmarks and tests of the readers at scale).

Events interleave users over time as a production log does; item ids are
sparse int64 (external ids, not 0..n-1) with a Zipf-like popularity.
"""
import numpy as np

from tf_genrec.data.writers import (catalogue_path, write_catalogue,
                                    write_event_shards)

EVENTS_PER_USER = 20  # mean history length
ITEM_ID_BASE = 10**12
ITEM_ID_STRIDE = 7919


def external_item_ids(num_items: int) -> np.ndarray:
  return ITEM_ID_BASE + ITEM_ID_STRIDE * np.arange(num_items, dtype=np.int64)


def event_chunks(num_events: int, num_items: int, seed: int,
                 chunk_size: int = 1 << 18, first_event: int = 0,
                 total_events: int = None):
  """Events [first_event, first_event + num_events) of a log of
  total_events (default num_events), as column chunks."""
  total_events = total_events or num_events
  num_users = max(1, total_events // EVENTS_PER_USER)
  items = external_item_ids(num_items)
  for start in range(first_event, first_event + num_events, chunk_size):
    size = min(chunk_size, first_event + num_events - start)
    rng = np.random.default_rng([seed, start])
    popular = np.minimum(rng.zipf(1.3, size) - 1, num_items - 1)
    yield {"user_id": rng.integers(0, num_users, size, dtype=np.int64),
           "item_id": items[popular],
           "timestamp": 1_700_000_000 + np.arange(start, start + size,
                                                  dtype=np.int64),
           "action_type": rng.integers(0, 3, size, dtype=np.int64)}


def write_synthetic_dataset(output_dir: str, num_events: int, num_items: int,
                            events_format: str = "tfrecord",
                            num_shards: int = 4, seed: int = 0) -> list:
  """Event shards + `items.jsonl` in output_dir; returns the files."""
  bounds = np.linspace(0, num_events, num_shards + 1).astype(np.int64)
  paths = write_event_shards(output_dir, events_format, [
      event_chunks(int(bounds[s + 1] - bounds[s]), num_items, seed,
                   first_event=int(bounds[s]), total_events=num_events)
      for s in range(num_shards)])
  path = catalogue_path(output_dir, "jsonl")
  write_catalogue([{"item_id": int(i), "title": f"item {n}",
                    "description": "", "brand": f"brand {n % 97}",
                    "categories": f"category {n % 13}"}
                   for n, i in enumerate(external_item_ids(num_items))],
                  path, "jsonl")
  return paths + [path]
