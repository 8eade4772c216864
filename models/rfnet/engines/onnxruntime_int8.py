"""Static INT8 quantization of an RFNet ONNX graph with ONNX Runtime, for CPUs.

The recipe was chosen by measurement on a 2-core AVX-512 VNNI machine, 480x640 RGB-D
(bench/edge_latency.py): QDQ format (ONNX Runtime fuses each DequantizeLinear ->
Conv -> QuantizeLinear into one integer convolution), per-channel int8 weights, uint8
activations, MinMax ranges over the calibration frames, every quantizable op. The
postprocessing in the graph (upsampling, argmax, softmax maximum over the full-size
logits) runs in float either way.

Quantized models are cached by the ONNX file's hash, the calibration set's hash and
the recipe version, next to the TensorRT engines, so a robot quantizes once per model.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..model_io import INPUT_DEPTH, INPUT_RGB
from .base import EngineError
from .calibration import Calibration
from .engine_cache import onnx_sha256

log = logging.getLogger(__name__)

# Bumped when the recipe below changes, so cached models are quantized again.
RECIPE_VERSION = 1


def quantized_path(cache_dir: Path, onnx_path: Path, calibration: Calibration) -> Path:
    return cache_dir / f"{onnx_sha256(onnx_path)[:16]}-{calibration.sha256[:16]}-r{RECIPE_VERSION}.int8.onnx"


def quantize_int8(onnx_path: str | Path, calibration: Calibration, cache_dir: str | Path) -> Path:
    """The INT8 model for `onnx_path` calibrated on `calibration`: from the cache, or made now."""
    onnx_path, cache_dir = Path(onnx_path), Path(cache_dir).expanduser()
    out = quantized_path(cache_dir, onnx_path, calibration)
    if out.is_file():
        log.info("using cached INT8 model %s", out)
        return out
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                              QuantType, quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as e:   # onnxruntime.quantization needs the onnx package
        raise EngineError(f"onnxruntime int8 needs onnxruntime.quantization and onnx ({e}); "
                          "install onnx, or use precision fp32") from e

    class Frames(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calibration.batches)

        def get_next(self):
            batch = next(self._it, None)
            if batch is None:
                return None
            rgb, depth = batch
            return {INPUT_RGB: rgb} if depth is None else {INPUT_RGB: rgb, INPUT_DEPTH: depth}

    cache_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log.info("quantizing %s to INT8 on %d calibration frames (%s); once per model", onnx_path,
             len(calibration), calibration.source or "no source given")
    prepared = out.with_suffix(".prep.tmp")
    tmp = out.with_suffix(".tmp")
    try:
        # Shape inference and graph cleanup first, as ONNX Runtime recommends for static quantization.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        _quiet_quantizer_warnings()
        quantize_static(str(prepared), str(tmp), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        tmp.replace(out)   # atomic: a half-written model never looks like a cached one
    except EngineError:
        raise
    except Exception as e:   # the quantizer raises many kinds; the node must get a message
        raise EngineError(f"onnxruntime could not quantize {onnx_path} to INT8: {type(e).__name__}: {e}; "
                          "use precision fp32") from e
    finally:
        prepared.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    log.info("quantized to %s in %.0f s", out, time.monotonic() - start)
    return out


class _DropAxisWarnings(logging.Filter):
    """Per-channel quantization of the 1-D scales after RFNet's norms logs one "Axis 1 is
    out-of-range" line per tensor on the root logger, then quantizes them per tensor,
    which is what is wanted here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


_AXIS_FILTER = _DropAxisWarnings()


def _quiet_quantizer_warnings() -> None:
    logging.getLogger().addFilter(_AXIS_FILTER)   # adding the same filter twice keeps one
