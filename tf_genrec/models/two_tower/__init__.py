"""Two-tower retrieval: a user tower over the click history, an item tower,
in-batch softmax training, and pluggable top-k retrieval."""
