"""Early stopping on a validation metric, keeping the best weights."""
import copy

from absl import logging


class ValidationEarlyStopping:
  """Tracks validation passes; `update` returns True when training should
  stop (patience passes without improvement); `best_weights` holds the
  weights of the best pass."""

  def __init__(self, select_metric: str, patience: int):
    self.select_metric, self.patience = select_metric, patience
    self.best, self.best_weights, self._waited = -1.0, None, 0

  def update(self, epoch, metrics, model) -> bool:
    if metrics[self.select_metric] > self.best:
      self.best, self._waited = metrics[self.select_metric], 0
      self.best_weights = copy.deepcopy(model.get_weights())
    else:
      self._waited += 1
    if self._waited >= self.patience:
      logging.info("early stop at epoch %d, best valid %s %.4f", epoch,
                   self.select_metric, self.best)
      return True
    return False

  def restore_best(self, model):
    if self.best_weights is not None:
      model.set_weights(self.best_weights)
