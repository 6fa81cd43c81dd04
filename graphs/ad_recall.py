"""Ad / recommendation recall: (optional profile tokens) + click history.

Prompt: "<bos> user clicked in time order : <sid_1> , <sid_2> , ... <sid_n> ,"
("<bos> user profile : <profile tokens> <sid_1> , ..." with a profile), and
the generator continues with the next item's semantic ID.
"""
from graphs.common import history_scene


def graph_config(num_levels, codebook_size, with_profile=False,
                 max_history=50, max_profile_len=64, max_beam_width=256,
                 default_beam_width=64, default_top_n=300,
                 exclude_history=False, full_items=0, old_item_levels=1):
  # PromptAssemble puts the context (profile tokens) right after the prefix.
  prefix = ("<bos> user profile :" if with_profile else
            "<bos> user clicked in time order :")
  return history_scene(
      "ad_recall", prefix, num_levels, codebook_size, max_history,
      max_context_len=max_profile_len, context_input=with_profile,
      max_beam_width=max_beam_width, default_beam_width=default_beam_width,
      default_top_n=default_top_n, exclude_history=exclude_history,
      full_items=full_items, old_item_levels=old_item_levels)
