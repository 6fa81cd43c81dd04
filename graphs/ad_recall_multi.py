"""Ad recall with classic branches beside the generative one, merged.

The generative branch is the ad_recall scene (same prompt template, so a
generator trained for ad_recall serves here unchanged); the branches file
(tf_genrec/builders/branch_config.py) adds two-tower, SASRec and the team's
own recall SavedModels, with their quotas in the merged list. Classic
branches clean the behaviour events with the scene's BehaviorConfig.
"""
import dataclasses

from graphs import ad_recall

PROMPT_SCENE = "ad_recall"


def graph_config(num_levels, codebook_size, **kwargs):
  """The generative branch's graph: ad_recall's, under this scene's name."""
  return dataclasses.replace(
      ad_recall.graph_config(num_levels, codebook_size, **kwargs),
      name="ad_recall_multi")


def build(config, branches_path, generative_model=None):
  """MultiBranchRecallModel from the branches file; config: graph_config's."""
  if config.context_input:
    raise ValueError("ad_recall_multi: profile context inputs are not "
                     "supported (classic branches read behaviour only)")
  # Imported here: the scene's config must load without the op library.
  from tf_genrec.builders.branch_config import (  # pylint: disable=import-outside-toplevel
      build_multi_branch, read_branches_config)
  specs, normalization = read_branches_config(branches_path)
  return build_multi_branch(specs, normalization, config.behavior,
                            generative_model)
