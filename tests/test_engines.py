"""ONNX Runtime and torch run the same model, preprocessing and postprocessing."""
from __future__ import annotations

import numpy as np
import pytest

from rfnet.checkpoint import CheckpointError
from rfnet.engines import EngineConfig, EngineError, ModelSpec, load_engine
from rfnet.preprocessing import PreprocessConfig, preprocess_depth, preprocess_rgb

SPEC = ModelSpec(num_classes=30, input_height=240, input_width=320, use_depth=True)


def camera_frame(seed: int, hw=(480, 640)):
    """A structured frame (gradients, blocks, noise) rather than pure noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx // 40 + yy // 40) % 2) * 200], -1)
    rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    depth = (0.5 + 8.0 * yy / h + rng.normal(0, 0.05, (h, w))).astype(np.float32)
    return rgb, depth


def inputs_for(spec: ModelSpec, seed: int):
    rgb, depth = camera_frame(seed)
    cfg = PreprocessConfig(spec.input_height, spec.input_width)
    return preprocess_rgb(rgb, cfg), (preprocess_depth(depth, cfg)[0] if spec.use_depth else None)


@pytest.fixture(scope="module")
def engines(reference_checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for spec in (SPEC, ModelSpec(30, 240, 320, use_depth=False)):
        for backend in ("torch", "onnxruntime"):
            out[backend, spec.mode] = load_engine(EngineConfig(
                str(reference_checkpoint), spec, backend, str(cache), device="cpu"))
    return out


@pytest.mark.parametrize("mode", ["rgbd", "rgb"])
def test_onnxruntime_agrees_with_torch(engines, mode):
    ref, ort_ = engines["torch", mode], engines["onnxruntime", mode]
    spec = ref.engine.spec
    assert ref.version == ort_.version  # same checkpoint, same version id
    for seed in range(3):
        rgb, depth = inputs_for(spec, seed)
        a = ref.engine.infer(rgb, depth, return_logits=True)
        b = ort_.engine.infer(rgb, depth, return_logits=True)
        assert a.labels.dtype == b.labels.dtype == np.uint8
        assert a.labels.shape == b.labels.shape == spec.input_hw
        agreement = (a.labels == b.labels).mean()
        assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"
        assert np.abs(a.logits - b.logits).max() < 1e-2
        assert a.logits_lowres.shape == (30, *spec.lowres_hw) == b.logits_lowres.shape
        assert np.abs(a.logits_lowres - b.logits_lowres).max() < 1e-2
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)
        # The graph's labels/confidence are the argmax / max-softmax of its own logits.
        assert np.array_equal(b.labels, b.logits.argmax(0))
        p = np.exp(b.logits - b.logits.max(0))
        np.testing.assert_allclose(b.confidence, (p / p.sum(0)).max(0), rtol=1e-4)


def test_logits_only_when_asked(engines):
    rgb, depth = inputs_for(SPEC, 0)
    assert engines["onnxruntime", "rgbd"].engine.infer(rgb, depth).logits is None


def test_onnx_export_is_cached_per_checkpoint_and_shape(reference_checkpoint, tmp_path):
    cfg = EngineConfig(str(reference_checkpoint), SPEC, "onnxruntime", str(tmp_path), device="cpu")
    first = load_engine(cfg)
    mtime = first.onnx_path.stat().st_mtime_ns
    second = load_engine(cfg)
    assert second.onnx_path == first.onnx_path and second.onnx_path.stat().st_mtime_ns == mtime
    other = load_engine(EngineConfig(str(reference_checkpoint), ModelSpec(30, 120, 160), "onnxruntime",
                                     str(tmp_path), device="cpu"))
    assert other.onnx_path != first.onnx_path


def test_onnx_file_with_other_shape_is_refused(engines):
    onnx_path = engines["onnxruntime", "rgbd"].onnx_path
    with pytest.raises(EngineError, match="Export the model again"):
        load_engine(EngineConfig(str(onnx_path), ModelSpec(30, 480, 640), "onnxruntime", device="cpu"))
    with pytest.raises(EngineError, match="Export the model again"):
        load_engine(EngineConfig(str(onnx_path), ModelSpec(19, 240, 320), "onnxruntime", device="cpu"))


def test_bad_inputs_and_configs_are_explained(engines, tmp_path):
    engine = engines["onnxruntime", "rgbd"].engine
    rgb, depth = inputs_for(SPEC, 0)
    with pytest.raises(EngineError, match="built for RGB-D"):
        engine.infer(rgb, None)
    with pytest.raises(EngineError, match="rgb must be float32"):
        engine.infer(rgb[:, :, :10], depth)
    with pytest.raises(EngineError, match="RGB-only"):
        engines["onnxruntime", "rgb"].engine.infer(rgb, depth)
    with pytest.raises(EngineError, match="unknown backend"):
        load_engine(EngineConfig("x.pth", SPEC, "tflite"))
    with pytest.raises(CheckpointError, match="not found"):
        load_engine(EngineConfig(str(tmp_path / "missing.pth"), SPEC, "onnxruntime", str(tmp_path)))


def test_preprocessing_matches_the_original_pipeline():
    cfg = PreprocessConfig(2, 2, depth_units_per_metre=25.5)
    rgb = np.array([[[0, 128, 255]] * 2] * 2, np.uint8)
    x = preprocess_rgb(rgb, cfg)
    expected = (np.array([0, 128, 255]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-5)
    depth = np.array([[1.0, np.nan], [0.0, 20.0]], np.float32)
    d, invalid = preprocess_depth(depth, cfg)
    assert invalid == 0.5
    # 1 m -> 25.5 on the 8-bit scale; invalid -> 0; 20 m clipped to 255.
    expected_d = (np.array([[25.5, 0], [0, 255]]) / 255 - 0.12176) / 0.09752
    np.testing.assert_allclose(d[0], expected_d, rtol=1e-5)


def test_export_cli_writes_a_checked_onnx_file(reference_checkpoint, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "rfnet.onnx"
    run = subprocess.run([sys.executable, "-m", "rfnet.onnx_export", str(reference_checkpoint), str(out),
                          "--height", "96", "--width", "128", "--rgb-only"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "agree on 100" in run.stderr or "agree on 99.9" in run.stderr
    engine = load_engine(EngineConfig(str(out), ModelSpec(30, 96, 128, use_depth=False), "onnxruntime")).engine
    assert engine.infer(inputs_for(ModelSpec(30, 96, 128, False), 0)[0]).labels.shape == (96, 128)
    bad = subprocess.run([sys.executable, "-m", "rfnet.onnx_export", str(tmp_path / "none.pth"), str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr


def test_the_backend_registry_is_the_one_list_of_names_and_precisions():
    from rfnet.engines import AUTO, BACKENDS, backend_named, engine_registry
    from seg_edge_node.config import EdgeNodeConfig

    assert BACKENDS == tuple(engine_registry) == ("onnxruntime", "tensorrt", "torch")
    assert {name: b.precisions for name, b in engine_registry.items()} == {
        "onnxruntime": ("fp32", "int8"), "tensorrt": ("fp16", "fp32", "int8"), "torch": ("fp32",)}
    assert backend_named("tensorrt").resolve(AUTO) == "fp16" and backend_named("onnxruntime").resolve(AUTO) == "fp32"
    with pytest.raises(ValueError, match="precision='int8' is not available with backend torch: use auto, fp32"):
        backend_named("torch").resolve("int8")
    # The node's configuration checks against the same table.
    with pytest.raises(ValueError, match="parameter backend='tflite': use onnxruntime, tensorrt, torch"):
        EdgeNodeConfig(backend="tflite").validate()
    with pytest.raises(ValueError, match="parameter precision='fp16' is not available with backend onnxruntime"):
        EdgeNodeConfig(precision="fp16").validate()
    EdgeNodeConfig(backend="torch", precision="fp32").validate()
