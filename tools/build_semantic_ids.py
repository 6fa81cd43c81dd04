"""Item embeddings -> RQ-VAE semantic IDs -> item_table.tsv + report.json.

  python -m tools.build_semantic_ids \
    --embeddings=runs/demo/sids/item_embeddings.npy --output_dir=runs/demo/sids

Priority in the table is the item's interaction count in the training split
(leave-one-out), so validation/test targets do not leak into it. With
--codes=<.npy|.tsv> externally built SIDs replace the RQ-VAE.
"""
import dataclasses
import json
import os

import numpy as np
from absl import app, flags, logging

from tf_genrec.data.amazon import (DEFAULT_DATA_DIR, item_popularity,
                                   leave_one_out, load_dataset)
from tf_genrec.semantic_ids import assign
from tf_genrec.semantic_ids.embeddings import (combine_embeddings,
                                               count_confidence,
                                               load_embeddings)
from tf_genrec.semantic_ids.rqvae import (RQVAEConfig, codebook_usage,
                                          train_rqvae)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR,
                    "Dataset directory; relative paths are from the repo root.")
flags.DEFINE_list("embeddings", ["runs/demo/sids/item_embeddings.npy"],
                  "[num_items, dim] .npy from tools/embed_items.py or any "
                  "precomputed embeddings (row = item id); several (e.g. text "
                  "and SASRec item embeddings) are row-normalised, weighted "
                  "by --embedding_weights and concatenated.")
flags.DEFINE_list("embedding_weights", None, "One weight per --embeddings "
                  "file (default 1 each); a single file is used as given "
                  "unless a weight is set.")
flags.DEFINE_list("interaction_views", [], "0-based indices of --embeddings "
                  "learned from the training interactions (e.g. SASRec item "
                  "embeddings): their row i is scaled by n_i / (n_i + "
                  "--interaction_prior), n_i = item i's training-split count, "
                  "so rarely seen items are placed by the other views.")
flags.DEFINE_float("interaction_prior", 5.0, "Count at which an "
                   "--interaction_views row keeps half its weight.")
flags.DEFINE_string("codes", None, "Externally built SIDs (.npy [N, L] or "
                    "item_id<TAB>codes text); skips the RQ-VAE.")
flags.DEFINE_string("output_dir", "runs/demo/sids", "Writes item_table.tsv, "
                    "codes.npy (the L levels before collision handling, "
                    "reusable with --codes) and report.json here.")
flags.DEFINE_integer("num_levels", 3, "L, RQ-VAE levels.")
flags.DEFINE_integer("codebook_size", 256, "K, codes per level.")
flags.DEFINE_integer("epochs", 500, "RQ-VAE training epochs.")
flags.DEFINE_integer("batch_size", 1024, "RQ-VAE batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_float("beta", 0.25, "Commitment loss weight.")
flags.DEFINE_integer("latent_dim", 32, "RQ-VAE latent size.")
flags.DEFINE_enum("collision_mode", "disambiguate", assign.COLLISION_MODES,
                  "disambiguate: extra level = rank in the collision group; "
                  "share: items share a SID, ordered by priority.")
flags.DEFINE_integer("seed", 0, "Random seed.")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  split = leave_one_out(dataset.histories)
  popularity = item_popularity(split.train, dataset.num_items)
  report = {"collision_mode": FLAGS.collision_mode}
  if FLAGS.codes:
    codes = assign.load_codes(FLAGS.codes, dataset.num_items,
                              FLAGS.codebook_size)
    report["source"] = FLAGS.codes
  else:
    sources = [load_embeddings(p, dataset.num_items)
               for p in FLAGS.embeddings]
    views = [int(v) for v in FLAGS.interaction_views]
    if any(not 0 <= v < len(sources) for v in views):
      raise app.UsageError(f"--interaction_views={FLAGS.interaction_views}: "
                           f"indices must be in [0, {len(sources)})")
    if len(sources) == 1 and not FLAGS.embedding_weights and not views:
      emb = sources[0]  # Used as given, e.g. already normalised text vectors.
    else:  # combine_embeddings names a weight count that does not match.
      weights = [float(w) for w in
                 FLAGS.embedding_weights or [1.0] * len(sources)]
      emb = combine_embeddings(sources, weights, [
          count_confidence(popularity, FLAGS.interaction_prior)
          if v in views else None for v in range(len(sources))])
      report["embedding_weights"] = weights
      if views:
        report.update(interaction_views=views,
                      interaction_prior=FLAGS.interaction_prior)
    config = RQVAEConfig(
        input_dim=emb.shape[1], latent_dim=FLAGS.latent_dim,
        num_levels=FLAGS.num_levels, codebook_size=FLAGS.codebook_size,
        beta=FLAGS.beta, learning_rate=FLAGS.learning_rate,
        batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, seed=FLAGS.seed)
    model, history = train_rqvae(emb, config)
    codes = model.encode_codes(emb)
    report.update(
        source=FLAGS.embeddings, config=dataclasses.asdict(config),
        initial_recon_loss=history[0]["recon_loss"],
        recon_loss=model.reconstruction_loss(emb),
        codes_reset=sum(h["codes_reset"] for h in history))
  report["codebook_usage"] = codebook_usage(codes, FLAGS.codebook_size)
  report["before_collision_handling"] = assign.collision_stats(codes)
  final = assign.resolve_collisions(codes, popularity, FLAGS.collision_mode,
                                    FLAGS.codebook_size)
  report["after_collision_handling"] = assign.collision_stats(final)
  report["num_levels_out"] = int(final.shape[1])

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  np.save(os.path.join(FLAGS.output_dir, "codes.npy"), codes)
  table_path = os.path.join(FLAGS.output_dir, "item_table.tsv")
  assign.write_sid_table(table_path, final, popularity)
  report["item_table"] = table_path
  with open(os.path.join(FLAGS.output_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  logging.info("wrote %s", table_path)
  print(json.dumps(report, indent=2))


if __name__ == "__main__":
  app.run(main)
