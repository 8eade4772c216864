"""EdgeRuntime without DDS: the node's frame logic on arrays, with a real RFNet on ONNX Runtime.

A fake clock drives the windowed diagnostics (recent bad input, stalled camera,
unpaired RGB); everything else is real: checkpoint, export, engine, INT8 quantization.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import cv2
import numpy as np
import pytest

from rfnet.engines import EngineConfig, ModelSpec, load_calibration, load_engine
from seg_core import ConfigError
from rfnet.preprocessing import PreprocessConfig
from seg_edge_node.config import EdgeNodeConfig
from seg_edge_node.int8_calibration import Int8Config, calibration_from_index
from seg_edge_node.pipeline import SegmentationPipeline
from seg_edge_node.rejections import ImageConversionError
from seg_edge_node.runtime import COUNTERS, OK, WARN, EdgeRuntime, StartupError

NET_H, NET_W = 64, 96
CAM_H, CAM_W = 120, 160


class FakeClock:
    """Monotonic seconds the test moves by hand (stands in for time.monotonic)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def make_config(checkpoint, tmp_path, **changes) -> EdgeNodeConfig:
    cfg = EdgeNodeConfig(model_path=str(checkpoint), input_height=NET_H, input_width=NET_W,
                         cache_dir=str(tmp_path / "cache"), threads=1, device="cpu")
    sections = {k: v for k, v in changes.items() if k in ("mining", "int8", "uplink", "updates")}
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if k not in sections}, **sections)


def make_runtime(checkpoint, tmp_path, clock=time.monotonic, **changes) -> EdgeRuntime:
    return EdgeRuntime(make_config(checkpoint, tmp_path, **changes), clock=clock)


def camera_frame(seed=0, h=CAM_H, w=CAM_W):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(rgb, (9, 9), 3)          # some structure, so the labels are not noise
    depth = rng.uniform(0.5, 8.0, (h, w)).astype(np.float32)
    return rgb, depth


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime_cache")


def test_a_frame_gives_what_to_publish_with_the_camera_stamp(reference_checkpoint, tmp_path):
    states = []
    rt = EdgeRuntime(make_config(reference_checkpoint, tmp_path), on_model_state=states.append,
                     wall_clock_ns=lambda: 5_000_000_000 + 40_000_000)
    assert [s.state for s in states] == ["loading", "serving"] and states[-1].version == rt.model_version
    rgb, depth = camera_frame()
    out = rt.process(rgb, depth, 5_000_000_000, "camera_color_optical_frame", overlay=True, colour_labels=True)
    assert (out.stamp_ns, out.frame_id, out.model_version) == (5_000_000_000, "camera_color_optical_frame",
                                                               rt.model_version)
    assert out.labels.shape == out.confidence.shape == (CAM_H, CAM_W)
    engine = load_engine(EngineConfig(str(reference_checkpoint), ModelSpec(30, NET_H, NET_W), "onnxruntime",
                                      str(tmp_path / "cache"), "cpu", 1)).engine
    expected = SegmentationPipeline(engine, PreprocessConfig(NET_H, NET_W)).run(rgb, depth).labels
    np.testing.assert_array_equal(out.labels, expected)
    np.testing.assert_array_equal(out.colour_labels, rt.palette[expected])
    assert out.overlay.shape == (CAM_H, CAM_W, 3)
    snap = rt.health().values
    assert snap["frames_segmented"] == "1" and float(snap["latency_ms_p50"]) == pytest.approx(40.0)
    plain = rt.process(rgb, depth, 6_000_000_000, "f")
    assert plain.overlay is None and plain.colour_labels is None
    rt.stop()


def test_every_counter_is_shown_from_the_start(reference_checkpoint, tmp_path, clock):
    rt = make_runtime(reference_checkpoint, tmp_path, clock)
    health = rt.health()
    assert {name: health.values[name] for name in COUNTERS} == {name: "0" for name in COUNTERS}
    assert "rejected_rgb_encoding" in COUNTERS and "rejected_depth_registration" in COUNTERS
    assert health.level == OK and health.values["precision"] == "fp32"


def test_small_and_unregistered_images_are_refused_with_a_reason(reference_checkpoint, tmp_path, caplog):
    rt = make_runtime(reference_checkpoint, tmp_path)
    rgb, depth = camera_frame()
    with caplog.at_level(logging.WARNING, logger="seg_edge_node"):
        assert rt.process(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1), np.float32), 1, "f") is None
        assert rt.process(rgb[:31], depth[:31], 2, "f") is None
        assert rt.process(rgb, np.ones((60, 200), np.float32), 3, "f") is None
        assert rt.process(rgb, np.ones((20, 20), np.float32), 4, "f") is None
    values = rt.health().values
    assert values["rejected_rgb_size"] == "2" and values["rejected_rgb"] == "2"
    assert values["rejected_depth_registration"] == "1" and values["rejected_depth_size"] == "1"
    assert values["frames_segmented"] == "0"
    assert "image is 1x1, smaller than 32 pixels on a side (the network's stride)" in caplog.text
    assert "depth is 200x60 but RGB is 160x120" in caplog.text


def test_each_reason_has_its_own_throttled_log_line(reference_checkpoint, tmp_path, clock, caplog):
    rt = make_runtime(reference_checkpoint, tmp_path, clock)
    with caplog.at_level(logging.WARNING, logger="seg_edge_node"):
        for _ in range(5):
            rt.reject("rgb", ImageConversionError("encoding", "encoding 'yuv422' cannot be read"))
        rt.reject("rgb", ImageConversionError("step", "step 640 is less than width*3"))
        rt.reject("depth", ImageConversionError("truncated", "data has 10 bytes"))
        clock.now += 6.0
        rt.reject("rgb", ImageConversionError("encoding", "encoding 'yuv422' cannot be read"))
    lines = [r.getMessage() for r in caplog.records]
    assert sum("refused (encoding)" in line for line in lines) == 2
    assert any("refused (step)" in line for line in lines)
    assert any("depth on /camera/aligned_depth_to_color/image_raw refused (truncated)" in line for line in lines)
    assert "(4 more like this in the last 6 s)" in lines[-1]
    values = rt.health().values
    assert (values["rejected_rgb_encoding"], values["rejected_rgb_step"], values["rejected_depth_truncated"]) \
        == ("6", "1", "1")


def test_warn_follows_the_recent_window(reference_checkpoint, tmp_path, clock):
    rt = make_runtime(reference_checkpoint, tmp_path, clock, diagnostics_window_s=3.0, use_depth=False)
    rgb, _ = camera_frame()
    rt.reject("rgb", ImageConversionError("encoding", "bad"))
    clock.now += 0.1
    rt.rgb_arrived(1, "msg")
    health = rt.health()
    assert health.level == WARN and "bad input seen in the last 3 s: rejected rgb (encoding) x1" in health.message
    for i in range(40):                                    # good frames at 10 Hz
        clock.now += 0.1
        rt.rgb_arrived(i, "msg")
        assert rt.process(rgb, None, i, "f") is not None
    health = rt.health()
    assert health.level == OK, health.message
    assert health.values["rejected_rgb_encoding"] == "1"  # the total stays


def test_a_stalled_camera_turns_warn_and_recovers(reference_checkpoint, tmp_path, clock):
    rt = make_runtime(reference_checkpoint, tmp_path, clock, use_depth=False, camera_stall_periods=10)
    clock.now += 9.0
    assert rt.health().level == OK                        # 10 diagnostics periods of grace at start
    clock.now += 2.0
    health = rt.health()
    assert health.level == WARN and "no frame on /camera/color/image_raw in 11 s since start" in health.message
    for i in range(20):
        clock.now += 0.05
        rt.rgb_arrived(i, "msg")
    assert rt.health().level == OK
    clock.now += 0.45                                     # 9 periods of 50 ms
    assert rt.health().level == OK
    clock.now += 0.1
    health = rt.health()
    assert health.level == WARN and "camera stalled: no frame on /camera/color/image_raw for 0.6 s " \
        "(10 periods of its 50 ms)" in health.message
    rt.rgb_arrived(99, "msg")
    assert rt.health().level == OK


def test_rgb_without_depth_is_explained(reference_checkpoint, tmp_path, clock, caplog):
    rt = make_runtime(reference_checkpoint, tmp_path, clock)     # use_depth true, as shipped
    with caplog.at_level(logging.WARNING, logger="seg_edge_node"):
        for i in range(30):
            clock.now += 0.1
            rt.rgb_arrived(i * 100_000_000, f"rgb{i}")
    health = rt.health()
    assert health.level == WARN
    assert "RGB frames in the last 10 s found no depth: no depth image has arrived on " \
           "/camera/aligned_depth_to_color/image_raw" in health.message
    assert "set use_depth:=false" in health.message
    assert int(health.values["rgb_without_depth"]) > 20 and rt.next_input(0.0) is None
    warnings = [r.getMessage() for r in caplog.records if "are not pairing with depth" in r.getMessage()]
    assert len(warnings) == 1                               # 3 s of frames: one line per 5 s

    # Depth that comes, but with other stamps: the gap is named.
    rt2 = make_runtime(reference_checkpoint, tmp_path, clock)
    for i in range(20):
        clock.now += 0.1
        rt2.depth_arrived(i * 100_000_000 + 50_000_000, f"d{i}")
        rt2.rgb_arrived(i * 100_000_000, f"rgb{i}")
    message = rt2.health().message
    assert "its stamps are about 50 ms from the RGB stamps, more than pair_tolerance_s=0.02" in message

    # Paired frames reach the worker, newest first.
    rt3 = make_runtime(reference_checkpoint, tmp_path, clock)
    rt3.rgb_arrived(7, "rgb7")
    rt3.depth_arrived(7, "d7")
    assert rt3.next_input(0.0) == ("rgb7", "d7")


def test_live_parameters_apply_and_the_rest_are_refused(reference_checkpoint, tmp_path):
    rt = make_runtime(reference_checkpoint, tmp_path)
    miner = rt.pipeline.miner
    assert rt.apply_live({"overlay_alpha": 0.2, "mining.confidence_threshold": 0.6}) == ""
    assert rt.config.overlay_alpha == 0.2 and rt.pipeline.miner is not miner
    assert rt.pipeline.miner.config.confidence_threshold == 0.6
    assert "model_path can only be set at start" in rt.apply_live({"model_path": "/x.pth"})
    assert "mining.policy='nope'" in rt.apply_live({"mining.policy": "nope"})
    assert "overlay_alpha" in rt.apply_live({"overlay_alpha": 2.0})
    assert rt.config.overlay_alpha == 0.2 and rt.config.mining.policy == "confidence_fraction"


def test_startup_problems_raise_with_a_message(reference_checkpoint, tmp_path):
    # Settings that cannot work are refused by the configuration itself, before a runtime exists.
    with pytest.raises(ConfigError, match="precision='fp16' is not available with backend onnxruntime"):
        make_config(reference_checkpoint, tmp_path, precision="fp16")
    with pytest.raises(ConfigError, match="pair_tolerance_s"):
        make_config(reference_checkpoint, tmp_path, pair_tolerance_s=float("nan"))
    states = []
    with pytest.raises(StartupError, match="checkpoint not found"):
        EdgeRuntime(make_config(tmp_path / "nowhere.pth", tmp_path), on_model_state=states.append)
    assert states[-1].state == "failed" and "checkpoint not found" in states[-1].error


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)
    return predicate()


def test_int8_calibrates_on_camera_frames_then_swaps_and_is_reused(reference_checkpoint, tmp_path):
    cfg = dict(precision="int8", int8=Int8Config(calibration_frames=3, sample_every=2, min_agreement=0.5))
    rt = make_runtime(reference_checkpoint, tmp_path, **cfg)
    assert rt.precision == "fp32" and rt.health().values["int8_calibration_frames"] == "0/3"
    for i in range(6):
        rgb, depth = camera_frame(i)
        assert rt.process(rgb, depth, i, "f") is not None
    assert wait_for(lambda: rt.precision == "int8"), rt.health().message
    health = rt.health()
    assert health.values["precision"] == "int8" and "int8_calibration_frames" not in health.values
    assert "int8" in health.message and "not used" not in health.message
    stored = load_calibration(tmp_path / "cache", rt.spec)
    assert len(stored) == 3 and "3 camera frames from /camera/color/image_raw, every 2th" in stored.source
    out = rt.process(*camera_frame(9), 9, "f")
    assert out is not None and out.labels.shape == (CAM_H, CAM_W)
    rt.stop()
    quantized = list((tmp_path / "cache" / "onnxruntime_int8").glob("*.int8.onnx"))
    assert len(quantized) == 1

    # A restart serves INT8 at once, from the stored frames and the cached quantized model.
    again = make_runtime(reference_checkpoint, tmp_path, **cfg)
    assert again.precision == "int8" and "int8_calibration_frames" not in again.health().values
    assert list((tmp_path / "cache" / "onnxruntime_int8").glob("*.int8.onnx")) == quantized


def test_int8_that_disagrees_with_the_float_model_is_not_used(reference_checkpoint, tmp_path):
    rt = make_runtime(reference_checkpoint, tmp_path, precision="int8",
                      int8=Int8Config(calibration_frames=1, sample_every=1, min_agreement=1.0))
    # Calibrated on one flat frame, then asked about a busy one: full agreement is not expected.
    rt.process(np.full((CAM_H, CAM_W, 3), 128, np.uint8), np.full((CAM_H, CAM_W), 2.0, np.float32), 0, "f")
    assert wait_for(lambda: "engine not used" in rt.health().message)
    health = rt.health()
    assert rt.precision == "fp32" and health.level == WARN and "agree with the fp32 model's on only" in \
        health.message


def test_int8_calibration_index(reference_checkpoint, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    lines = []
    for i in range(3):
        rgb, depth = camera_frame(i)
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"{i}_d.png"), (depth * 1000).astype(np.uint16))
        cv2.imwrite(str(folder / f"{i}_l.png"), np.zeros((CAM_H, CAM_W), np.uint8))
        lines.append(f"{i}.png {i}_d.png {i}_l.png")
    index = folder / "calib.txt"
    index.write_text("\n".join(lines) + "\n")
    calibration = calibration_from_index(index, Int8Config(calibration_frames=2), PreprocessConfig(NET_H, NET_W),
                                         use_depth=True)
    assert len(calibration) == 2 and calibration.batches[0][1].shape == (1, NET_H, NET_W)
    rt = make_runtime(reference_checkpoint, tmp_path, precision="int8",
                      int8=Int8Config(calibration_index=str(index), calibration_frames=2))
    assert rt.precision == "int8"
    assert rt.process(*camera_frame(5), 5, "f") is not None
    with pytest.raises(ConfigError, match="int8.calibration_index"):
        Int8Config(calibration_index=str(tmp_path / "missing.txt"))
