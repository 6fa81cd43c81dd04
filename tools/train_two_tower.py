"""tf-genrec train_two_tower: the two-tower retrieval branch.

Trains on the leave-one-out training split (next item of every training
prefix, in-batch softmax), picks the epoch on validation Recall@50, scores
validation and test once, and saves config.json + weights.npz for a
`two_tower` branch of `tf-genrec export --graph=ad_recall_multi`.

  tf-genrec train_two_tower --model_output=runs/branches/two_tower
"""
import dataclasses
import json
import os

import numpy as np
from absl import app, flags, logging

from tf_genrec.data.amazon import leave_one_out, load_dataset
from tf_genrec.evaluation.baselines import evaluate_scorer
from tf_genrec.models.two_tower.model import TwoTowerConfig, save_two_tower
from tf_genrec.models.two_tower.trainer import (TwoTowerTrainConfig,
                                                train_two_tower)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Dataset directory (default: "
                    "../shared/datasets/amazon-scientific from the repo).")
flags.DEFINE_string("model_output", None, "Where the model goes.")
flags.DEFINE_integer("max_len", 50, "Most recent items the user tower sees.")
flags.DEFINE_integer("embedding_dim", 64, "Tower output size.")
flags.DEFINE_integer("hidden_dim", 128, "Tower MLP hidden size.")
flags.DEFINE_float("temperature", 0.05, "Softmax temperature.")
flags.DEFINE_float("dropout", 0.1, "User-tower dropout.")
flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.")
flags.DEFINE_integer("batch_size", 512, "Examples (and in-batch negatives).")
flags.DEFINE_integer("max_epochs", 40, "Upper bound on epochs.")
flags.DEFINE_integer("patience", 3, "Epochs without validation gain.")
flags.DEFINE_integer("max_users", 0, "Use only the first N users (0: all).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("item_embeddings_output", None, "Also saves the item "
                    "tower's [num_items, embedding_dim] .npy (row = item id), "
                    "e.g. as a collaborative view for build_sids "
                    "--embeddings.")
flags.mark_flag_as_required("model_output")


def main(argv):
  del argv
  dataset = load_dataset(FLAGS.data_dir)
  histories = dataset.histories[:FLAGS.max_users or None]
  split = leave_one_out(histories)
  config = TwoTowerConfig(
      num_items=dataset.num_items, max_len=FLAGS.max_len,
      embedding_dim=FLAGS.embedding_dim, hidden_dim=FLAGS.hidden_dim,
      temperature=FLAGS.temperature, dropout=FLAGS.dropout)
  train = TwoTowerTrainConfig(
      learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size,
      max_epochs=FLAGS.max_epochs, patience=FLAGS.patience, seed=FLAGS.seed)
  model, records = train_two_tower(split.train,
                                   *split.inputs_and_targets("valid"), config,
                                   train)
  save_two_tower(model, FLAGS.model_output)
  if FLAGS.item_embeddings_output:
    np.save(FLAGS.item_embeddings_output, model.item_embeddings().numpy())
  report = {"config": dataclasses.asdict(config),
            "train": dataclasses.asdict(train), "epochs_run": len(records),
            **{s: evaluate_scorer(model.score, *split.inputs_and_targets(s))
               for s in ("valid", "test")}}
  with open(os.path.join(FLAGS.model_output, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  logging.info("saved %s: %s", FLAGS.model_output, report)
  print(json.dumps(report))


if __name__ == "__main__":
  app.run(main)
