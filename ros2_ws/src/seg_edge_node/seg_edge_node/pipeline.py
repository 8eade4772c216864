"""One camera frame -> labels, confidence and a mining decision (ROS-free).

preprocessing -> engine -> postprocessing (resize to camera resolution, hard-example
mining), with the time of each step, so the node, the offline checks in the tests
and the benchmarks run the same code.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np

from rfnet.engines import SegmentationEngine
from rfnet.preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb

from .hard_mining import HardExampleMiner, MiningDecision


@dataclass
class FrameResult:
    labels: np.ndarray            # (H, W) uint8 at camera resolution
    confidence: np.ndarray        # (H, W) uint8, top-1 probability * 255, camera resolution
    invalid_depth_fraction: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    mining: MiningDecision | None = None


class SegmentationPipeline:
    def __init__(self, engine: SegmentationEngine, preprocess: PreprocessConfig,
                 miner: HardExampleMiner | None = None):
        if (preprocess.input_height, preprocess.input_width) != engine.spec.input_hw:
            raise ValueError(f"preprocessing size {preprocess.input_height}x{preprocess.input_width} "
                             f"differs from the engine's {engine.spec.input_hw}")
        self.engine = engine
        self.preprocess = preprocess
        self.miner = miner
        self._engine_lock = threading.Lock()
        # The newest frame's network inputs and the serving model's labels for it: the
        # canary a candidate model is checked against.
        self.canary: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None

    def swap_engine(self, engine: SegmentationEngine) -> SegmentationEngine:
        """Serve `engine` from the next frame on; waits for the frame in flight. Returns the old one."""
        if engine.spec != self.engine.spec:
            raise ValueError(f"a new engine must keep the model spec {self.engine.spec}, got {engine.spec}")
        with self._engine_lock:
            old, self.engine = self.engine, engine
        return old

    @property
    def uses_depth(self) -> bool:
        return self.engine.spec.use_depth

    def run(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> FrameResult:
        t0 = time.perf_counter()
        x = preprocess_rgb(rgb, self.preprocess)
        d, invalid = None, 0.0
        if self.uses_depth:
            if depth_m is None:
                raise ValueError("this model is RGB-D and needs a depth image with the RGB frame")
            d, invalid = preprocess_depth(depth_m, self.preprocess)
        t1 = time.perf_counter()
        with self._engine_lock:
            out = self.engine.infer(x, d)
        self.canary = (x, d, out.labels)
        t2 = time.perf_counter()
        h, w = rgb.shape[:2]
        labels, conf = out.labels, out.confidence
        mining = None if self.miner is None else self.miner.assess(conf, out.logits_lowres)
        # Softmax maxima lie in (0, 1], so the rounded product fits uint8 without clipping.
        conf8 = (conf * 255.0 + 0.5).astype(np.uint8)
        if labels.shape != (h, w):
            labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
            conf8 = cv2.resize(conf8, (w, h), interpolation=cv2.INTER_LINEAR)
        t3 = time.perf_counter()
        return FrameResult(labels, conf8, invalid, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3,
                           mining)
