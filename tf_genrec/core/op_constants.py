"""Constants of the C++ op contract (custom_ops/*.cc), without loading the
op library: configs validate against them before any graph is built."""

# GenrecBehaviorSequence's `dedup` attribute and missing-item policies.
DEDUP_MODES = ("none", "consecutive", "keep_last")
MISSING_MODES = ("drop", "error")

# Most items one CodesToItems call returns (kMaxTopN in item_table_ops.cc).
MAX_TOP_N = 10_000
