"""Which model serves on the robot, and how a new one takes over (ROS-free).

A verified model file is offered; a background thread builds its engine while the
current model keeps serving, runs it on the newest camera frame (the canary: right
shapes, finite values, sane agreement with the current model), then swaps it in
between two frames. Only after a successful swap is `current.json` replaced
(atomically), so a robot killed at any point restarts on the old model or the new
one, never a mix. The previous versions stay on disk for rollback; an older version
than the serving one is refused unless it is an explicit rollback.
"""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from durable_files import write_atomic
from rfnet.checkpoint import model_version
from rfnet.engines import SegmentationEngine
from seg_core import ConfigError

from .pipeline import SegmentationPipeline

log = logging.getLogger(__name__)

# What the node serves, the one vocabulary of model states: the manager moves between
# the last four, the node starts in "loading", and seg_msgs/ModelStatus has a
# STATE_<NAME> constant for each (the node maps them by name).
SERVING_STATES = ("loading", "serving", "updating", "failed", "rolled_back")


@dataclass(frozen=True)
class ModelManagerConfig:
    enabled: bool = False               # take signed model updates from the cloud (needs uplink.host)
    directory: str = "~/.cache/seg_edge/models"
    trusted_keys: str = ""              # folder of the fleet's trusted *.pub signing keys
    fleet: str = "default"
    keep_versions: int = 3              # model versions kept on disk (serving one included)
    canary_min_agreement: float = 0.3   # share of canary pixels where old and new model agree
    canary_wait_s: float = 60.0         # how long a new model waits for a camera frame to be tested on

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        if not self.trusted_keys:
            raise ConfigError("parameter updates.trusted_keys: give the folder of trusted model signing keys "
                              "(*.pub), or set updates.enabled false")
        if self.keep_versions < 2:
            raise ConfigError(f"parameter updates.keep_versions={self.keep_versions}: keep 2 or more "
                              "(the serving model and one to roll back to)")
        if not 0.0 <= self.canary_min_agreement <= 1.0:
            raise ConfigError(f"parameter updates.canary_min_agreement={self.canary_min_agreement}: use [0, 1]")
        if not 0.0 <= self.canary_wait_s < float("inf"):
            raise ConfigError(f"parameter updates.canary_wait_s={self.canary_wait_s}: use a finite time >= 0 s")


@dataclass(frozen=True)
class ServingModel:
    number: int        # the model's release number (0 = the model_path the node started with)
    version: str       # version id: sha256 prefix of the model file
    path: Path


@dataclass
class ManagerStatus:
    state: str = "serving"
    last_error: str = ""


class ModelManager:
    def __init__(self, cfg: ModelManagerConfig, pipeline: SegmentationPipeline, serving: ServingModel,
                 build_engine: Callable[[Path], SegmentationEngine],
                 on_change: Callable[[ServingModel, ManagerStatus], None] = lambda m, s: None):
        self.cfg = cfg
        self.directory = Path(cfg.directory).expanduser()
        self.pipeline = pipeline
        self.serving = serving
        self._build = build_engine
        self._on_change = on_change
        self.status = ManagerStatus()
        self._busy = threading.Lock()
        self._pending: tuple[int, Path, bool] | None = None   # the newest offer made while busy
        self.history: list[ServingModel] = []   # earlier models, newest last (for rollback)

    # -- start-up ------------------------------------------------------------------------
    @staticmethod
    def persisted(directory: str | Path) -> ServingModel | None:
        """The last model that went live here, if its file is intact."""
        pointer = Path(directory).expanduser() / "current.json"
        try:
            doc = json.loads(pointer.read_text())
            model = ServingModel(int(doc["number"]), str(doc["version"]), Path(doc["path"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not model.path.is_file() or model_version(model.path) != model.version:
            log.error("current.json points at %s, which is missing or changed; ignoring it", model.path)
            return None
        return model

    # -- updates -------------------------------------------------------------------------
    def offer(self, number: int, path: Path, rollback: bool = False) -> bool:
        """Start taking `path` (release `number`) into service in the background.

        False if refused: a downgrade that is not a rollback. An offer made while another
        update runs waits for it (only the newest waiting offer is kept)."""
        if number <= self.serving.number and not rollback:
            self._fail(f"refused model {number}: not newer than the serving model {self.serving.number} "
                       "(a downgrade needs an explicit rollback)", state=self.status.state)
            return False
        if not self._busy.acquire(blocking=False):
            self._pending = (number, Path(path), rollback)
            return True
        self._start(number, Path(path), rollback)
        return True

    def _start(self, number: int, path: Path, rollback: bool) -> None:
        threading.Thread(target=self._take_over, args=(number, path, rollback), name="model-update",
                         daemon=True).start()

    def rollback(self) -> bool:
        """Go back to the previous model (on a signed command, or after a bad update)."""
        if not self.history:
            self._fail("rollback asked for, but no earlier model is kept", state=self.status.state)
            return False
        previous = self.history[-1]
        return self.offer(previous.number, previous.path, rollback=True)

    def _take_over(self, number: int, path: Path, rollback: bool) -> None:
        try:
            self.status = ManagerStatus("updating", "")
            self._on_change(self.serving, self.status)
            candidate = ServingModel(number, model_version(path), path)
            engine = self._build(path)
            problem = self._canary(engine)
            if problem:
                engine.close()
                self._fail(f"model {number} failed its canary check: {problem}; still serving "
                           f"{self.serving.number}", state="rolled_back")
                return
            old_engine = self.pipeline.swap_engine(engine)
            old_engine.close()
            if rollback and self.history and self.history[-1].number == number:
                self.history.pop()
            else:
                self.history.append(self.serving)
            self.serving = candidate
            self._persist()
            self._prune()
            self.status = ManagerStatus("serving", "")
            log.info("now serving model %d (%s)%s", number, candidate.version, " after rollback" if rollback else "")
            self._on_change(self.serving, self.status)
        except Exception as e:  # a broken model must not take the robot down
            self._fail(f"model {number} could not be loaded: {type(e).__name__}: {e}; still serving "
                       f"{self.serving.number}", state="rolled_back")
        finally:
            pending, self._pending = self._pending, None
            if pending is not None and (pending[0] > self.serving.number or pending[2]):
                self._start(*pending)   # keeps holding _busy
            else:
                self._busy.release()

    def _canary(self, engine: SegmentationEngine) -> str:
        # A model kept on disk is offered again right after a restart, before the camera's
        # first frame: wait for one (this is the background update thread).
        deadline = time.monotonic() + self.cfg.canary_wait_s
        while (canary := self.pipeline.canary) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if canary is None:
            return f"no camera frame in {self.cfg.canary_wait_s:g} s to test it on"
        rgb, depth, serving_labels = canary
        new = engine.infer(rgb, depth)
        if new.labels.shape != serving_labels.shape:
            return f"labels of shape {new.labels.shape}, expected {serving_labels.shape}"
        if not (np.isfinite(new.confidence).all() and np.isfinite(new.logits_lowres).all()):
            return "non-finite outputs"
        agreement = float((new.labels == serving_labels).mean())
        if agreement < self.cfg.canary_min_agreement:
            return (f"agrees with the serving model on only {agreement:.0%} of the canary frame "
                    f"(minimum {self.cfg.canary_min_agreement:.0%})")
        return ""

    def _persist(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        doc = {"number": self.serving.number, "version": self.serving.version, "path": str(self.serving.path)}
        write_atomic(self.directory / "current.json", json.dumps(doc).encode())

    def _prune(self) -> None:
        """Keep the serving model and the newest earlier ones; delete older version folders."""
        keep = {m.path.parent for m in [self.serving, *self.history[-(self.cfg.keep_versions - 1):]]}
        versions = self.directory / "versions"
        for folder in versions.iterdir() if versions.is_dir() else ():
            if folder.is_dir() and folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        self.history = [m for m in self.history if m.path.parent in keep or not m.path.is_relative_to(versions)]

    def _fail(self, message: str, state: str) -> None:
        log.error(message)
        self.status = ManagerStatus(state, message)
        self._on_change(self.serving, self.status)
