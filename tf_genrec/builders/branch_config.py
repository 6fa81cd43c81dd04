"""The branches file of a multi-branch export, validated in one place.

A JSON file (docs/integration.md shows one) naming each branch, its kind,
where its model lives, how many candidates it returns (top_n) and its quota
in the merged list:

  {"normalization": "rank",
   "branches": [
     {"name": "generative", "kind": "generative", "quota": 150,
      "top_n": 300, "beam_width": 256},
     {"name": "sasrec", "kind": "sasrec", "model_dir": "runs/distill/sasrec",
      "quota": 100, "top_n": 300},
     {"name": "two_tower", "kind": "two_tower",
      "model_dir": "runs/branches/two_tower", "quota": 50, "top_n": 300},
     {"name": "legacy", "kind": "saved_model", "path": "/models/legacy/7",
      "signature": "serving_default", "input_map": {"history": "item_ids"},
      "constant_inputs": {"beam_width": 64}, "quota": 0, "top_n": 300}]}

The generative branch is the export's own checkpoint + item table. With an
item vocabulary (export --item_vocabulary) the merged model takes and
returns the catalogue's own ids; a saved_model branch with
"external_ids": true is then fed those ids and answers in them (its answers
mapped back through the vocabulary; ids outside it are dropped), while the
other branches work on the item table's ids.
"""
import dataclasses
import json
from typing import Optional, Tuple

from tf_genrec.builders.merge import MergeConfig, MergeStage
from tf_genrec.builders.multi_branch import (GenerativeBranch,
                                             MultiBranchRecallModel,
                                             RetrievalBranch, SASRecQuery,
                                             SavedModelBranch, TwoTowerQuery)
from tf_genrec.builders.stages import BehaviorFeatures
from tf_genrec.models.sasrec.model import load_sasrec
from tf_genrec.models.two_tower.model import load_two_tower
from tf_genrec.models.top_k import BruteForceTopK

BRANCH_KINDS = ("generative", "two_tower", "sasrec", "saved_model")
# Which keys each kind needs / may have besides name, kind, quota, top_n.
_REQUIRED = {"generative": (), "two_tower": ("model_dir",),
             "sasrec": ("model_dir",), "saved_model": ("path",)}
_OPTIONAL = {"generative": ("beam_width",), "two_tower": (), "sasrec": (),
             "saved_model": ("signature", "input_map", "constant_inputs",
                             "external_ids")}


@dataclasses.dataclass(frozen=True)
class BranchSpec:
  name: str
  kind: str
  quota: int
  top_n: int = 300
  model_dir: Optional[str] = None
  path: Optional[str] = None
  beam_width: Optional[int] = None
  signature: str = "serving_default"
  input_map: Tuple[Tuple[str, str], ...] = ()
  constant_inputs: Tuple[Tuple[str, int], ...] = ()
  external_ids: bool = False

  @classmethod
  def from_dict(cls, d: dict) -> "BranchSpec":
    what = f"branch {d.get('name', '?')!r}"
    kind = d.get("kind")
    if kind not in BRANCH_KINDS:
      raise ValueError(f"{what}: kind must be one of {BRANCH_KINDS}, got "
                       f"{kind!r}")
    allowed = {"name", "kind", "quota", "top_n", *_REQUIRED[kind],
               *_OPTIONAL[kind]}
    extra = sorted(set(d) - allowed)
    missing = sorted({"name", "quota", *_REQUIRED[kind]} - set(d))
    if extra or missing:
      raise ValueError(f"{what} ({kind}): unknown keys {extra}, missing "
                       f"keys {missing}; allowed: {sorted(allowed)}")
    d = dict(d, input_map=tuple(sorted(d.get("input_map", {}).items())),
             constant_inputs=tuple(sorted(
                 d.get("constant_inputs", {}).items())))
    return cls(**d)

  def __post_init__(self):
    if not self.name.isidentifier():
      raise ValueError(f"branch name must be an identifier (it names "
                       f"outputs <name>_item_ids), got {self.name!r}")
    if self.top_n < max(self.quota, 1):
      raise ValueError(f"branch {self.name!r}: top_n must be >= max(quota, "
                       f"1) = {max(self.quota, 1)}, got {self.top_n}")


def read_branches_config(path):
  """(list of BranchSpec, normalization) from the JSON branches file."""
  with open(path) as f:
    raw = json.load(f)
  unknown = sorted(set(raw) - {"branches", "normalization"})
  if unknown or not raw.get("branches"):
    raise ValueError(f"{path}: needs a non-empty 'branches' list (and an "
                     f"optional 'normalization'); unknown keys {unknown}")
  specs = [BranchSpec.from_dict(b) for b in raw["branches"]]
  kinds = [s.kind for s in specs]
  if kinds.count("generative") > 1:
    raise ValueError(f"{path}: at most one generative branch, got "
                     f"{kinds.count('generative')}")
  return specs, raw.get("normalization", "rank")


def build_multi_branch(specs, normalization, behavior_config,
                       generative_model=None):
  """MultiBranchRecallModel from BranchSpecs.

  behavior_config: how classic branches clean the behaviour events (the
  scene's BehaviorConfig, as the generative branch does).
  generative_model: the GenerativeRecallModel of a "generative" branch;
  its item vocabulary, if any, becomes the merged model's.
  """
  vocabulary = getattr(generative_model, "item_vocabulary", None)
  merge = MergeStage(MergeConfig(tuple(s.name for s in specs),
                                 tuple(s.quota for s in specs),
                                 normalization))
  branches = {}
  for s in specs:
    if s.kind == "generative":
      if generative_model is None:
        raise ValueError(f"branch {s.name!r}: a generative branch needs the "
                         "export's checkpoint and item table")
      branches[s.name] = GenerativeBranch(
          generative_model, s.top_n,
          s.beam_width or generative_model.config.retrieval.default_beam_width)
    elif s.kind == "two_tower":
      model = load_two_tower(s.model_dir)
      branches[s.name] = RetrievalBranch(
          BehaviorFeatures(behavior_config), TwoTowerQuery(model),
          BruteForceTopK(model.item_embeddings()), s.top_n, s.name)
    elif s.kind == "sasrec":
      model = load_sasrec(s.model_dir)
      branches[s.name] = RetrievalBranch(
          BehaviorFeatures(behavior_config), SASRecQuery(model),
          BruteForceTopK(model.item_emb.embeddings[1:]), s.top_n, s.name)
    else:
      if s.external_ids and vocabulary is None:
        raise ValueError(f"branch {s.name!r}: external_ids needs the "
                         "export's item vocabulary (--item_vocabulary)")
      branches[s.name] = SavedModelBranch(
          s.path, s.top_n, s.signature, dict(s.input_map),
          dict(s.constant_inputs), name=s.name,
          vocabulary=vocabulary if s.external_ids else None)
  return MultiBranchRecallModel(branches, merge, item_vocabulary=vocabulary)
