"""The bottom layer: facts every other layer shares (the prompt's token layout,
the op contract's constants), importable with the standard library alone, so
configs and scene definitions load where neither TensorFlow's op library nor
a model is available."""
