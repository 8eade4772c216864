"""TensorRT backend: builds an engine from the ONNX export, or loads it from the
engine cache, and runs it with buffers and a stream allocated once.

CUDA contexts and threads: a CUDA context is current per thread, and pycuda
keeps its context stack per thread too. A context made current in the thread
that constructs the engine is not current in the node's inference worker
thread, where TensorRT and pycuda calls would then fail (or, with
pycuda.autoinit imported elsewhere, run in another context). So this engine
retains the device's *primary* context, which is also the one the CUDA runtime
inside TensorRT uses, and pushes it around every block that touches the GPU
(construction, `infer`, `close`), popping it afterwards. Any thread may call
`infer` and `close`; a lock serializes them because the I/O buffers and the
stream are shared.

Requires tensorrt 10.x and pycuda (requirements-gpu.txt); both are imported
only when an engine is constructed, so this module imports anywhere.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from durable_files import file_sha256

from ..model_io import (INPUT_DEPTH, INPUT_RGB, OUTPUT_CONFIDENCE, OUTPUT_LABELS, OUTPUT_LOGITS,
                        OUTPUT_LOGITS_LOWRES)
from .base import (EngineError, ModelSpec, SegmentationEngine, SegmentationOutput,
                   labels_from_int)
from .engine_cache import (PRECISIONS, EngineCache, EngineKey, calibration_sha256,
                           default_cache_dir, write_atomic)

log = logging.getLogger(__name__)

GPU_STACK_HINT = ("TensorRT backend needs an NVIDIA GPU with tensorrt and pycuda; "
                  "install requirements-gpu.txt or use backend onnxruntime")

CalibrationBatch = tuple[np.ndarray, np.ndarray | None]


def _import_gpu_stack():
    try:
        import pycuda.driver as cuda
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: ctypes could not load a CUDA/TensorRT library
        raise EngineError(f"{GPU_STACK_HINT} ({exc})") from exc
    return trt, cuda


@dataclass
class _IOBuffer:
    host: np.ndarray   # page-locked, so async copies really are async (DMA)
    device: Any        # pycuda.driver.DeviceAllocation


class TensorRTEngine(SegmentationEngine):
    """RFNet on TensorRT. `built_from_cache` tells whether construction skipped the build.

    precision: "fp32" (TF32 off, so it matches the ONNX reference), "fp16", or
    "int8" (INT8 with FP16 fallback; needs `calibration_inputs`, an iterable of
    preprocessed (rgb, depth) batches as `infer` takes them; ignored otherwise).
    cache_dir defaults to `engine_cache.default_cache_dir()`.
    """

    backend = "tensorrt"

    def __init__(self, onnx_path: str | Path, spec: ModelSpec, *, precision: str = "fp16",
                 cache_dir: str | Path | None = None,
                 calibration_inputs: Iterable[CalibrationBatch] | None = None,
                 workspace_mb: int = 1024, device: int = 0):
        super().__init__(spec)
        if precision not in PRECISIONS:
            raise EngineError(f"tensorrt: precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "int8" and calibration_inputs is None:
            raise EngineError("tensorrt: int8 needs calibration_inputs (a few preprocessed "
                              "(rgb, depth) frames from the robot's environment)")
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise EngineError(f"tensorrt: ONNX model {onnx_path} not found; "
                              "export it with rfnet-export-onnx")
        self._trt, self._cuda = _import_gpu_stack()
        self.precision = precision
        self.built_from_cache = False
        self.engine_path: Path | None = None
        self._lock = threading.Lock()
        self._cuda_ctx = None
        self._buffers: dict[str, _IOBuffer] = {}
        self._stream = self._context = self._engine = self._runtime = None
        self._cuda_ctx = self._retain_context(device)
        try:
            with self._current():
                self._setup(onnx_path, precision,
                            Path(cache_dir) if cache_dir is not None else default_cache_dir(),
                            calibration_inputs, workspace_mb)
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------

    def _retain_context(self, device: int):
        cuda = self._cuda
        try:
            cuda.init()
            count = cuda.Device.count()
        except Exception as exc:  # pycuda.driver.Error: no driver, or driver too old
            raise EngineError(f"{GPU_STACK_HINT} (CUDA init failed: {exc})") from exc
        if not 0 <= device < count:
            raise EngineError(f"tensorrt: CUDA device {device} requested, {count} present")
        self._device = cuda.Device(device)
        return self._device.retain_primary_context()

    @contextlib.contextmanager
    def _current(self):
        self._cuda_ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _setup(self, onnx_path: Path, precision: str, cache_dir: Path,
               calibration_inputs, workspace_mb: int) -> None:
        trt = self._trt
        self._logger = _shared_logger(trt)
        self._logger.errors.clear()  # so exception messages quote only this engine's errors
        calibration = (self._calibration_batches(calibration_inputs)
                       if precision == "int8" else None)
        key = EngineKey(
            onnx_sha256=file_sha256(onnx_path),
            tensorrt_version=trt.__version__,
            gpu_name=self._device.name(),
            compute_capability="{}.{}".format(*self._device.compute_capability()),
            precision=precision,
            input_shapes=tuple(self.spec.input_shapes().items()),
            calibration_sha256=(None if calibration is None else
                                calibration_sha256(tuple(b.values()) for b in calibration)),
        )
        cache = EngineCache(cache_dir)
        self.engine_path = cache.path_for(key)
        # The runtime must outlive every engine it deserializes; close() drops it last.
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._load_cached(cache, key)
        if self._engine is None:
            blob, seconds = self._build(onnx_path, precision, workspace_mb, calibration,
                                        cache.calibration_path(key))
            self._engine = self._runtime.deserialize_cuda_engine(blob)
            if self._engine is None:
                raise EngineError("tensorrt: freshly built engine did not deserialize: "
                                  + self._logger.recent_errors())
            try:
                cache.put(key, blob, seconds)
            except OSError as exc:  # a read-only or full disk must not stop the robot
                log.warning("could not cache TensorRT engine in %s: %s", cache_dir, exc)
        io = self._io_tensors()
        self._require_io({name: (is_input, shape) for name, (is_input, shape, _) in io.items()},
                         f"engine {self.engine_path}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError("tensorrt: could not create an execution context (GPU memory?): "
                              + self._logger.recent_errors())
        self._stream = self._cuda.Stream()
        for name, (_, shape, dtype) in io.items():
            host = self._cuda.pagelocked_empty(shape, dtype)
            device = self._cuda.mem_alloc(host.nbytes)
            self._buffers[name] = _IOBuffer(host, device)
            # Addresses never change, so they are bound once instead of per frame.
            if not self._context.set_tensor_address(name, int(device)):
                raise EngineError(f"tensorrt: could not bind tensor {name!r}")

    def _calibration_batches(self, inputs) -> list[dict[str, np.ndarray]]:
        batches = []
        for i, (rgb, depth) in enumerate(inputs):
            try:
                self._check_inputs(rgb, depth)
            except EngineError as exc:
                raise EngineError(f"calibration batch {i}: {exc}") from exc
            feed = {INPUT_RGB: np.ascontiguousarray(rgb)}
            if depth is not None:
                feed[INPUT_DEPTH] = np.ascontiguousarray(depth)
            batches.append(feed)
        if not batches:
            raise EngineError("tensorrt: int8 calibration_inputs is empty")
        return batches

    def _load_cached(self, cache: EngineCache, key: EngineKey):
        blob = cache.get(key)
        if blob is None:
            return None
        engine = self._runtime.deserialize_cuda_engine(blob)
        if engine is None:  # e.g. same version string, different TensorRT build
            log.warning("cached engine %s did not deserialize (%s); rebuilding",
                        cache.path_for(key), self._logger.recent_errors())
            cache.invalidate(key)
            return None
        self.built_from_cache = True
        log.info("loaded TensorRT engine %s", cache.path_for(key))
        return engine

    def _build(self, onnx_path: Path, precision: str, workspace_mb: int,
               calibration: list[dict[str, np.ndarray]] | None, calibration_cache: Path):
        trt = self._trt
        h, w = self.spec.input_hw
        log.info("building TensorRT %s engine from %s (%s, %dx%d); this takes minutes, "
                 "once per model and GPU", precision, onnx_path, self.spec.mode, h, w)
        start = time.monotonic()
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        # The parser owns the weights the network points at: keep it alive until built.
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"tensorrt: could not parse {onnx_path}: "
                              f"{errors or self._logger.recent_errors()}")
        # Checked before the build, which takes minutes, rather than after it.
        io = {t.name: (True, tuple(t.shape))
              for t in map(network.get_input, range(network.num_inputs))}
        io.update({t.name: (False, tuple(t.shape))
                   for t in map(network.get_output, range(network.num_outputs))})
        self._require_io(io, str(onnx_path))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        if precision == "fp32":
            # TF32 is on by default and rounds conv inputs to 10-bit mantissas;
            # "fp32" is meant to match the ONNX reference.
            config.clear_flag(trt.BuilderFlag.TF32)
        else:
            # For int8 too: layers without INT8 kernels then fall back to FP16, not FP32.
            config.set_flag(trt.BuilderFlag.FP16)
        calibrator = None
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = _make_calibrator(trt, self._cuda, calibration, calibration_cache)
            config.int8_calibrator = calibrator
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if serialized is None:
            raise EngineError(f"tensorrt: building the {precision} engine from {onnx_path} "
                              f"failed: {self._logger.recent_errors()}")
        seconds = time.monotonic() - start
        log.info("built TensorRT engine in %.0f s", seconds)
        return bytes(serialized), seconds

    def _io_tensors(self) -> dict[str, tuple[bool, tuple[int, ...], np.dtype]]:
        """name -> (is_input, shape, dtype), as the engine reports them."""
        trt, engine = self._trt, self._engine
        io = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            io[name] = (engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                        tuple(engine.get_tensor_shape(name)),
                        np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        return io

    def _require_io(self, actual: dict[str, tuple[bool, tuple[int, ...]]], what: str) -> None:
        """`actual`: name -> (is_input, shape). Raises unless it is what `spec` needs."""
        expected = {name: (True, shape) for name, shape in self.spec.input_shapes().items()}
        expected.update({name: (False, shape) for name, shape in self.spec.output_shapes().items()})
        if actual != expected:
            raise EngineError(
                f"tensorrt: {what} has I/O {actual} (name: (is_input, shape)), but {self.spec} "
                f"needs {expected}. Export the model again for this input size and depth mode "
                "(rfnet-export-onnx), or give the .pth checkpoint instead.")

    # --- inference ----------------------------------------------------------

    def infer(self, rgb: np.ndarray, depth: np.ndarray | None = None,
              return_logits: bool = False) -> SegmentationOutput:
        self._check_inputs(rgb, depth)
        cuda = self._cuda
        with self._lock:
            if self._cuda_ctx is None:
                raise EngineError("tensorrt: engine is closed")
            with self._current():
                stream = self._stream
                feeds = {INPUT_RGB: rgb} if depth is None else {INPUT_RGB: rgb, INPUT_DEPTH: depth}
                for name, array in feeds.items():
                    buf = self._buffers[name]
                    np.copyto(buf.host, array)
                    cuda.memcpy_htod_async(buf.device, buf.host, stream)
                if not self._context.execute_async_v3(stream.handle):
                    stream.synchronize()  # the next frame must not overwrite in-flight inputs
                    raise EngineError("tensorrt: execute_async_v3 failed: "
                                      + self._logger.recent_errors())
                wanted = [OUTPUT_LABELS, OUTPUT_CONFIDENCE, OUTPUT_LOGITS_LOWRES]
                if return_logits:  # (C,H,W) float32 is by far the largest copy: skip unless asked
                    wanted.append(OUTPUT_LOGITS)
                for name in wanted:
                    buf = self._buffers[name]
                    cuda.memcpy_dtoh_async(buf.host, buf.device, stream)
                stream.synchronize()
                h, w = self.spec.input_hw
                # Copies: the pinned buffers are overwritten by the next frame.
                return SegmentationOutput(
                    labels=labels_from_int(self._buffers[OUTPUT_LABELS].host),
                    confidence=self._buffers[OUTPUT_CONFIDENCE].host.reshape(h, w).copy(),
                    logits=(self._buffers[OUTPUT_LOGITS].host
                            .reshape(self.spec.num_classes, h, w).copy()
                            if return_logits else None),
                    logits_lowres=self._buffers[OUTPUT_LOGITS_LOWRES].host
                    .reshape(self.spec.output_shapes()[OUTPUT_LOGITS_LOWRES][1:]).copy(),
                )

    def close(self) -> None:
        """Free GPU memory and release the context. Safe to call twice, from any thread."""
        with self._lock:
            if self._cuda_ctx is None:
                return
            try:
                with self._current():
                    if self._stream is not None:
                        self._stream.synchronize()
                    for buf in self._buffers.values():
                        buf.device.free()
                    # Dropping the last references while the context is current lets
                    # pycuda free the pinned buffers and the stream inside it (from
                    # another thread it could not), and TensorRT release its memory.
                    # Order matters: context, engine, then runtime.
                    self._buffers = {}
                    self._stream = None
                    self._context = None
                    self._engine = None
                    self._runtime = None
            finally:
                self._cuda_ctx.detach()
                self._cuda_ctx = None


_trt_logger_lock = threading.Lock()
_trt_logger = None


def _shared_logger(trt):
    """The process-wide TensorRT logger: forwards to `logging` and remembers
    recent errors, so exceptions can say why a parse or build failed.

    One instance for all engines, never freed: TensorRT keeps the first logger
    it is given as its global one, so a per-engine logger could be used after
    that engine dropped it.
    """
    global _trt_logger
    with _trt_logger_lock:
        if _trt_logger is None:
            _trt_logger = _make_logger(trt)
        return _trt_logger


def _make_logger(trt):

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=20)

        def log(self, severity, msg):
            sev = trt.ILogger.Severity
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == sev.WARNING:
                log.warning("TensorRT: %s", msg)
            elif severity == sev.INFO:
                log.debug("TensorRT: %s", msg)

        def recent_errors(self) -> str:
            return " | ".join(self.errors) or "no error reported by TensorRT"

    return _Logger()


def _make_calibrator(trt, cuda, batches: list[dict[str, np.ndarray]], cache_path: Path):
    """INT8 entropy calibrator over `batches` (input name -> array), with its
    table cached at `cache_path` so a rebuild skips calibration."""

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._batches = iter(batches)
            self._device = {name: cuda.mem_alloc(array.nbytes)
                            for name, array in batches[0].items()}

        def get_batch_size(self):
            return 1  # explicit-batch network: the batch dimension is in the shapes

        def get_batch(self, names):
            batch = next(self._batches, None)
            if batch is None:
                return None  # no more data: calibration ends
            for name in names:
                cuda.memcpy_htod(self._device[name], batch[name])
            return [int(self._device[name]) for name in names]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache):
            write_atomic(cache_path, bytes(cache))

        def free(self):
            for allocation in self._device.values():
                allocation.free()
            self._device.clear()

    return _EntropyCalibrator()
