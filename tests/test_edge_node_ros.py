"""The edge node as a real process over DDS, fed and observed by other real processes.

A synthetic camera process publishes frames, the node segments them, a recorder
process collects ~/labels; the test rebuilds each frame and checks the labels
equal what the same engine computes offline, stamp by stamp.
"""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import yaml
from std_msgs.msg import Header

from rfnet.engines import EngineConfig, ModelSpec, load_engine
from rfnet.preprocessing import PreprocessConfig
from ros_processes import (NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, python_script, ros_env,
                           wait_serving, wait_until)
from seg_edge_node.image_conversion import (compressed_to_rgb, image_to_depth_m, image_to_rgb,
                                            rgb_to_image)
from seg_edge_node.pipeline import SegmentationPipeline
from seg_harness.synthetic_camera import depth_to_16uc1, rgb_to_compressed, synthetic_frame

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

CAM_W, CAM_H = 320, 240
NET_H, NET_W = 128, 160


def start_node(tmp, env, checkpoint, **overrides) -> Proc:
    params = {"model_path": checkpoint, "input_height": NET_H, "input_width": NET_W,
              "cache_dir": tmp / "cache", **overrides}
    return Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp)


def offline_labels(checkpoint, cache, use_depth: bool, frames: dict[int, tuple]) -> dict[int, np.ndarray]:
    spec = ModelSpec(30, NET_H, NET_W, use_depth)
    engine = load_engine(EngineConfig(str(checkpoint), spec, "onnxruntime", str(cache))).engine
    pipeline = SegmentationPipeline(engine, PreprocessConfig(NET_H, NET_W))
    return {i: pipeline.run(rgb, depth).labels for i, (rgb, depth) in frames.items()}


def read_stamp_log(path) -> dict[int, int]:
    return {int(s): int(i) for s, i in (line.split() for line in path.read_text().splitlines())}


@pytest.fixture(scope="module")
def rgbd_node(tmp_path_factory, reference_checkpoint):
    tmp = tmp_path_factory.mktemp("rgbd_node")
    env = ros_env(tmp)
    node = start_node(tmp, env, reference_checkpoint)
    wait_serving(node)
    yield tmp, env, node
    node.stop()


def test_labels_match_offline_engine_and_keep_camera_stamps(rgbd_node, reference_checkpoint):
    tmp, env, node = rgbd_node
    count = 12
    recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp / "rec",
                                              "--count", count, "--overlay-topic", "/seg_edge_node/overlay",
                                              "--duration", 60), env, tmp)
    wait_until(lambda: "recorder ready" in recorder.log(), 40, "the recorder")
    camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", CAM_W, "--height", CAM_H,
                                          "--rate", 5, "--count", count, "--distinct", 4,
                                          "--stamp-log", tmp / "stamps.txt"), env, tmp)
    assert camera.wait(60) == 0, camera.log()
    assert recorder.wait(60) == 0, recorder.log()
    assert node.alive(), node.log()

    rec = np.load(tmp / "rec.npz")
    sent = read_stamp_log(tmp / "stamps.txt")
    stamps, labels = rec["stamps_ns"], rec["labels"]
    assert len(stamps) >= count - 2, f"only {len(stamps)} of {count} frames segmented"
    assert set(stamps) <= set(sent), "labels must carry the camera frame's stamp"
    assert labels.shape[1:] == (CAM_H, CAM_W), "labels come back at camera resolution"

    # Rebuild what the node received, through the same message conversions.
    frames = {}
    for i in set(sent.values()):
        rgb, depth = synthetic_frame(i, CAM_H, CAM_W)
        header = Header(frame_id="camera")
        frames[i] = (image_to_rgb(rgb_to_image(rgb, header)), image_to_depth_m(depth_to_16uc1(depth, header)))
    expected = offline_labels(reference_checkpoint, tmp / "cache", True, frames)
    for stamp, got in zip(stamps, labels):
        want = expected[sent[int(stamp)]]
        assert np.array_equal(got, want), f"frame {sent[int(stamp)]}: {(got != want).mean():.4%} of pixels differ"
    assert len(np.unique(labels)) > 1

    summary = json.loads((tmp / "rec.json").read_text())
    assert summary["overlays_received"] > 0 and summary["overlay_encoding"] == "rgb8"


def test_node_came_up_with_the_yaml_parameters(rgbd_node):
    tmp, env, _ = rgbd_node
    yaml_params = yaml.safe_load(PARAMS_FILE.read_text())["/**"]["ros__parameters"]
    names = ["rgb_topic", "depth_topic", "use_depth", "backend", "pair_tolerance_s", "overlay_alpha",
             "input_qos", "depth_units_per_metre", "input_height"]
    reader = Proc("params", python_script("get_parameters.py", "seg_edge_node", *names), env, tmp)
    assert reader.wait(60) == 0, reader.log()
    got = json.loads(reader.log().strip().splitlines()[-1])
    for name in names[:-1]:
        assert got[name] == yaml_params[name], name
    assert got["input_height"] == NET_H  # a -p override on top of the file wins


def test_bad_input_is_counted_per_reason_and_the_node_keeps_serving(rgbd_node):
    tmp, env, node = rgbd_node
    recorder = Proc("bad_recorder", python_module("seg_harness.result_recorder", "--out", tmp / "bad",
                                                  "--duration", 15), env, tmp)
    publisher = Proc("bad_publisher", python_script("bad_input_publisher.py"), env, tmp)
    assert publisher.wait(60) == 0, publisher.log()
    assert recorder.wait(30) == 0, recorder.log()
    assert node.alive(), node.log()
    summary = json.loads((tmp / "bad.json").read_text())
    diag = summary["diagnostics"]
    counts = {k: int(v) for k, v in diag.items() if k.startswith("rejected_")}
    assert counts == {
        "rejected_rgb": 4, "rejected_rgb_encoding": 1, "rejected_rgb_truncated": 1, "rejected_rgb_step": 1,
        "rejected_rgb_size": 1, "rejected_rgb_decode": 0, "rejected_rgb_header": 0,
        "rejected_depth": 2, "rejected_depth_encoding": 1, "rejected_depth_registration": 1,
        "rejected_depth_step": 0, "rejected_depth_size": 0, "rejected_depth_truncated": 0,
        "rejected_depth_header": 0}, counts
    assert int(diag["depth_without_rgb"]) >= 1, diag
    assert int(diag["depth_all_invalid"]) == 2, diag
    # NaN depth, zero depth and the final good frame are still segmented.
    assert summary["labels_received"] >= 3
    log = node.log()
    # One throttled line per reason: three RGB reasons within 2.5 s all get their own line.
    for says in ("refused (encoding): encoding 'yuv422'", "refused (truncated)", "refused (step)",
                 "refused (size): image is 1x1, smaller than 32 pixels", "refused (registration)",
                 "aligned_depth_to_color", "no valid pixel"):
        assert says in log, says


def test_sigterm_shuts_the_node_down_cleanly(rgbd_node):
    _, _, node = rgbd_node
    node.signal(signal.SIGTERM)
    assert node.wait(15) == 0, node.log()


def test_compressed_rgb_only(tmp_path, reference_checkpoint):
    env = ros_env(tmp_path)
    topic = "/camera/color/image_raw/compressed"
    node = start_node(tmp_path, env, reference_checkpoint, use_depth="false", rgb_compressed="true",
                      rgb_topic=topic)
    try:
        wait_serving(node)
        recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp_path / "rec",
                                                  "--count", 5, "--duration", 60), env, tmp_path)
        wait_until(lambda: "recorder ready" in recorder.log(), 40, "the recorder")
        camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", CAM_W, "--height",
                                              CAM_H, "--rate", 5, "--count", 5, "--no-depth", "--compressed",
                                              "png", "--rgb-topic", topic, "--stamp-log", tmp_path / "s.txt"),
                      env, tmp_path)
        assert camera.wait(60) == 0, camera.log()
        assert recorder.wait(60) == 0, recorder.log()
        rec, sent = np.load(tmp_path / "rec.npz"), read_stamp_log(tmp_path / "s.txt")
        assert len(rec["stamps_ns"]) >= 4
        frames = {i: (compressed_to_rgb(rgb_to_compressed(synthetic_frame(i, CAM_H, CAM_W)[0], Header(), "png")),
                      None) for i in set(sent.values())}
        expected = offline_labels(reference_checkpoint, tmp_path / "cache", False, frames)
        for stamp, got in zip(rec["stamps_ns"], rec["labels"]):
            assert np.array_equal(got, expected[sent[int(stamp)]])
    finally:
        assert node.stop() == 0, node.log()


@pytest.mark.parametrize("problem,expected", [
    ("missing", "checkpoint not found"),
    ("classes", "predicts 30 classes but the class file lists 2"),
    ("backend", "parameter backend='tflite'"),
    ("range", "parameter overlay_alpha:"),
])
def test_bad_model_or_config_exits_with_a_clear_message(tmp_path, reference_checkpoint, problem, expected):
    env = ros_env(tmp_path)
    checkpoint, extra = reference_checkpoint, {}
    if problem == "missing":
        checkpoint = tmp_path / "nowhere.pth"
    elif problem == "classes":
        (tmp_path / "two.yaml").write_text("classes:\n  - {id: 0, name: a}\n  - {id: 1, name: b}\n")
        extra = {"class_file": tmp_path / "two.yaml"}
    elif problem == "range":
        extra = {"overlay_alpha": 1.5}
    else:
        extra = {"backend": "tflite"}
    node = start_node(tmp_path, env, checkpoint, **extra)
    assert node.wait(60) == 2
    assert expected in node.log()


def test_a_params_file_keyed_by_wildcard_applies_under_a_namespace(tmp_path, reference_checkpoint):
    """The shipped YAML's `/**` key: no rewriting of the file for a namespaced node."""
    doc = yaml.safe_load(PARAMS_FILE.read_text())
    doc["/**"]["ros__parameters"].update(overlay_alpha=0.3, camera_stall_periods=7)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(doc))
    env = ros_env(tmp_path)
    command = node_command(NODE_EXE, params, {"model_path": reference_checkpoint, "input_height": NET_H,
                                              "input_width": NET_W, "cache_dir": tmp_path / "cache"})
    node = Proc("node", command + ["-r", "__ns:=/dog1"], env, tmp_path)
    try:
        wait_serving(node)
        reader = Proc("params", python_script("get_parameters.py", "dog1/seg_edge_node", "overlay_alpha",
                                              "camera_stall_periods", "input_height"), env, tmp_path)
        assert reader.wait(60) == 0, reader.log()
        got = json.loads(reader.log().strip().splitlines()[-1])
        assert got == {"overlay_alpha": 0.3, "camera_stall_periods": 7, "input_height": NET_H}
    finally:
        assert node.stop() == 0, node.log()
