"""ONNX Runtime backend: CPU everywhere, CUDA where onnxruntime-gpu finds a GPU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..model_io import (INPUT_DEPTH, INPUT_RGB, OUTPUT_CONFIDENCE, OUTPUT_LABELS, OUTPUT_LOGITS,
                        OUTPUT_LOGITS_LOWRES)
from .base import EngineError, ModelSpec, SegmentationEngine, SegmentationOutput, labels_from_int


def select_providers(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise EngineError("onnxruntime has no CUDAExecutionProvider here (installed: "
                              f"{available}); install onnxruntime-gpu or use device 'cpu'")
        return ["CPUExecutionProvider"]
    raise EngineError(f"unknown onnxruntime device {device!r}; use 'auto', 'cpu' or 'cuda'")


class OnnxRuntimeEngine(SegmentationEngine):
    backend = "onnxruntime"

    def __init__(self, onnx_path: str | Path, spec: ModelSpec, device: str = "auto",
                 threads: int = 0):
        super().__init__(spec)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(onnx_path), opts, providers=select_providers(device))
        except EngineError:
            raise
        except Exception as e:
            raise EngineError(f"onnxruntime cannot load {onnx_path}: {e}") from e
        self.providers = self._session.get_providers()
        self._check_graph(onnx_path)

    def _check_graph(self, onnx_path) -> None:
        actual = {t.name: tuple(t.shape) for t in self._session.get_inputs() + self._session.get_outputs()}
        expected = {**self.spec.input_shapes(), **self.spec.output_shapes()}
        if actual != expected:
            raise EngineError(
                f"{onnx_path} has inputs/outputs {actual}, but {self.spec} needs {expected}. "
                "Export the model again for this input size, depth mode and class count "
                "(rfnet-export-onnx), or give the .pth checkpoint instead.")

    def infer(self, rgb: np.ndarray, depth: np.ndarray | None = None,
              return_logits: bool = False) -> SegmentationOutput:
        self._check_inputs(rgb, depth)
        feeds = {INPUT_RGB: rgb}
        if depth is not None:
            feeds[INPUT_DEPTH] = depth
        names = [OUTPUT_LABELS, OUTPUT_CONFIDENCE, OUTPUT_LOGITS_LOWRES] + \
            ([OUTPUT_LOGITS] if return_logits else [])
        out = self._session.run(names, feeds)
        return SegmentationOutput(labels=labels_from_int(out[0]), confidence=out[1][0],
                                  logits_lowres=out[2][0], logits=out[3][0] if return_logits else None)
