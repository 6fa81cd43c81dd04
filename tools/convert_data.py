"""tf-genrec convert: a dataset into the event-log formats, an item table
onto the catalogue's own item ids, or the catalogue's item vocabulary.

  tf-genrec convert --data_dir=../shared/datasets/amazon-scientific \
      --to=parquet --catalogue_format=jsonl --output=runs/sci-parquet
  tf-genrec convert --data_dir=runs/sci-parquet --to=item_table \
      --item_table=runs/me/sids/item_table.tsv --output=runs/me/item_table.ext.tsv
  tf-genrec convert --data_dir=runs/sci-parquet --to=item_vocabulary \
      --output=runs/me/item_vocabulary.txt

The first writes `events-*.parquet` + `items.jsonl` into --output, a
directory `--data_dir` reads back into the same histories (any dataset
`--data_dir` reads can be converted). The second rewrites an item table's
dense ids to the catalogue's int64 ids: exported with it, the generative
model takes and returns those ids (docs/integration.md). The third writes
the catalogue's ids (string or int64), line n = item id n: exported with
`--item_vocabulary`, the model maps them in its graph.
"""
import json

import numpy as np
from absl import app, flags

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.data.writers import (CATALOGUE_EXTENSIONS, EVENT_EXTENSIONS,
                                    write_dataset)
from tf_genrec.tables.item_table import read_item_table, write_item_table
from tf_genrec.tables.item_vocabulary import write_item_vocabulary

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Dataset to convert "
                    "([<format>:]<dir or pattern>, docs/integration.md).")
flags.DEFINE_enum("to", "tfrecord", sorted(EVENT_EXTENSIONS) + [
    "item_table", "item_vocabulary"], "Event-log format to write, "
                  "item_table or item_vocabulary.")
flags.DEFINE_enum("catalogue_format", "jsonl", sorted(CATALOGUE_EXTENSIONS),
                  "Catalogue format to write.")
flags.DEFINE_string("output", None, "Output directory (formats) or file "
                    "(--to=item_table, item_vocabulary).")
flags.DEFINE_integer("num_shards", 1, "Event files to write.")
flags.DEFINE_bool("string_ids", False, "Write user and item ids as strings "
                  "(user-<n>, item-<n>) when the dataset has dense ids.")
flags.DEFINE_string("item_table", None, "--to=item_table: the item table "
                    "over dense ids (tf-genrec build_sids).")
flags.mark_flag_as_required("output")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  if FLAGS.to == "item_vocabulary":
    write_item_vocabulary(FLAGS.output, dataset.external_item_ids(
        np.arange(dataset.num_items)))
    print(json.dumps({"output": FLAGS.output, "items": dataset.num_items}))
    return
  if FLAGS.to != "item_table":
    if not 1 <= FLAGS.num_shards <= dataset.num_users:
      raise app.UsageError(f"--num_shards={FLAGS.num_shards} must be in "
                           f"[1, {dataset.num_users}] (the users)")
    files = write_dataset(dataset, FLAGS.output, FLAGS.to,
                          FLAGS.catalogue_format, FLAGS.num_shards,
                          FLAGS.string_ids)
    print(json.dumps({"output": FLAGS.output, "files": files,
                      "users": dataset.num_users, "items": dataset.num_items,
                      "events": dataset.num_interactions}))
    return
  if not FLAGS.item_table:
    raise app.UsageError("--to=item_table needs --item_table")
  external = dataset.item_external_ids
  if external is not None and external.dtype != "int64":
    raise app.UsageError(
        f"{FLAGS.data_dir}: item ids are strings (e.g. {external[0]!r}); the "
        "item table holds int64 ids; export with --item_vocabulary "
        "(--to=item_vocabulary) to serve string ids (docs/integration.md)")
  table = read_item_table(FLAGS.item_table)
  if table.item_ids.min(initial=0) < 0 or (
      table.item_ids.max(initial=-1) >= dataset.num_items):
    raise app.UsageError(f"--item_table={FLAGS.item_table}: item ids must be "
                         f"dense ids in [0, {dataset.num_items})")
  write_item_table(FLAGS.output, dataset.external_item_ids(table.item_ids),
                   table.codes, table.priority)
  print(json.dumps({"output": FLAGS.output, "items": len(table.item_ids)}))


if __name__ == "__main__":
  app.run(main)
