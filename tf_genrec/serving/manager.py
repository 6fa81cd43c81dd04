"""Models and their versions: version policy, labels, file-system polling.

Like TF Serving's AspiredVersionsManager with its availability-preserving
policy: a new version is loaded (and warmed up) before old ones are unloaded,
and unloading waits for requests still running on the old version.
"""
import contextlib
import dataclasses
import os
import threading

import grpc
import tensorflow as tf
from absl import logging
from tensorflow_serving.apis import get_model_status_pb2

from tf_genrec.serving.config import validate_model_server_config
from tf_genrec.serving.errors import ServingError, invalid, not_found
from tf_genrec.serving.servable import Servable

UNKNOWN_MODEL_LABEL = "__unknown__"
State = get_model_status_pb2.ModelVersionStatus.State


@dataclasses.dataclass
class VersionStatus:
  state: int
  error_code: grpc.StatusCode = grpc.StatusCode.OK
  error_message: str = ""


def versions_on_disk(base_path):
  """Numeric sub-directories holding a saved_model.pb (others are ignored,
  e.g. an exporter's temporary directory)."""
  if not tf.io.gfile.isdir(base_path):
    return []
  versions = []
  for name in tf.io.gfile.listdir(base_path):
    name = name.rstrip("/")
    if name.isdigit() and tf.io.gfile.exists(
        os.path.join(base_path, name, "saved_model.pb")):
      versions.append(int(name))
  return sorted(versions)


def aspired_versions(model_config, on_disk):
  """Applies model_version_policy (default: the latest version)."""
  policy = model_config.model_version_policy
  choice = policy.WhichOneof("policy_choice")
  if choice == "all":
    return set(on_disk)
  if choice == "specific":
    return set(policy.specific.versions) & set(on_disk)
  num = policy.latest.num_versions if choice == "latest" else 1
  return set(sorted(on_disk)[-max(num, 1):]) if on_disk else set()


class _Model:

  def __init__(self, config):
    self.config = config
    self.servables = {}  # version -> Servable, AVAILABLE only.
    self.status = {}  # version -> VersionStatus.


class ModelManager:
  """Loads/unloads servables per ModelServerConfig; hands out references."""

  def __init__(self, config, warmup=True, on_change=None, unload_timeout=60.0):
    """on_change() is called after a version became available or unloaded
    (e.g. to update health status). An unloaded version waits at most
    `unload_timeout` seconds for its in-flight requests, in the background."""
    validate_model_server_config(config)
    self._warmup = warmup
    self._unload_timeout = unload_timeout
    self._retiring = []  # Threads waiting for unloaded versions' requests.
    self._on_change = on_change or (lambda: None)
    self._lock = threading.Lock()  # Guards _models' dicts (fast path).
    self._poll_lock = threading.Lock()  # One poll/reload at a time.
    self._models = {m.name: _Model(m) for m in config.model_config_list.config}
    self._stop = threading.Event()
    self._thread = None

  # ---- lifecycle -------------------------------------------------------
  def start(self, poll_wait_seconds):
    """Loads the initial versions, then polls every `poll_wait_seconds`
    (<= 0: the file system is polled exactly once)."""
    self.poll()
    if poll_wait_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop,
                                      args=(poll_wait_seconds,), daemon=True,
                                      name="model-poller")
      self._thread.start()

  def _poll_loop(self, wait):
    while not self._stop.wait(wait):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        logging.exception("file-system poll failed")

  def stop(self):
    self._stop.set()
    if self._thread:
      self._thread.join()
    with self._poll_lock:
      for name in list(self._models):
        self._unload_model(name)
      retiring, self._retiring = self._retiring, []
    for thread in retiring:
      thread.join()

  # ---- loading ---------------------------------------------------------
  def poll(self):
    with self._poll_lock:
      for name in list(self._models):
        self._poll_model(self._models[name])

  def _poll_model(self, model):
    config = model.config
    on_disk = versions_on_disk(config.base_path)
    if not on_disk:
      logging.warning("no versions of model %s found under %s", config.name,
                      config.base_path)
    aspired = aspired_versions(config, on_disk)
    failed = {v for v, s in model.status.items()
              if s.error_code != grpc.StatusCode.OK}
    for version in sorted(aspired - set(model.servables) - failed):
      self._load(model, version)
    for version in sorted(set(model.servables) - aspired):
      self._unload(model, version)

  def _load(self, model, version):
    name = model.config.name
    path = os.path.join(model.config.base_path, str(version))
    with self._lock:
      model.status[version] = VersionStatus(State.LOADING)
    logging.info("loading model %s version %d from %s", name, version, path)
    try:
      servable = Servable(name, version, path)
      if self._warmup:
        servable.warmup()
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("failed to load model %s version %d", name, version)
      code = e.code if isinstance(e, ServingError) else grpc.StatusCode.UNKNOWN
      with self._lock:
        model.status[version] = VersionStatus(State.END, code, str(e))
      return
    with self._lock:
      model.servables[version] = servable
      model.status[version] = VersionStatus(State.AVAILABLE)
    logging.info("model %s version %d is available", name, version)
    self._on_change()

  def _unload(self, model, version):
    """Stops routing to the version at once; its in-flight requests finish
    on a thread of their own, so no lock is held while they run."""
    with self._lock:
      servable = model.servables.pop(version)
      status = model.status[version] = VersionStatus(State.UNLOADING)
    thread = threading.Thread(target=self._retire,
                              args=(model, version, servable, status),
                              daemon=True, name=f"retire-{version}")
    self._retiring = [t for t in self._retiring if t.is_alive()] + [thread]
    thread.start()

  def _retire(self, model, version, servable, status):
    if not servable.retire(self._unload_timeout):
      logging.warning("model %s version %d: requests still running after "
                      "unload_timeout_seconds=%.1f; dropped anyway",
                      model.config.name, version, self._unload_timeout)
    with self._lock:
      if model.status.get(version) is status:  # Not reloaded meanwhile.
        model.status[version] = VersionStatus(State.END)
    logging.info("unloaded model %s version %d", model.config.name, version)

  def _unload_model(self, name):
    model = self._models[name]
    for version in sorted(model.servables):
      self._unload(model, version)
    with self._lock:
      del self._models[name]

  def reload(self, config):
    """HandleReloadConfigRequest: adds, updates and removes models.

    Like TF Serving, version_labels must point to available versions; if one
    does not, the models are still (re)loaded but the labels of the new config
    are not applied (the previous labels stay).
    """
    validate_model_server_config(config)
    wanted = {m.name: m for m in config.model_config_list.config}
    with self._poll_lock:
      for name in [n for n in self._models if n not in wanted]:
        self._unload_model(name)
      old_labels = {}
      for name, model_config in wanted.items():
        with self._lock:
          model = self._models.get(name)
          if model is None:
            model = self._models[name] = _Model(model_config)
          old_labels[name] = dict(model.config.version_labels)
          model.config = model_config
        self._poll_model(model)
      errors = [
          f"version_labels['{label}'] of model '{name}' points to version "
          f"{version}, which is not available"
          for name, model_config in wanted.items()
          for label, version in model_config.version_labels.items()
          if version not in self._models[name].servables]
      if errors:
        with self._lock:
          for name, labels in old_labels.items():
            model_config = self._models[name].config
            model_config.version_labels.clear()
            model_config.version_labels.update(labels)
        raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                           "; ".join(errors))

  # ---- lookups ---------------------------------------------------------
  def resolve(self, name, version=None, label=None):
    """The servable a ModelSpec names, acquired; caller must release()."""
    with self._lock:
      model = self._models.get(name)
      if model is None:
        raise not_found(f"model_spec.name '{name}' is not a served model "
                        f"(models: {sorted(self._models)})")
      if label:
        labels = model.config.version_labels
        if label not in labels:
          raise invalid(f"model_spec.version_label '{label}' is not a label "
                        f"of model '{name}' (labels: {sorted(labels)})")
        version = labels[label]
      if version is None:
        if not model.servables:
          raise not_found(f"model '{name}' has no available version yet")
        version = max(model.servables)
      servable = model.servables.get(version)
      if servable is None:
        raise not_found(f"model_spec.version {version} of model '{name}' is "
                        f"not available (available: "
                        f"{sorted(model.servables)})")
      servable.acquire()
      return servable

  @contextlib.contextmanager
  def servable(self, name, version=None, label=None):
    servable = self.resolve(name, version, label)
    try:
      yield servable
    finally:
      servable.release()

  def status(self, name, version=None, label=None):
    """[(version, VersionStatus)] like GetModelStatus, newest first."""
    with self._lock:
      model = self._models.get(name)
      if model is None:
        raise not_found(f"model_spec.name '{name}' is not a served model")
      if label:
        if label not in model.config.version_labels:
          raise invalid(f"model_spec.version_label '{label}' is not a label "
                        f"of model '{name}'")
        version = model.config.version_labels[label]
      items = sorted(model.status.items(), reverse=True)
      if version is not None:
        items = [(v, s) for v, s in items if v == version]
        if not items:
          raise not_found(f"model_spec.version {version} of model '{name}' "
                          f"is unknown")
      return [(v, dataclasses.replace(s)) for v, s in items]

  def metric_label(self, name):
    """`name` if it is a configured model, else one shared label, so clients
    cannot grow the metrics' label sets."""
    with self._lock:
      return name if name in self._models else UNKNOWN_MODEL_LABEL

  def engine_stats(self):
    """[(model name, version, Servable.engine_stats())] of the available
    versions that run a generation engine."""
    with self._lock:
      servables = [s for m in self._models.values()
                   for s in m.servables.values()]
      for servable in servables:
        servable.acquire()
    out = []
    for servable in servables:
      try:
        stats = servable.engine_stats()
        if stats is not None:
          out.append((servable.model_name, servable.version, stats))
      finally:
        servable.release()
    return out

  def model_names(self):
    with self._lock:
      return sorted(self._models)

  def available_models(self):
    with self._lock:
      return sorted(n for n, m in self._models.items() if m.servables)
