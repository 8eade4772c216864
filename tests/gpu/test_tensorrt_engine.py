"""TensorRT on a real GPU against the ONNX Runtime CPU reference.

Skipped unless tensorrt and pycuda import and pycuda finds a CUDA device.
Builds take a minute or two each; engines are shared through one cache dir.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rfnet.engines.base import EngineError, ModelSpec
from rfnet.network import RFNet, RFNetConfig
from rfnet.onnx_export import export_onnx


def _gpu_unavailable() -> str | None:
    try:
        import pycuda.driver as cuda
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or OSError for a missing libcuda / libnvinfer
        return f"needs tensorrt and pycuda (pip install -r requirements-gpu.txt): {exc}"
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            return "pycuda finds no CUDA device"
    except Exception as exc:  # pycuda.driver.Error: no driver
        return f"no usable CUDA driver or device: {exc}"
    return None


SKIP_REASON = _gpu_unavailable()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(SKIP_REASON is not None, reason=f"TensorRT: {SKIP_REASON}")]

SPEC = ModelSpec(num_classes=30, input_height=192, input_width=256, use_depth=True)
RGB_SPEC = ModelSpec(num_classes=30, input_height=192, input_width=256, use_depth=False)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    torch.manual_seed(0)
    model = RFNet(RFNetConfig(num_classes=30)).eval()
    d = tmp_path_factory.mktemp("onnx")
    return {"rgbd": export_onnx(model, SPEC, d / "rfnet_rgbd.onnx"),
            "rgb": export_onnx(model, RGB_SPEC, d / "rfnet_rgb.onnx")}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def frames(spec: ModelSpec, n: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    h, w = spec.input_hw
    for _ in range(n):
        rgb = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        depth = rng.standard_normal((1, h, w)).astype(np.float32) if spec.use_depth else None
        yield rgb, depth


def reference(onnx_path, rgb, depth) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"rgb": rgb} if depth is None else {"rgb": rgb, "depth": depth}
    out = session.run(["labels", "confidence", "logits"], feeds)
    return {"labels": out[0][0], "confidence": out[1][0], "logits": out[2][0]}


def assert_agrees(engine, onnx_path, spec, min_agreement, confidence_atol):
    for rgb, depth in frames(spec):
        ref = reference(onnx_path, rgb, depth)
        out = engine.infer(rgb, depth, return_logits=True)
        assert out.labels.dtype == np.uint8 and out.labels.shape == spec.input_hw
        assert out.logits.shape == (spec.num_classes, *spec.input_hw)
        assert out.logits_lowres.shape == (spec.num_classes, *spec.lowres_hw)
        agreement = (out.labels == ref["labels"]).mean()
        assert agreement >= min_agreement, f"label agreement {agreement:.5f}"
        np.testing.assert_allclose(out.confidence, ref["confidence"], atol=confidence_atol)


def test_fp32_matches_onnxruntime_and_second_load_uses_the_cache(onnx_files, cache_dir):
    from rfnet.engines.tensorrt_engine import TensorRTEngine

    with TensorRTEngine(onnx_files["rgbd"], SPEC, precision="fp32", cache_dir=cache_dir) as e:
        assert not e.built_from_cache
        assert_agrees(e, onnx_files["rgbd"], SPEC, 0.999, 1e-3)
        engine_path = e.engine_path
    assert engine_path.is_file() and engine_path.with_suffix(".json").is_file()
    with TensorRTEngine(onnx_files["rgbd"], SPEC, precision="fp32", cache_dir=cache_dir) as e:
        assert e.built_from_cache
        assert e.engine_path == engine_path
        assert_agrees(e, onnx_files["rgbd"], SPEC, 0.999, 1e-3)


def test_fp16_matches_onnxruntime(onnx_files, cache_dir):
    from rfnet.engines.tensorrt_engine import TensorRTEngine

    with TensorRTEngine(onnx_files["rgbd"], SPEC, precision="fp16", cache_dir=cache_dir) as e:
        assert_agrees(e, onnx_files["rgbd"], SPEC, 0.99, 5e-3)
        rgb, depth = next(frames(SPEC))
        assert e.infer(rgb, depth).logits is None


def test_rgb_only(onnx_files, cache_dir):
    from rfnet.engines.tensorrt_engine import TensorRTEngine

    with TensorRTEngine(onnx_files["rgb"], RGB_SPEC, precision="fp32", cache_dir=cache_dir) as e:
        assert_agrees(e, onnx_files["rgb"], RGB_SPEC, 0.999, 1e-3)
        rgb, _ = next(frames(RGB_SPEC))
        with pytest.raises(EngineError, match="RGB-only"):
            e.infer(rgb, np.zeros((1, *RGB_SPEC.input_hw), np.float32))


def test_int8_builds_and_gives_finite_output(onnx_files, cache_dir):
    from rfnet.engines.tensorrt_engine import TensorRTEngine

    calibration = list(frames(SPEC, n=4, seed=1))
    with TensorRTEngine(onnx_files["rgbd"], SPEC, precision="int8", cache_dir=cache_dir,
                        calibration_inputs=calibration) as e:
        assert e.engine_path.with_suffix(".calib").is_file()
        rgb, depth = next(frames(SPEC, seed=2))
        out = e.infer(rgb, depth, return_logits=True)
    assert out.labels.shape == SPEC.input_hw and out.labels.max() < SPEC.num_classes
    assert out.confidence.shape == SPEC.input_hw and np.isfinite(out.confidence).all()
    assert ((out.confidence > 0) & (out.confidence <= 1 + 1e-3)).all()
    assert out.logits.shape == (SPEC.num_classes, *SPEC.input_hw)
    assert np.isfinite(out.logits).all()


def test_infer_and_close_from_another_thread(onnx_files, cache_dir):
    """The node constructs the engine in one thread and infers in a worker thread."""
    from rfnet.engines.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(onnx_files["rgbd"], SPEC, precision="fp16", cache_dir=cache_dir)
    rgb, depth = next(frames(SPEC))
    here = engine.infer(rgb, depth)
    with ThreadPoolExecutor(1) as worker:
        there = [worker.submit(engine.infer, rgb, depth).result() for _ in range(3)]
        worker.submit(engine.close).result()
    for out in there:
        assert (out.labels == here.labels).mean() >= 0.999
    with pytest.raises(EngineError, match="closed"):
        engine.infer(rgb, depth)


def test_node_runtime_switches_to_int8_after_gathering_camera_frames(tmp_path, reference_checkpoint):
    """precision int8 from the node's configuration: serves fp16, gathers frames, builds INT8 with them."""
    import time

    from seg_edge_node.config import EdgeNodeConfig
    from seg_edge_node.int8_calibration import Int8Config
    from seg_edge_node.runtime import EdgeRuntime

    cfg = EdgeNodeConfig(model_path=str(reference_checkpoint), backend="tensorrt", precision="int8",
                         input_height=192, input_width=256, cache_dir=str(tmp_path / "cache"),
                         int8=Int8Config(calibration_frames=4, sample_every=1, min_agreement=0.5))
    runtime = EdgeRuntime(cfg)
    assert runtime.precision == "fp16"
    rng = np.random.default_rng(0)
    for i in range(4):
        rgb = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        assert runtime.process(rgb, rng.uniform(0.5, 5, (240, 320)).astype(np.float32), i, "f") is not None
    deadline = time.monotonic() + 600
    while runtime.precision != "int8" and time.monotonic() < deadline and "not used" not in runtime.health().message:
        time.sleep(0.5)
    assert runtime.precision == "int8", runtime.health().message
    assert list((tmp_path / "cache" / "tensorrt").glob("*.calib"))
    out = runtime.process(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                          rng.uniform(0.5, 5, (240, 320)).astype(np.float32), 9, "f")
    assert out is not None and out.labels.shape == (240, 320)
    runtime.stop()
