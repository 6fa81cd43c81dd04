"""From a saved HSTU model to an exported HSTU scene (tf-genrec export)."""
import numpy as np

import graphs
from tf_genrec.builders.export import export_saved_model
from tf_genrec.builders.hstu import HSTURankingModel, HSTURetrievalModel
from tf_genrec.models.hstu.ranking import load_hstu_ranking
from tf_genrec.models.hstu.retrieval import load_hstu_retrieval


def warmup_inputs(item_ids, with_candidates):
  """One small request replayed at model load."""
  history = np.asarray(item_ids[:5], np.int64)[np.newaxis]
  n = history.shape[1]
  inputs = {"item_ids": history,
            "timestamps": np.arange(1, n + 1, dtype=np.int64)[np.newaxis],
            "action_types": np.zeros_like(history, np.int32),
            "lengths": np.array([n], np.int32),
            "request_time": np.array([n + 1], np.int64)}
  if with_candidates:
    inputs["candidate_item_ids"] = np.asarray(item_ids[:8],
                                              np.int64)[np.newaxis]
  return [inputs]


def export_hstu_scene(graph, model_dir, base_path, version, max_history,
                      default_top_n, model_name):
  """Exports scene `graph` (graphs.HSTU_SCENES) of the model in model_dir;
  the model's row r is item id r (the project's datasets index items so)."""
  scene = graphs.get(graph)
  if graph == "hstu_retrieval":
    model = load_hstu_retrieval(model_dir)
    item_ids = np.arange(model.num_items, dtype=np.int64)
    servable = HSTURetrievalModel(
        scene.graph_config(max_history=max_history,
                           default_top_n=default_top_n,
                           max_top_n=max(default_top_n, 1000)),
        model, item_ids)
  else:
    model = load_hstu_ranking(model_dir)
    item_ids = np.arange(model.num_items, dtype=np.int64)
    servable = HSTURankingModel(scene.graph_config(max_history=max_history),
                                model, item_ids)
  return export_saved_model(servable, base_path, version,
                            warmup_inputs(item_ids, graph == "hstu_ranking"),
                            model_name)
