"""The segmentation node without ROS: frames in as arrays, what to publish out.

`EdgeRuntime` owns everything between the camera messages and the publishers: stamp
pairing of RGB and depth with keep-latest hand-over to the worker, the checks on the
converted images (size, depth registration), the pipeline (engine, mining), invalid
depth accounting, hard-frame upload, refined results from the cloud, signed model
updates and rollback, INT8 calibration, counters and the health that diagnostics show.
The rclpy node (node.py) only declares parameters, converts messages to arrays and
back, and publishes. Everything here is tested without DDS (tests/unit/test_runtime.py).

Threads: the ROS callbacks call `rgb_arrived`/`depth_arrived`; one worker calls
`next_input` and `process`; the MQTT thread delivers refined results; the executor
calls `health` and `apply_live`. Model builds run on their own threads.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfnet.checkpoint import CheckpointError
from rfnet.classes import ClassFileError, load_class_list
from rfnet.engines import (CALIBRATED, Calibration, EngineConfig, EngineError, ModelSpec, backend_named,
                           load_calibration, load_engine, save_calibration)
from rfnet.preprocessing import PreprocessConfig
from segwire import HardFrame, RefinedResult

from .config import EdgeNodeConfig
from .frame_pairing import StampPairer
from .hard_mining import HardExampleMiner
from .int8_calibration import CalibrationCollector, calibration_from_index
from .keep_latest import LatestSlot
from .model_manager import ManagerStatus, ModelManager, ServingModel
from .node_stats import NodeStats
from .overlay import colour_overlay
from .parameter_info import LIVE_PARAMETERS
from .pipeline import SegmentationPipeline
from .rejections import REASONS, ImageConversionError, RecentEvents, ThrottledLog
from .uplink import MqttUplink

log = logging.getLogger("seg_edge_node")

LOG_THROTTLE_S = 5.0
# RFNet downsamples by 32: a smaller image has less than one cell of the deepest feature
# map, so whatever it resizes to, the labels would be made up.
MIN_IMAGE_SIDE = 32
OK, WARN, ERROR = 0, 1, 2
COUNTERS = ("rgb_received", "depth_received", "frames_segmented", "hard_frames", "processing_errors",
            "depth_all_invalid", "depth_frames_with_invalid_pixels", "refined_published", "rejected_rgb",
            "rejected_depth") + tuple(f"rejected_{source}_{reason}" for source, reasons in REASONS.items()
                                      for reason in reasons)


class StartupError(RuntimeError):
    """Configuration or model problem found at start; the node exits with its message."""


@dataclass(frozen=True)
class FrameOutput:
    """What to publish for one camera frame."""

    stamp_ns: int
    frame_id: str
    frame_uuid: str
    labels: np.ndarray                 # (H, W) uint8 class ids, camera resolution
    confidence: np.ndarray             # (H, W) uint8, top-1 probability * 255
    hardness_score: float
    mining_policy: str
    is_hard: bool
    model_version: str
    inference_ms: float
    overlay: np.ndarray | None         # (H, W, 3) uint8 RGB, when asked for
    colour_labels: np.ndarray | None   # (H, W, 3) uint8 RGB palette colours, when asked for


@dataclass(frozen=True)
class RefinedOutput:
    """The cloud's refined mask of an uploaded frame."""

    stamp_ns: int
    frame_id: str
    frame_uuid: str
    labels: np.ndarray
    refiner: str
    model_version: str


@dataclass(frozen=True)
class ModelState:
    state: str          # loading | serving | updating | failed | rolled_back
    version: str
    error: str = ""


@dataclass(frozen=True)
class Health:
    level: int                         # OK, WARN or ERROR
    message: str
    values: dict[str, str]


class EdgeRuntime:
    def __init__(self, config: EdgeNodeConfig, *, on_refined: Callable[[RefinedOutput], None] = lambda r: None,
                 on_model_state: Callable[[ModelState], None] = lambda s: None,
                 wall_clock_ns: Callable[[], int] = time.time_ns, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._on_refined = on_refined
        self._on_model_state = on_model_state
        self._wall_ns = wall_clock_ns
        self._clock = clock
        self._started_at = clock()
        self.stats = NodeStats()
        for name in COUNTERS:
            self.stats.count(name, 0)
        self._events = RecentEvents(config.diagnostics_window_s, clock)
        self._throttled = ThrottledLog(log, LOG_THROTTLE_S, clock)
        self._slot: LatestSlot[tuple[Any, Any]] = LatestSlot()
        self._rgb_arrivals: deque[float] = deque(maxlen=31)
        self._depth_arrived_at: float | None = None
        self._last_stamps = {"rgb": 0, "depth": 0}
        self._unpaired_seen = 0
        self._collector: CalibrationCollector | None = None
        self._int8_problem = ""
        self._uplink = self._model_link = self._downloader = self._manager = None
        self._emit_state("loading", "")
        try:
            config.validate()
            self._pairer = (StampPairer(int(config.pair_tolerance_s * 1e9), int(config.pair_timeout_s * 1e9))
                            if config.use_depth else None)
            self._load_model()
        except (ValueError, CheckpointError, EngineError, ClassFileError) as e:
            self._emit_state("failed", "", str(e))
            raise StartupError(str(e)) from e
        if config.uplink.enabled:
            self._uplink = MqttUplink(config.uplink, self._refined_arrived, lambda: self.model_version,
                                      config.depth_units_per_metre)
            self._uplink.start()
        if config.updates.enabled:
            try:
                self._start_model_updates()
            except (ValueError, OSError) as e:
                raise StartupError(f"model updates: {e}") from e
        self._emit_state("serving", self.model_version)
        log.info("serving model %s on %s %s (%s, %dx%d); rgb=%s%s", self.model_version, config.backend,
                 self.precision, self.spec.mode, self.spec.input_height, self.spec.input_width, config.rgb_topic,
                 f" depth={config.depth_topic}" if config.use_depth else " (RGB only, use_depth false)")

    # -- model -------------------------------------------------------------------------
    @property
    def precision(self) -> str:
        return self.pipeline.engine.precision

    def _engine_config(self, path: Path | str, precision: str, calibration: Calibration | None = None):
        c = self.config
        return EngineConfig(str(path), self.spec, c.backend, c.cache_dir, c.device, c.threads, precision, calibration)

    def _load_model(self) -> None:
        cfg = self.config
        self.classes = load_class_list(cfg.class_file or None)
        self.palette = self.classes.palette()
        self.spec = ModelSpec(self.classes.num_classes, cfg.input_height, cfg.input_width, cfg.use_depth)
        self.preprocess = PreprocessConfig(cfg.input_height, cfg.input_width, cfg.depth_units_per_metre)
        model_path, number = cfg.model_path, 0
        live = ModelManager.persisted(cfg.updates.directory) if cfg.updates.enabled else None
        if live is not None:   # an update went live before the last shutdown: keep serving it
            model_path, number = str(live.path), live.number
            log.info("serving model update %d from the last run (%s)", live.number, live.path)
        log.info("loading %s with %s ...", model_path, cfg.backend)
        loaded = load_engine(self._engine_config(model_path, self._start_precision()))
        self.model_version = loaded.version
        self._serving = ServingModel(number, loaded.version, Path(model_path))
        self.pipeline = SegmentationPipeline(loaded.engine, self.preprocess, HardExampleMiner(cfg.mining))

    def _start_precision(self) -> str:
        """The precision to serve from the start; INT8 without calibration frames starts at the float one."""
        cfg = self.config
        precision = cfg.resolved_precision
        if precision not in CALIBRATED:
            return precision
        if cfg.int8.calibration_index:
            calibration = calibration_from_index(cfg.int8.calibration_index, cfg.int8, self.preprocess,
                                                 cfg.use_depth)
            save_calibration(cfg.cache_dir, self.spec, calibration)
            return precision
        if load_calibration(cfg.cache_dir, self.spec) is not None:
            return precision
        fallback = backend_named(cfg.backend).precisions[0]
        log.info("precision %s: serving %s until %d camera frames (every %dth) are gathered to calibrate on",
                 precision, fallback, cfg.int8.calibration_frames, cfg.int8.sample_every)
        self._collector = CalibrationCollector(cfg.int8, cfg.rgb_topic)
        return fallback

    def _build_engine(self, path: Path):
        """An engine for an updated model file, at the precision this node serves now."""
        return load_engine(self._engine_config(path, self.precision)).engine

    def _calibration_ready(self, calibration: Calibration) -> None:
        """A calibration set is complete (worker thread): store it, build the INT8 engine in the background."""
        try:
            save_calibration(self.config.cache_dir, self.spec, calibration)
        except OSError as e:   # a full disk costs the reuse after a restart, not the INT8 engine
            log.warning("could not store the INT8 calibration frames in %s: %s", self.config.cache_dir, e)
        threading.Thread(target=self._switch_to_int8, args=(calibration,), name="int8-build", daemon=True).start()

    def _switch_to_int8(self, calibration: Calibration) -> None:
        serving = self._manager.serving if self._manager is not None else self._serving
        precision = self.config.resolved_precision
        try:
            engine = load_engine(self._engine_config(serving.path, precision, calibration)).engine
            rgb, depth, float_labels = self.pipeline.canary
            agreement = float((engine.infer(rgb, depth).labels == float_labels).mean())
            if agreement < self.config.int8.min_agreement:
                engine.close()
                raise EngineError(f"its labels agree with the {self.precision} model's on only {agreement:.0%} of "
                                  f"the newest frame (int8.min_agreement {self.config.int8.min_agreement:.0%})")
            current = self._manager.serving if self._manager is not None else self._serving
            if current != serving:   # a model update went live meanwhile, already built at the new precision
                engine.close()
                return
            self.pipeline.swap_engine(engine).close()
            self._int8_problem = ""
            log.info("now serving model %s at %s (calibrated on %s; agrees with the float model on %.1f%% "
                     "of the newest frame)", self.model_version, precision, calibration.source, 100 * agreement)
        except Exception as e:   # noqa: BLE001 -- the float model keeps serving whatever went wrong
            self._int8_problem = f"{precision} engine not used: {type(e).__name__}: {e}"
            log.error("%s; still serving %s", self._int8_problem, self.precision)

    def _start_model_updates(self) -> None:
        from segwire import make_client
        from segwire.model_keys import load_trusted_keys   # needs cryptography, only with updates

        from .model_download import DownloadOptions, ModelDownloader, MqttModelLink
        from .model_rollback import RollbackCommands

        cfg, up = self.config.updates, self.config.uplink
        trusted = load_trusted_keys(Path(cfg.trusted_keys).expanduser())
        self._manager = ModelManager(cfg, self.pipeline, self._serving, self._build_engine, self._model_changed)
        # Rollback commands are signed with the manifests' keys and come over the same link.
        rollback = RollbackCommands(cfg.directory, trusted, up.robot_id, cfg.fleet,
                                    lambda: self._manager.serving.number,
                                    lambda number, path: self._manager.offer(number, path, rollback=True),
                                    installed_model=self.config.model_path, on_refused=self._command_refused)
        self._downloader = ModelDownloader(cfg.directory, trusted, up.robot_id, lambda: self._manager.serving.number,
                                           self._model_ready, DownloadOptions(fleet=cfg.fleet), commands=rollback)
        self._downloader.start()
        client = make_client(f"{up.client_id or 'seg-edge-' + up.robot_id}-models", username=up.username,
                             password=up.password, password_file=up.password_file, tls=up.tls,
                             ca_file=up.ca_file, cert_file=up.cert_file, key_file=up.key_file)
        self._model_link = MqttModelLink(self._downloader, client)
        self._model_link.start(up.host, up.port, up.keepalive_s)

    def _model_ready(self, manifest, path: Path) -> None:
        """A verified model file is on disk (downloader thread)."""
        want = {"num_classes": self.spec.num_classes, "input_height": self.spec.input_height,
                "input_width": self.spec.input_width, "use_depth": self.spec.use_depth}
        got = {k: manifest.spec.get(k) for k in want}
        if got != want:
            self._model_changed(self._manager.serving, ManagerStatus(
                "rolled_back", f"model {manifest.version} is for {got}, this node runs {want}; not used"))
            return
        self._manager.offer(manifest.version, path)

    def _command_refused(self, message: str) -> None:
        """A rollback command was refused (downloader thread): the current model keeps serving."""
        self._model_changed(self._manager.serving, ManagerStatus(self._manager.status.state, message))

    def _model_changed(self, serving: ServingModel, status: ManagerStatus) -> None:
        self.model_version = serving.version
        self._emit_state(status.state, serving.version, status.last_error)
        if status.last_error:
            log.error(status.last_error)

    def _emit_state(self, state: str, version: str, error: str = "") -> None:
        self._on_model_state(ModelState(state, version, error))

    # -- input: callbacks, cheap and never blocking ------------------------------------------
    def rgb_arrived(self, stamp_ns: int, payload: Any) -> None:
        self.stats.count("rgb_received")
        self._rgb_arrivals.append(self._clock())
        self._last_stamps["rgb"] = stamp_ns
        if self._pairer is None:
            self._slot.put((payload, None))
            return
        pair = self._pairer.add_rgb(stamp_ns, payload)
        if pair is not None:
            self._slot.put((pair.rgb, pair.depth))
        self._note_unpaired()

    def depth_arrived(self, stamp_ns: int, payload: Any) -> None:
        self.stats.count("depth_received")
        self._depth_arrived_at = self._clock()
        self._last_stamps["depth"] = stamp_ns
        if self._pairer is None:
            return
        pair = self._pairer.add_depth(stamp_ns, payload)
        if pair is not None:
            self._slot.put((pair.rgb, pair.depth))
        self._note_unpaired()

    def next_input(self, timeout: float) -> tuple[Any, Any] | None:
        """The newest (rgb, depth) payloads for the worker; None after `timeout` or once stopped."""
        return self._slot.take(timeout=timeout)

    def _note_unpaired(self) -> None:
        unpaired = self._pairer.rgb_without_depth
        if unpaired == self._unpaired_seen:
            return
        for _ in range(unpaired - self._unpaired_seen):
            self._events.add("rgb_unpaired")
        self._unpaired_seen = unpaired
        self._throttled.log(logging.WARNING, "rgb_unpaired",
                            f"RGB frames on {self.config.rgb_topic} are not pairing with depth, so they are not "
                            f"segmented: {self._why_unpaired()}")

    def _why_unpaired(self) -> str:
        cfg = self.config
        if self._depth_arrived_at is None:
            return (f"no depth image has arrived on {cfg.depth_topic}. use_depth is true, so every RGB frame "
                    f"waits for a depth image registered to it. For an RGB-only camera set use_depth:=false "
                    f"(an RFNet checkpoint then runs its RGB branch); otherwise set depth_topic to the camera's "
                    f"aligned depth topic")
        silent = self._clock() - self._depth_arrived_at
        if silent > cfg.pair_timeout_s:
            return f"no depth image on {cfg.depth_topic} for {silent:.1f} s (RGB keeps coming); check the depth camera"
        gap_ms = abs(self._last_stamps["rgb"] - self._last_stamps["depth"]) / 1e6
        return (f"depth arrives on {cfg.depth_topic}, but its stamps are about {gap_ms:.0f} ms from the RGB stamps, "
                f"more than pair_tolerance_s={cfg.pair_tolerance_s:g}; publish depth registered to the colour "
                f"camera with the colour frame's stamp (e.g. aligned_depth_to_color), or raise pair_tolerance_s")

    # -- one frame ----------------------------------------------------------------------------
    def reject(self, source: str, error: ImageConversionError) -> None:
        """Count and tell about an image that could not be used; `source` is rgb or depth."""
        reason = error.reason if error.reason in REASONS[source] else "header"
        self.stats.count(f"rejected_{source}")
        self.stats.count(f"rejected_{source}_{reason}")
        self._events.add(f"rejected {source} ({reason})")
        topic = self.config.rgb_topic if source == "rgb" else self.config.depth_topic
        self._throttled.log(logging.WARNING, f"rejected {source} {reason}",
                            f"dropped frame: {source} on {topic} refused ({reason}): {error}")

    def _check_images(self, rgb: np.ndarray, depth: np.ndarray | None) -> bool:
        (h, w) = rgb.shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE:
            self.reject("rgb", ImageConversionError(
                "size", f"image is {w}x{h}, smaller than {MIN_IMAGE_SIDE} pixels on a side (the network's "
                        "stride): nothing can be segmented in it; check the camera's resolution setting"))
            return False
        if depth is None:
            return True
        dh, dw = depth.shape
        if min(dh, dw) < MIN_IMAGE_SIDE:
            self.reject("depth", ImageConversionError(
                "size", f"depth image is {dw}x{dh}, smaller than {MIN_IMAGE_SIDE} pixels on a side; check the "
                        "depth camera's resolution setting"))
            return False
        if abs(h * dw - w * dh) > max(h, w):  # aspect ratios differ: not registered to the colour camera
            self.reject("depth", ImageConversionError(
                "registration", f"depth is {dw}x{dh} but RGB is {w}x{h}; publish depth registered to the "
                                "colour camera (e.g. aligned_depth_to_color)"))
            return False
        return True

    def process(self, rgb: np.ndarray, depth: np.ndarray | None, stamp_ns: int, frame_id: str, *,
                overlay: bool = False, colour_labels: bool = False) -> FrameOutput | None:
        """Segment one frame; None when it was refused or failed (counted and logged)."""
        try:
            if not self._check_images(rgb, depth):
                return None
            return self._segment(rgb, depth, stamp_ns, frame_id, overlay, colour_labels)
        except Exception as e:  # noqa: BLE001 -- keep serving: one bad frame must not stop the robot
            self.frame_failed(e)
            return None

    def frame_failed(self, error: Exception) -> None:
        """Count and log a frame that failed with an unexpected error."""
        self.stats.count("processing_errors")
        self._events.add("processing_errors")
        self._throttled.log(logging.ERROR, f"error {type(error).__name__}",
                            f"frame failed: {type(error).__name__}: {error}")

    def _segment(self, rgb, depth, stamp_ns, frame_id, overlay, colour_labels) -> FrameOutput:
        cfg = self.config
        result = self.pipeline.run(rgb, depth)
        if result.invalid_depth_fraction >= 1.0:
            self.stats.count("depth_all_invalid")
            self._events.add("depth_all_invalid")
            self._throttled.log(logging.WARNING, "depth_all_invalid",
                                "depth image has no valid pixel (all NaN, inf or 0): segmenting with depth "
                                "treated as missing; check the depth camera")
        elif result.invalid_depth_fraction > 0.0:
            self.stats.count("depth_frames_with_invalid_pixels")
        if self._collector is not None and (canary := self.pipeline.canary) is not None:
            calibration = self._collector.offer(canary[0], canary[1])
            if calibration is not None:
                self._calibration_ready(calibration)
        mining = result.mining
        out = FrameOutput(
            stamp_ns, frame_id, str(uuid.uuid4()), result.labels, result.confidence, mining.score, mining.policy,
            mining.is_hard, self.model_version, float(result.inference_ms),
            colour_overlay(rgb, result.labels, self.palette, cfg.overlay_alpha) if overlay else None,
            self.palette[result.labels] if colour_labels else None)
        if mining.is_hard:
            self.stats.count("hard_frames")
        if mining.upload and self._uplink is not None:
            self._uplink.submit(HardFrame(
                robot_id=cfg.uplink.robot_id, frame_uuid=out.frame_uuid, stamp_ns=stamp_ns, frame_id=frame_id,
                model_version=out.model_version, mining_policy=mining.policy, mining_score=mining.score,
                rgb=rgb, depth_m=depth, edge_labels=result.labels))
        self.stats.frame_done((self._wall_ns() - stamp_ns) / 1e6, result.inference_ms)
        return out

    def _refined_arrived(self, refined: RefinedResult) -> None:
        """MQTT network thread: hand over, nothing slow."""
        self._on_refined(RefinedOutput(refined.stamp_ns, refined.frame_id, refined.frame_uuid, refined.labels,
                                       refined.refiner, refined.edge_model_version))
        self.stats.count("refined_published")

    # -- live parameters ----------------------------------------------------------------------
    def apply_live(self, changes: dict[str, Any]) -> str:
        """Apply parameter changes that need no restart; returns why not ("" when applied)."""
        fixed = sorted(set(changes) - LIVE_PARAMETERS)
        if fixed:
            return f"{', '.join(fixed)} can only be set at start: restart the node with the new value"
        flat = {**self.config.to_parameters(), **changes}
        try:
            new = EdgeNodeConfig.from_parameters(flat)
            new.validate()
        except (ValueError, TypeError) as e:
            return str(e)
        if new.mining != self.config.mining:
            self.pipeline.miner = HardExampleMiner(new.mining)
        self._events.window_s = new.diagnostics_window_s
        self.config = new
        log.info("parameters changed: %s", ", ".join(f"{k}={v}" for k, v in sorted(changes.items())))
        return ""

    # -- health -------------------------------------------------------------------------------
    def health(self) -> Health:
        cfg = self.config
        snap = self.stats.snapshot()
        if self._pairer is not None:
            snap["rgb_without_depth"] = self._pairer.rgb_without_depth
            snap["depth_without_rgb"] = self._pairer.depth_without_rgb
        snap["frames_skipped_stale"] = self._slot.replaced
        if self._uplink is not None:
            snap.update({f"uplink_{k}": v for k, v in self._uplink.stats().items()})
        problems = self._problems(snap)
        values = {"backend": cfg.backend, "precision": self.precision, "model_version": self.model_version,
                  **{k: f"{v:.3f}" if isinstance(v, float) else str(v) for k, v in sorted(snap.items())}}
        if self._collector is not None and not self._collector.done:
            values["int8_calibration_frames"] = "{}/{}".format(*self._collector.progress)
        message = f"serving {self.model_version} ({cfg.backend} {self.precision})"
        return Health(WARN if problems else OK, "; ".join([message, *problems]), values)

    def _problems(self, snap: dict) -> list[str]:
        cfg, now = self.config, self._clock()
        problems = []
        if not self._rgb_arrivals:
            waited = now - self._started_at
            if waited > cfg.camera_stall_periods * cfg.diagnostics_period_s:
                problems.append(f"no frame on {cfg.rgb_topic} in {waited:.0f} s since start: check the topic "
                                "name and that the camera publishes")
        else:
            arrivals = np.array(self._rgb_arrivals)
            period = float(np.median(np.diff(arrivals))) if len(arrivals) > 1 else cfg.diagnostics_period_s
            silent = now - arrivals[-1]
            snap["seconds_since_last_rgb"] = silent
            if silent > cfg.camera_stall_periods * period:
                problems.append(f"camera stalled: no frame on {cfg.rgb_topic} for {silent:.1f} s "
                                f"({cfg.camera_stall_periods} periods of its {1000 * period:.0f} ms)")
        recent = self._events.counts()
        window = f"in the last {cfg.diagnostics_window_s:g} s"
        if recent["rgb_unpaired"]:
            problems.append(f"{recent['rgb_unpaired']} RGB frames {window} found no depth: {self._why_unpaired()}")
        rejected = sorted((name, n) for name, n in recent.items() if name.startswith("rejected"))
        if rejected:
            problems.append(f"bad input seen {window}: " + ", ".join(f"{name} x{n}" for name, n in rejected))
        if recent["depth_all_invalid"]:
            problems.append(f"{recent['depth_all_invalid']} depth images {window} had no valid pixel")
        if recent["processing_errors"]:
            problems.append(f"{recent['processing_errors']} frames failed {window} (see the log)")
        if self._int8_problem:
            problems.append(self._int8_problem)
        return problems

    def stop(self) -> None:
        self._slot.close()
        if self._uplink is not None:
            self._uplink.stop()
        if self._model_link is not None:
            self._model_link.stop()
            self._downloader.stop()
