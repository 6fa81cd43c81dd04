"""The `tf-genrec build_sids` step: item embeddings -> semantic IDs -> table.

build_semantic_ids(SemanticIdOptions) trains an RQ-VAE on one or several
embedding views (or takes externally built codes), resolves collisions and
writes item_table.tsv, codes.npy (the L levels before collision handling,
reusable as `codes`) and report.json to output_dir; returns the report.
Priority in the table is the item's interaction count in the training split
(leave-one-out), so validation/test targets do not leak into it.
"""
import dataclasses
import json
import os
from typing import Optional

import numpy as np
from absl import logging

from tf_genrec.data.amazon import (DEFAULT_DATA_DIR, item_popularity,
                                   leave_one_out, load_dataset)
from tf_genrec.options import OptionsError, option
from tf_genrec.semantic_ids import assign
from tf_genrec.semantic_ids.embeddings import (combine_embeddings,
                                               count_confidence,
                                               load_embeddings)
from tf_genrec.semantic_ids.rqvae import (RQVAEConfig, codebook_usage,
                                          train_rqvae)

_RQVAE = RQVAEConfig()  # the RQ-VAE defaults, stated once


@dataclasses.dataclass(frozen=True)
class SemanticIdOptions:
  data_dir: str = option(DEFAULT_DATA_DIR, "Dataset directory; relative "
                         "paths are from the repo root.")
  embeddings: list = option(
      ["runs/demo/sids/item_embeddings.npy"], "[num_items, dim] .npy from "
      "tools/embed_items.py or any precomputed embeddings (row = item id); "
      "several (e.g. text and SASRec item embeddings) are row-normalised, "
      "weighted by --embedding_weights and concatenated.")
  embedding_weights: Optional[list] = option(
      None, "One weight per --embeddings file (default 1 each); a single "
      "file is used as given unless a weight is set.")
  interaction_views: list = option(
      [], "0-based indices of --embeddings learned from the training "
      "interactions (e.g. SASRec item embeddings): their row i is scaled by "
      "n_i / (n_i + --interaction_prior), n_i = item i's training-split "
      "count, so rarely seen items are placed by the other views.")
  interaction_prior: float = option(5.0, "Count at which an "
                                    "--interaction_views row keeps half its "
                                    "weight.")
  codes: Optional[str] = option(None, "Externally built SIDs (.npy [N, L] "
                                "or item_id<TAB>codes text); skips the "
                                "RQ-VAE.")
  output_dir: str = option("runs/demo/sids", "Writes item_table.tsv, "
                           "codes.npy (the L levels before collision "
                           "handling, reusable with --codes) and report.json "
                           "here.")
  num_levels: int = option(_RQVAE.num_levels, "L, RQ-VAE levels.")
  codebook_size: int = option(_RQVAE.codebook_size, "K, codes per level.")
  epochs: int = option(_RQVAE.epochs, "RQ-VAE training epochs.")
  batch_size: int = option(_RQVAE.batch_size, "RQ-VAE batch size.")
  learning_rate: float = option(_RQVAE.learning_rate, "Adam learning rate.")
  beta: float = option(_RQVAE.beta, "Commitment loss weight.")
  latent_dim: int = option(_RQVAE.latent_dim, "RQ-VAE latent size.")
  collision_mode: str = option(
      "disambiguate", "disambiguate: extra level = rank in the collision "
      "group; share: items share a SID, ordered by priority.",
      choices=assign.COLLISION_MODES)
  seed: int = option(_RQVAE.seed, "Random seed.")


def _embeddings(o: SemanticIdOptions, num_items, popularity, report):
  """The RQ-VAE input: one view as given, or the weighted views combined."""
  sources = [load_embeddings(p, num_items) for p in o.embeddings]
  views = [int(v) for v in o.interaction_views]
  if any(not 0 <= v < len(sources) for v in views):
    raise OptionsError(f"interaction_views={o.interaction_views}: indices "
                       f"must be in [0, {len(sources)})")
  if len(sources) == 1 and not o.embedding_weights and not views:
    return sources[0]  # Used as given, e.g. already normalised text vectors.
  # combine_embeddings names a weight count that does not match.
  weights = [float(w) for w in o.embedding_weights or [1.0] * len(sources)]
  report["embedding_weights"] = weights
  if views:
    report.update(interaction_views=views,
                  interaction_prior=o.interaction_prior)
  return combine_embeddings(sources, weights, [
      count_confidence(popularity, o.interaction_prior) if v in views
      else None for v in range(len(sources))])


def build_semantic_ids(options: SemanticIdOptions) -> dict:
  """Writes item_table.tsv, codes.npy, report.json; the report."""
  o = options
  dataset = load_dataset(o.data_dir)
  split = leave_one_out(dataset.histories)
  popularity = item_popularity(split.train, dataset.num_items)
  report = {"collision_mode": o.collision_mode}
  if o.codes:
    codes = assign.load_codes(o.codes, dataset.num_items, o.codebook_size)
    report["source"] = o.codes
  else:
    emb = _embeddings(o, dataset.num_items, popularity, report)
    config = RQVAEConfig(
        input_dim=emb.shape[1], latent_dim=o.latent_dim,
        num_levels=o.num_levels, codebook_size=o.codebook_size, beta=o.beta,
        learning_rate=o.learning_rate, batch_size=o.batch_size,
        epochs=o.epochs, seed=o.seed)
    model, history = train_rqvae(emb, config)
    codes = model.encode_codes(emb)
    report.update(
        source=list(o.embeddings), config=dataclasses.asdict(config),
        initial_recon_loss=history[0]["recon_loss"],
        recon_loss=model.reconstruction_loss(emb),
        codes_reset=sum(h["codes_reset"] for h in history))
  report["codebook_usage"] = codebook_usage(codes, o.codebook_size)
  report["before_collision_handling"] = assign.collision_stats(codes)
  final = assign.resolve_collisions(codes, popularity, o.collision_mode,
                                    o.codebook_size)
  report["after_collision_handling"] = assign.collision_stats(final)
  report["num_levels_out"] = int(final.shape[1])

  os.makedirs(o.output_dir, exist_ok=True)
  np.save(os.path.join(o.output_dir, "codes.npy"), codes)
  table_path = os.path.join(o.output_dir, "item_table.tsv")
  assign.write_sid_table(table_path, final, popularity, o.codebook_size)
  report["item_table"] = table_path
  with open(os.path.join(o.output_dir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  logging.info("wrote %s", table_path)
  return report
