"""tf-genrec beam_build_sids: embed + build_sids as one Apache Beam job.

  tf-genrec beam_build_sids --output_dir=runs/beam/sids          # DirectRunner
  tf-genrec beam_build_sids --items='gs://b/items-*.jsonl' --users='gs://b/users-*.jsonl' \
      --output_dir=gs://b/sids --nomerge -- --runner=DataflowRunner ...  # docs/scaling.md

Item text -> embeddings (RunInference over the encoder) -> RQ-VAE (trained on
one worker) -> codes -> collision handling -> item table shards
<output_dir>/item_table-*.tsv and embedding shards <output_dir>/embeddings-*.tsv.
With --merge (local files) also item_table.tsv (for `tf-genrec export`) and
item_embeddings.npy (for `tf-genrec build_sids --embeddings`). Without
--items/--users the bundled dataset is written as JSON Lines shards under
<output_dir>/input first. Beam pipeline options follow `--`.
"""
import glob
import json
import os

import apache_beam as beam
import numpy as np
from absl import app, flags, logging

from tf_genrec.data.amazon import DEFAULT_DATA_DIR, load_dataset
from tf_genrec.pipelines import records
from tf_genrec.pipelines.build_sids import (METRICS_NAMESPACE,
                                            BuildSidsOptions, build_sids)
from tf_genrec.pipelines.runner import local_pipeline_options
from tf_genrec.semantic_ids import assign
from tf_genrec.semantic_ids.embeddings import ENCODERS
from tf_genrec.semantic_ids.rqvae import RQVAEConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("items", None, "Item JSON Lines glob (pipelines/records.py"
                    "); default: the bundled dataset, converted.")
flags.DEFINE_string("users", None, "User JSON Lines glob (priority = "
                    "leave-one-out training counts, as build_sids).")
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "Bundled dataset directory "
                    "used when --items/--users are not given.")
flags.DEFINE_string("output_dir", "runs/beam/sids", "Output directory (any "
                    "filesystem the runner reads).")
flags.DEFINE_enum("encoder", "minilm", list(ENCODERS), "Text encoder.")
flags.DEFINE_bool("include_description", False, "Embed descriptions too.")
flags.DEFINE_integer("embed_batch_size", 64, "Texts per encoder call.")
flags.DEFINE_integer("num_levels", 3, "L, RQ-VAE levels.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("epochs", 500, "RQ-VAE training epochs.")
flags.DEFINE_integer("latent_dim", 32, "RQ-VAE latent size.")
flags.DEFINE_enum("collision_mode", "disambiguate", assign.COLLISION_MODES,
                  "As build_sids --collision_mode.")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("num_shards", 0, "Output shards (0: runner decides).")
flags.DEFINE_bool("merge", True, "Merge the shards into item_table.tsv and "
                  "item_embeddings.npy (local output_dir only).")


def main(argv):
  items, users = FLAGS.items, FLAGS.users
  if not (items and users):
    items, users = records.write_dataset_jsonl(
        load_dataset(FLAGS.data_dir),
        os.path.join(FLAGS.output_dir, "input"))
  options = BuildSidsOptions(
      rqvae=RQVAEConfig(num_levels=FLAGS.num_levels,
                        codebook_size=FLAGS.codebook_size,
                        epochs=FLAGS.epochs, latent_dim=FLAGS.latent_dim,
                        seed=FLAGS.seed),
      collision_mode=FLAGS.collision_mode, encoder=FLAGS.encoder,
      include_description=FLAGS.include_description,
      embed_batch_size=FLAGS.embed_batch_size, num_shards=FLAGS.num_shards)
  table_prefix = os.path.join(FLAGS.output_dir, "item_table")
  embeddings_prefix = os.path.join(FLAGS.output_dir, "embeddings")
  pipeline = beam.Pipeline(options=local_pipeline_options(argv[1:]))
  build_sids(pipeline, items, users, table_prefix, options, embeddings_prefix)
  result = pipeline.run()
  result.wait_until_finish()
  report = {"items": items, "users": users}
  for counter in result.metrics().query(beam.metrics.MetricsFilter()
                                        .with_namespace(METRICS_NAMESPACE)
                                        )["counters"]:
    report[counter.key.metric.name] = counter.committed
  if FLAGS.merge:
    table = records.merge_item_table_shards(
        table_prefix + "-*.tsv", os.path.join(FLAGS.output_dir,
                                              "item_table.tsv"))
    report["after_collision_handling"] = assign.collision_stats(table.codes)
    np.save(os.path.join(FLAGS.output_dir, "item_embeddings.npy"),
            records.read_embedding_shards(embeddings_prefix + "-*.tsv"))
  report["shards"] = sorted(glob.glob(table_prefix + "-*.tsv"))
  logging.info("%s", report)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
