"""Search recall: query token ids + click history.

Prompt: "<bos> query : <query tokens> <sid_1> , ... <sid_n> ," -- the query
arrives pre-tokenised as context_ids (PromptAssemble puts it right after the
prefix).
"""
from graphs.common import history_scene


def graph_config(num_levels, codebook_size, max_history=50,
                 max_query_len=32, max_beam_width=256, default_beam_width=64,
                 default_top_n=300, exclude_history=False, full_items=0,
                 old_item_levels=1):
  return history_scene(
      "search_recall", "<bos> query :", num_levels, codebook_size,
      max_history, max_context_len=max_query_len, context_input=True,
      max_beam_width=max_beam_width, default_beam_width=default_beam_width,
      default_top_n=default_top_n, exclude_history=exclude_history,
      full_items=full_items, old_item_levels=old_item_levels)
