"""Validation Recall@K through the constrained beam search that serves.

Early stopping (trainer.py) ranks checkpoints by what the exported SavedModel
will be scored on: the project's BeamSearchGenerator over the item table's
trie, its SIDs mapped to items as CodesToItems lists them (descending
priority, ties by ascending item id). Prompts come from build_sequences,
i.e. the serving PromptAssemble op. A fixed sample of users keeps it cheap
and comparable between evaluations.
"""
import dataclasses

import numpy as np

from tf_genrec.core.prompt import PromptTemplate
from tf_genrec.evaluation.metrics import evaluate_ranking
from tf_genrec.generation.beam_search import BeamSearchGenerator
from tf_genrec.generation.trie import SemanticIdTrie
from tf_genrec.training.examples import build_sequences, pad_batch


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
  num_users: int = 2000  # fixed sample (0: every user)
  beam_width: int = 64  # >= the ranked list; the top 10 is stable from ~32
  k: int = 10  # Recall@k decides; NDCG@k is logged beside it
  batch_size: int = 256
  seed: int = 0  # which users form the sample

  def __post_init__(self):
    for name in ("beam_width", "k", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"ValidationConfig.{name} must be >= 1, got "
                         f"{getattr(self, name)}")
    if self.num_users < 0:
      raise ValueError(f"ValidationConfig.num_users must be >= 0, got "
                       f"{self.num_users}")


def items_by_sid(item_ids, codes, priority) -> dict:
  """{SID tuple: item ids in CodesToItems order (priority desc, id asc)}."""
  order = np.lexsort((np.asarray(item_ids), -np.asarray(priority)))
  out = {}
  for row in order:
    out.setdefault(tuple(int(c) for c in codes[row]), []).append(
        int(item_ids[row]))
  return out


class BeamRecallValidator:
  """Callable model -> {"recall@k", "ndcg@k"} on a fixed validation sample."""

  def __init__(self, histories, targets, table, template: PromptTemplate,
               max_history: int, sid_softmax: str,
               config: ValidationConfig = ValidationConfig()):
    """histories: per user the input items; targets: [num_users] item ids;
    table: ItemTableData of the item table the model trains on."""
    users = np.arange(len(histories))
    if config.num_users and config.num_users < len(users):
      users = np.sort(np.random.default_rng(config.seed).choice(
          users, config.num_users, replace=False))
    users = [u for u in users if len(histories[u])]
    self.targets = np.asarray(targets)[users]
    item_codes = dict(zip(table.item_ids.tolist(), table.codes.tolist()))
    sequences = build_sequences(
        [list(histories[u]) + [int(targets[u])] for u in users], item_codes,
        template, max_history)
    # build_sequences appends the target's L SID tokens: the prompt precedes.
    self._prompts = sequences.shortened(template.num_levels)
    self._trie = SemanticIdTrie(table.codes, template.codebook_size)
    self._items = items_by_sid(table.item_ids, table.codes, table.priority)
    self._template = template
    self._sid_softmax = sid_softmax
    self.config = config

  @property
  def num_users(self) -> int:
    return len(self._prompts)

  @property
  def prompts(self):
    """The users' serving prompts (a Ragged of token rows)."""
    return self._prompts

  def rank(self, model) -> np.ndarray:
    """[num_users, k] item ids, best first, -1 padded."""
    c = self.config
    generator = BeamSearchGenerator(model, self._trie,
                                    self._template.sid_offset, c.beam_width,
                                    sid_softmax=self._sid_softmax)
    ranked = np.full((self.num_users, c.k), -1, np.int64)
    for start in range(0, self.num_users, c.batch_size):
      ids, mask = pad_batch(self._prompts[start:start + c.batch_size],
                            self._template.pad_token_id)
      codes, scores = generator.generate(ids, mask.sum(axis=1).astype(np.int32),
                                         c.beam_width)
      codes, valid = codes.numpy(), np.isfinite(scores.numpy())
      for row in range(len(ids)):
        items = [i for beam in np.flatnonzero(valid[row])
                 for i in self._items[tuple(codes[row, beam])]][:c.k]
        ranked[start + row, :len(items)] = items
    return ranked

  def __call__(self, model) -> dict:
    k = self.config.k
    return evaluate_ranking(self.rank(model), self.targets, recall_ks=(k,),
                            ndcg_ks=(k,))
