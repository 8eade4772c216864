"""What the node tells people and consumers, as real processes over DDS: diagnostics that
follow the recent window (bad input, a stalled camera, RGB without depth), log lines that
say why, live parameters with descriptors, and the class list for consumers."""
from __future__ import annotations

import json
import time

import pytest

from rfnet.classes import load_class_list
from ros_processes import NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, python_script, ros_env, \
    wait_serving, wait_until
from seg_edge_node.runtime import COUNTERS

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

CAM_W, CAM_H = 320, 240


def start_node(tmp, env, checkpoint, **overrides) -> Proc:
    params = {"model_path": checkpoint, "input_height": 128, "input_width": 160, "cache_dir": tmp / "cache",
              **overrides}
    return Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp)


def read_diagnostics(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def camera(tmp, env, name, *args) -> Proc:
    return Proc(name, python_module("seg_harness.synthetic_camera", "--width", CAM_W, "--height", CAM_H,
                                    "--distinct", 2, *args), env, tmp)


def test_rgb_only_camera_with_use_depth_true_is_explained(tmp_path, reference_checkpoint):
    """The shipped parameters (use_depth true) with a camera that has no depth stream."""
    env = ros_env(tmp_path)
    node = start_node(tmp_path, env, reference_checkpoint)
    diag_path = tmp_path / "diag.jsonl"
    try:
        wait_serving(node)
        diag = Proc("diag", python_script("diagnostics_log.py", diag_path), env, tmp_path)
        wait_until(lambda: "diagnostics log ready" in diag.log(), 40, "the diagnostics log")
        cam = camera(tmp_path, env, "camera", "--no-depth", "--rate", 5, "--count", 20)
        assert cam.wait(60) == 0, cam.log()
        wait_until(lambda: any("found no depth" in d["_message"] for d in read_diagnostics(diag_path)), 10,
                   "a diagnostics WARN about RGB without depth")
        warned = [d for d in read_diagnostics(diag_path) if "found no depth" in d["_message"]]
        assert all(d["_level"] == 1 for d in warned)
        assert "no depth image has arrived on /camera/aligned_depth_to_color/image_raw" in warned[-1]["_message"]
        assert warned[-1]["frames_segmented"] == "0" and int(warned[-1]["rgb_without_depth"]) > 0
        log = node.log()
        assert "are not pairing with depth" in log and "set use_depth:=false" in log
        # Throttled: one line per 5 s, not one per frame.
        assert log.count("are not pairing with depth") <= 3
    finally:
        assert node.stop() == 0, node.log()


def test_diagnostics_follow_the_recent_window_and_parameters_change_live(tmp_path, reference_checkpoint):
    env = ros_env(tmp_path)
    node = start_node(tmp_path, env, reference_checkpoint, diagnostics_window_s=3.0, camera_stall_periods=5)
    diag_path = tmp_path / "diag.jsonl"
    try:
        wait_serving(node)
        Proc("diag", python_script("diagnostics_log.py", diag_path), env, tmp_path)
        wait_until(lambda: read_diagnostics(diag_path), 40, "the first diagnostics message")

        # Every counter is there from the start, at 0, and nothing is wrong yet.
        first = read_diagnostics(diag_path)[0]
        assert {name: first[name] for name in COUNTERS} == {name: "0" for name in COUNTERS}
        problems = first["_message"].split("; ")[1:]
        # On a busy machine the first message can come after the stall time: then it may say that.
        assert problems == [] or (len(problems) == 1 and problems[0].startswith(
            "no frame on /camera/color/image_raw in") and first["_level"] == 1), first

        # A late subscriber still gets the class list; colour labels flow while subscribed.
        reader = Proc("label_info", python_script("label_info.py"), env, tmp_path)
        wait_until(lambda: "label info reader ready" in reader.log(), 40, "the label info reader")

        bad = Proc("bad_publisher", python_script("bad_input_publisher.py"), env, tmp_path)
        assert bad.wait(60) == 0, bad.log()
        during_bad = [d for d in read_diagnostics(diag_path) if "bad input seen in the last 3 s" in d["_message"]]
        assert during_bad and all(d["_level"] == 1 for d in during_bad)
        assert any("rejected rgb (encoding) x1" in d["_message"] for d in during_bad), during_bad

        good = camera(tmp_path, env, "camera", "--rate", 5, "--count", 40)
        assert good.wait(60) == 0, good.log()
        t_last_frame = time.time_ns()
        assert reader.wait(30) == 0, reader.log()
        after_good = [d for d in read_diagnostics(diag_path) if d["_received_ns"] < t_last_frame]
        assert after_good[-1]["_level"] == 0, after_good[-1]            # bad input has left the window
        assert after_good[-1]["rejected_rgb_encoding"] == "1"          # counters keep the total

        wait_until(lambda: "camera stalled" in read_diagnostics(diag_path)[-1]["_message"], 10,
                   "a camera-stalled WARN")
        stalled = read_diagnostics(diag_path)[-1]
        assert stalled["_level"] == 1 and "(5 periods of its" in stalled["_message"], stalled
        assert (stalled["_received_ns"] - t_last_frame) / 1e9 < 4.0

        info = json.loads(reader.log().strip().splitlines()[-1])
        names = load_class_list().names
        assert info["label_info"]["class_map"] == [[i, n] for i, n in enumerate(names)]
        assert info["label_info"]["threshold"] == 0.0
        colour = info["colour_labels"]
        assert (colour["encoding"], colour["width"], colour["height"]) == ("rgb8", CAM_W, CAM_H)
        palette = load_class_list().palette()[:len(names)].tolist()
        assert colour["colours"] and all(c in palette for c in colour["colours"])

        setter = Proc("params", python_script(
            "set_parameters.py", "seg_edge_node", "overlay_alpha=0.25", "mining.confidence_threshold=0.5",
            'mining.policy="entropy"', 'model_path="/elsewhere.pth"', "overlay_alpha=1.5",
            'mining.policy="nope"'), env, tmp_path)
        assert setter.wait(60) == 0, setter.log()
        out = json.loads(setter.log().strip().splitlines()[-1])
        results = out["results"]
        # Later assignments of the same name overwrite earlier ones in the dict: read the log for those.
        assert results["mining.confidence_threshold"] == {"successful": True, "reason": ""}
        assert not results["model_path"]["successful"] and "read-only" in results["model_path"]["reason"]
        assert not results["overlay_alpha"]["successful"]                        # 1.5 is out of range
        assert not results["mining.policy"]["successful"] and "mining.policy='nope'" in \
            results["mining.policy"]["reason"]
        assert "parameters changed: overlay_alpha=0.25" in node.log()
        assert "parameters changed: mining.policy=entropy" in node.log()
        d = out["descriptors"]
        assert d["overlay_alpha"]["read_only"] is False and d["overlay_alpha"]["floating_point_range"] == [[0, 1]]
        assert d["model_path"]["read_only"] is True and "checkpoint" in d["model_path"]["description"]
    finally:
        assert node.stop() == 0, node.log()
