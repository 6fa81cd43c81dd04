"""SASRec: the item-id sequential recommender (model + save/load), its
trainer with validation early stopping; a baseline and the teacher of
distillation."""
