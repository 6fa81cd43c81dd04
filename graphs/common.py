"""What every scene shares: the SID template around a click history."""
from graphs import vocabulary
from tf_genrec.builders.config import (BehaviorConfig, RecallGraphConfig,
                                       RetrievalConfig)
from tf_genrec.core.prompt import PromptTemplate


def history_scene(name, prefix, num_levels, codebook_size, max_history,
                  max_context_len, context_input, max_beam_width,
                  default_beam_width, default_top_n, exclude_history,
                  full_items=0, old_item_levels=1):
  """prefix + context + sid(item_1) , ... , sid(item_n) , -- the suffix equals
  the separator so training can run a causal LM over whole histories in
  exactly the serving template (see PromptTemplate, also for the compression
  of full_items / old_item_levels)."""
  template = PromptTemplate(
      prefix_ids=vocabulary.encode(prefix),
      separator_ids=vocabulary.encode(","),
      suffix_ids=vocabulary.encode(","),
      sid_offset=vocabulary.SID_OFFSET,
      num_levels=num_levels,
      codebook_size=codebook_size,
      pad_token_id=vocabulary.PAD_ID,
      max_prompt_len=(16 + max_context_len +
                      max_history * (num_levels + 1)),
      full_items=full_items,
      old_item_levels=old_item_levels,
  )
  return RecallGraphConfig(
      name=name,
      template=template,
      behavior=BehaviorConfig(max_len=max_history, dedup_mode="consecutive"),
      retrieval=RetrievalConfig(max_beam_width=max_beam_width,
                                default_beam_width=default_beam_width,
                                default_top_n=default_top_n,
                                exclude_history=exclude_history),
      context_input=context_input,
      max_context_len=max_context_len,
  )
