"""Several recall branches and a MergeStage in one SavedModel.

Every branch maps the serving signature's behaviour inputs
(BEHAVIOR_INPUT_SPECS) to a ranked list (item_ids [B, N_i], scores [B, N_i]).
The branches share no tensors, so inside the one tf.function they are
independent subgraphs that TF's executor runs concurrently on its inter-op
threads; the MergeStage (merge.py) then joins them.

Branch kinds (RecallBranch implementations):
  GenerativeBranch   -- the GenerativeRecallModel of this project;
  RetrievalBranch    -- a query encoder over the cleaned click history
                        (BehaviorSequence op) + a TopK over item embeddings:
                        the two-tower model and SASRec;
  SavedModelBranch   -- a team's existing recall SavedModel, by path and
                        signature name, its inputs taken from the behaviour
                        inputs by name (or mapped by name).
"""
import abc
import json

import tensorflow as tf

import tf_genrec.ops  # noqa: F401  (user SavedModels may hold our ops)
from tf_genrec.builders.merge import MergeStage
from tf_genrec.builders.recall_model import (BEHAVIOR_INPUT_SPECS,
                                             behavior_input_specs)
from tf_genrec.builders.stages import BehaviorFeatures
from tf_genrec.models.keras_io import KerasModule
from tf_genrec.models.two_tower.model import recency

BEHAVIOR_INPUTS = {s.name: s for s in BEHAVIOR_INPUT_SPECS}
# Signature that returns the merged list and every branch's own list.
BRANCHES_SIGNATURE = "branches"
# assets.extra/<this>: {"branches": [names]}; output `branch` indexes it.
BRANCHES_FILE = "branches.json"


class RecallBranch(tf.Module, abc.ABC):
  """Behaviour inputs -> (item_ids [B, top_n] int64, scores [B, top_n]).

  top_n is fixed when the branch is built: the merge stage needs more
  candidates per branch than its quota so de-duplication can refill.
  A branch with a `vocabulary` (an ItemVocabulary) is fed the catalogue's
  own item ids and returns item-table ids; the others see item-table ids.
  """
  vocabulary = None

  def __init__(self, top_n: int, name: str):
    super().__init__(name=name)
    if top_n < 1:
      raise ValueError(f"{name}: top_n must be >= 1, got {top_n}")
    self.top_n = int(top_n)

  @abc.abstractmethod
  def __call__(self, inputs: dict):
    """inputs: the behaviour tensors by name (BEHAVIOR_INPUT_SPECS)."""


class GenerativeBranch(RecallBranch):
  """The generative recall path (GenerativeRecallModel.recall)."""

  def __init__(self, model, top_n: int, beam_width: int):
    super().__init__(top_n, "generative_branch")
    r = model.config.retrieval
    if not 1 <= beam_width <= r.max_beam_width:
      raise ValueError(f"generative branch: beam_width must be in [1, "
                       f"{r.max_beam_width}] (its max_beam_width), got "
                       f"{beam_width}")
    if top_n > r.max_top_n:
      raise ValueError(f"generative branch: top_n must be <= "
                       f"{r.max_top_n} (its max_top_n), got {top_n}")
    self.model = model
    self._beam_width = int(beam_width)

  def __call__(self, inputs):
    out = self.model.recall(**inputs, beam_width=[self._beam_width],
                            top_n=[self.top_n])
    return out["item_ids"], out["scores"]


class RetrievalBranch(RecallBranch):
  """Cleaned history -> query embedding -> TopK over item embeddings."""

  def __init__(self, behavior: BehaviorFeatures, query_encoder, top_k,
               top_n: int, name: str):
    super().__init__(min(top_n, top_k.num_candidates), name)
    self.behavior = behavior
    self.query_encoder = query_encoder
    self.top_k = top_k

  def __call__(self, inputs):
    history, lengths = self.behavior(**inputs)
    return self.top_k(self.query_encoder(history, lengths), self.top_n)


class TwoTowerQuery(KerasModule):
  """The two-tower model's user tower."""

  def __init__(self, two_tower):
    super().__init__(two_tower, name="two_tower_query")

  def __call__(self, history, lengths):
    return self.model.user_embeddings(history, lengths)


class SASRecQuery(KerasModule):
  """SASRec's state after the latest item, from a right-padded history.

  SASRec reads its last max_len known items left-padded (token = item + 1);
  unknown ids (outside its catalogue) are skipped, not padded in place.
  """

  def __init__(self, sasrec):
    super().__init__(sasrec, name="sasrec_query")

  def __call__(self, history, lengths):
    c = self.model.config
    valid, after = recency(history, lengths, c.num_items)
    valid &= after < c.max_len
    slot = tf.where(valid, c.max_len - 1 - after, c.max_len)  # c.max_len: out
    tokens = tf.reduce_sum(
        tf.one_hot(slot, c.max_len, dtype=tf.int32) *
        tf.cast(tf.where(valid, history + 1, 0), tf.int32)[..., tf.newaxis],
        axis=1)
    return self.model(tokens, training=False)[:, -1]


class SavedModelBranch(RecallBranch):
  """A recall SavedModel loaded as a sub-module, by path and signature.

  Each signature input is fed from the behaviour input of the same name,
  or of the name input_map gives it ({signature input: behaviour input}),
  or a constant from constant_inputs ({name: int}, broadcast to [B] for a
  [B] input); an input named top_n gets the branch's top_n unless given.
  Checked when the branch is built, so a wrong signature never reaches
  serving.
  """

  def __init__(self, path: str, top_n: int, signature: str = "serving_default",
               input_map=None, constant_inputs=None, name="saved_model_branch",
               vocabulary=None):
    """vocabulary: an ItemVocabulary if the model speaks the catalogue's
    own ids: its answers are mapped back (ids outside it become -1)."""
    super().__init__(top_n, name)
    self.vocabulary = vocabulary
    self.loaded = tf.saved_model.load(path)
    if signature not in self.loaded.signatures:
      raise ValueError(f"{name}: {path} has no signature {signature!r}; it "
                       f"has {sorted(self.loaded.signatures.keys())}")
    self._fn = self.loaded.signatures[signature]
    self._feeds = _signature_feeds(
        self._fn, f"signature {signature!r} of {path}", dict(input_map or {}),
        {"top_n": top_n, **(constant_inputs or {})},
        {s.name: s for s in behavior_input_specs(vocabulary)})

  def __call__(self, inputs):
    batch = tf.shape(inputs["item_ids"])[0]
    feeds = {}
    for name, (source, spec) in self._feeds.items():
      if isinstance(source, str):
        feeds[name] = inputs[source]
      else:
        value = tf.constant(source, spec.dtype)
        feeds[name] = tf.fill([batch], value) if spec.shape.rank == 1 else value
    out = self._fn(**feeds)
    ids = out["item_ids"][:, :self.top_n]
    if self.vocabulary is not None:
      ids = self.vocabulary.to_dense(ids)
    return ids, tf.cast(out["scores"][:, :self.top_n], tf.float32)


def _expected_inputs():
  return ", ".join(f"{s.name} {s.dtype.name} {s.shape}"
                   for s in BEHAVIOR_INPUT_SPECS)


def _signature_feeds(fn, what, input_map, constants,
                     behavior_inputs=BEHAVIOR_INPUTS):
  """{signature input: (behaviour input name | constant, spec)}, checked
  against behavior_inputs ({name: TensorSpec})."""
  specs = fn.structured_input_signature[1]
  feeds, problems = {}, []
  for name, spec in sorted(specs.items()):
    source = input_map.get(name, name)
    if name in constants and name not in input_map:
      feeds[name] = (int(constants[name]), spec)
      if spec.shape.rank not in (0, 1):
        problems.append(f"constant input {name} needs a [] or [B] input, "
                        f"the signature has {spec.shape}")
    elif source in behavior_inputs:
      want = behavior_inputs[source]
      if spec.dtype != want.dtype or spec.shape.rank != want.shape.rank:
        problems.append(f"input {name} is {spec.dtype.name} {spec.shape}, "
                        f"behaviour input {source} is {want.dtype.name} "
                        f"{want.shape}")
      feeds[name] = (source, spec)
    else:
      problems.append(f"input {name} ({spec.dtype.name} {spec.shape}) is "
                      f"not a behaviour input" +
                      (f" (input_map maps it to {source!r})"
                       if name in input_map else ""))
  unknown = set(input_map) - set(specs)
  if unknown:
    problems.append(f"input_map names inputs the signature lacks: "
                    f"{sorted(unknown)}")
  outputs = fn.structured_outputs
  for key in ("item_ids", "scores"):
    if key not in outputs or outputs[key].shape.rank != 2:
      problems.append(f"needs a [B, N] output {key!r}; outputs are "
                      f"{ {k: str(v.shape) for k, v in outputs.items()} }")
  if problems:
    raise ValueError(
        f"{what} cannot be a recall branch: " + "; ".join(problems) +
        f". Expected inputs: the behaviour inputs {_expected_inputs()} (by "
        "name, or renamed with input_map), or constants (constant_inputs).")
  return feeds


class MultiBranchRecallModel(tf.Module):
  """Named branches + a MergeStage; serves like GenerativeRecallModel (with
  an item vocabulary, in the catalogue's own ids)."""

  def __init__(self, branches: dict, merge: MergeStage, name="multi_branch",
               item_vocabulary=None):
    super().__init__(name=name)
    names = tuple(branches)
    if names != merge.config.branch_names:
      raise ValueError(f"branches {names} differ from the merge config's "
                       f"branch_names {merge.config.branch_names}")
    self.branches = dict(branches)
    self.merge = merge
    self.item_vocabulary = item_vocabulary
    self._input_specs = behavior_input_specs(item_vocabulary)
    # Traced once for both signatures (the serving one drops the branches).
    self._recall_all = tf.function(self._recall_all_lists,
                                   input_signature=self._input_specs)

  @property
  def branch_names(self):
    return self.merge.config.branch_names

  def recall(self, inputs: dict, external_item_ids=None):
    """(merged outputs, {branch name: (item_ids, scores)}), in item-table
    ids; external_item_ids: the request's own ids, for the branches that
    take them."""
    per_branch = {
        name: branch(inputs if branch.vocabulary is None else
                     dict(inputs, item_ids=external_item_ids))
        for name, branch in self.branches.items()}
    merged = self.merge([per_branch[n][0] for n in self.branch_names],
                        [per_branch[n][1] for n in self.branch_names])
    return merged, per_branch

  def _recall_all_lists(self, item_ids, timestamps, action_types, lengths,
                        request_time):
    """Merged outputs + <name>_item_ids / <name>_scores."""
    inputs = dict(item_ids=item_ids, timestamps=timestamps,
                  action_types=action_types, lengths=lengths,
                  request_time=request_time)
    vocabulary = self.item_vocabulary
    if vocabulary is not None:
      inputs["item_ids"] = vocabulary.to_dense(item_ids)
    merged, per_branch = self.recall(inputs, item_ids)
    out = dict(merged)
    for name, (ids, scores) in per_branch.items():
      out[f"{name}_item_ids"] = ids
      out[f"{name}_scores"] = scores
    if vocabulary is not None:  # Every id list answers in the catalogue's ids.
      for key in out:
        if key.endswith("item_ids"):
          out[key] = vocabulary.to_external(out[key])
    return out

  def serving_function(self):
    """serving_default: item_ids, scores, branch [B, N], N = sum(quotas)."""

    @tf.function(input_signature=self._input_specs)
    def serve(item_ids, timestamps, action_types, lengths, request_time):
      out = self._recall_all(item_ids, timestamps, action_types, lengths,
                             request_time)
      return {k: out[k] for k in ("item_ids", "scores", "branch")}

    return serve

  def extra_signatures(self):
    """{"branches": merged outputs + each branch's own list}, for
    evaluating each branch alone in the same graph."""
    return {BRANCHES_SIGNATURE: self._recall_all}

  def extra_files(self):
    """assets.extra files: the branch names the `branch` output indexes."""
    return {BRANCHES_FILE: json.dumps({
        "branches": list(self.branch_names),
        "quotas": list(self.merge.config.quotas),
        "normalization": self.merge.config.normalization})}
