"""Robot and cloud together: node, bridge and broker as separate processes.

Hard frames leave the node over MQTT, the bridge refines and stores them and the
refined mask comes back on the node's ~/refined_labels; easy frames stay home;
the budget holds; a 30 s broker outage loses nothing.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bridge_processes import start_bridge
from seg_harness.local_cloud import LocalBroker, free_port
from cloud_bridge.sample_store import SqliteSampleStore
from ros_processes import (NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, ros_env, wait_serving,
                           wait_until)

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

CAM_W, CAM_H = 320, 240


class Stack:
    """broker + bridge + node (+ recorder and camera on demand), all real processes."""

    def __init__(self, tmp, checkpoint, **node_params):
        self.tmp = tmp
        self.bridge = self.node = None
        self.env = ros_env(tmp)
        self.broker = LocalBroker(tmp / "broker").start()
        self.storage = tmp / "store"
        self.bridge = start_bridge(tmp, self.broker.port, "b1", self.storage)
        params = {"model_path": checkpoint, "input_height": 128, "input_width": 160,
                  "cache_dir": tmp / "cache", "uplink.host": "127.0.0.1", "uplink.port": self.broker.port,
                  "uplink.robot_id": "dog1", "uplink.spool_dir": tmp / "spool", **node_params}
        self.node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), self.env, tmp)
        wait_serving(self.node)
        wait_until(lambda: "connected to the broker" in self.node.log(), 30, "the node's uplink to connect")

    def record_and_play(self, frames: int, rate: float, recorder_seconds: float) -> Proc:
        recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", self.tmp / "rec",
                                                  "--duration", recorder_seconds), self.env, self.tmp)
        wait_until(lambda: "recorder ready" in recorder.log(), 40, "the recorder")
        self.camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", CAM_W,
                                                   "--height", CAM_H, "--rate", rate, "--count", frames,
                                                   "--distinct", 4), self.env, self.tmp)
        return recorder

    def stored(self) -> set[str]:
        return stored_uuids(self.storage)

    def stop(self):
        for p in (getattr(self, "camera", None), self.node, self.bridge):
            if p is not None:
                p.stop()
        self.broker.stop()


def stored_uuids(storage) -> set[str]:
    with SqliteSampleStore(storage / "samples") as store:
        return {info.frame_uuid for info in store.list(limit=100000)}


def results(tmp) -> tuple[list[dict], list[dict], dict]:
    summary = json.loads((tmp / "rec.json").read_text())
    edge = [r for r in summary["results"] if r["source"] == "edge"]
    cloud = [r for r in summary["results"] if r["source"] == "cloud"]
    return edge, cloud, summary


def test_hard_frames_go_up_and_refined_masks_come_back(tmp_path, reference_checkpoint):
    stack = Stack(tmp_path, reference_checkpoint, **{
        "mining.policy": "random", "mining.random_rate": 0.5, "mining.seed": 3,
        "mining.budget_per_minute": 600.0, "mining.budget_burst": 100})
    try:
        recorder = stack.record_and_play(frames=12, rate=4.0, recorder_seconds=20)
        assert stack.camera.wait(60) == 0, stack.camera.log()
        assert recorder.wait(60) == 0, recorder.log()
        edge, cloud, summary = results(tmp_path)
        hard = {r["frame_uuid"] for r in edge if r["is_hard"]}
        easy = {r["frame_uuid"] for r in edge if not r["is_hard"]}
        assert len(edge) >= 10 and hard and easy, edge
        assert all(r["mining_policy"] == "random" for r in edge)
        # Every hard frame, and only those, reached the bridge and came back refined.
        assert set(stack.stored()) == hard
        assert {r["frame_uuid"] for r in cloud} == hard
        assert all(r["refiner"] == "regions_felzenszwalb+majority_vote" for r in cloud)
        # ~/refined_labels: camera resolution, the frame's own stamp, the stored labels.
        rec = np.load(tmp_path / "rec.npz")
        stamp_of = {r["frame_uuid"]: r["stamp_ns"] for r in edge}
        refined = dict(zip(rec["refined_stamps_ns"].tolist(), rec["refined_labels"]))
        assert set(refined) == {stamp_of[u] for u in hard}
        with SqliteSampleStore(stack.storage / "samples") as store:
            for uuid in hard:
                sample = store.get(uuid)
                assert sample.rgb.shape[:2] == (CAM_H, CAM_W) and sample.label_source == "region"
                np.testing.assert_array_equal(refined[stamp_of[uuid]], sample.labels)
                assert sample.stamp_ns == stamp_of[uuid]
        diag = summary["diagnostics"]
        assert int(diag["uplink_acknowledged"]) == len(hard)
        assert int(diag["uplink_bytes_published"]) > 5000 * len(hard)   # JPEG + PNGs of 240x320 frames
    finally:
        stack.stop()


def test_upload_budget_caps_what_goes_up(tmp_path, reference_checkpoint):
    stack = Stack(tmp_path, reference_checkpoint, **{
        "mining.policy": "random", "mining.random_rate": 1.0,       # every frame is hard
        "mining.budget_per_minute": 6.0, "mining.budget_burst": 2})
    try:
        recorder = stack.record_and_play(frames=15, rate=5.0, recorder_seconds=12)
        t0 = time.monotonic()
        assert stack.camera.wait(60) == 0
        assert recorder.wait(60) == 0
        elapsed_min = (time.monotonic() - t0) / 60
        edge, cloud, summary = results(tmp_path)
        assert len(edge) >= 12 and all(r["is_hard"] for r in edge)
        allowed = 2 + int(6.0 * elapsed_min)
        uploaded = len(stack.stored())
        assert 2 <= uploaded <= allowed, (uploaded, allowed)
        assert len(cloud) == uploaded
        assert int(summary["diagnostics"]["hard_frames"]) >= len(edge)  # the recorder may join late
    finally:
        stack.stop()


def test_broker_outage_of_30s_loses_no_accepted_hard_frame(tmp_path, reference_checkpoint):
    # A short confirmation timeout: frames the broker accepted but lost are sent again soon.
    stack = Stack(tmp_path, reference_checkpoint, **{
        "mining.policy": "random", "mining.random_rate": 1.0,
        "mining.budget_per_minute": 6000.0, "mining.budget_burst": 1000, "uplink.confirm_timeout_s": 10.0})
    try:
        recorder = stack.record_and_play(frames=90, rate=2.0, recorder_seconds=120)
        time.sleep(8)
        stack.broker.stop()                      # clean stop: mosquitto saves its queues
        outage_start = time.monotonic()
        wait_until(lambda: "lost the broker" in stack.node.log(), 30, "the node to notice the outage")
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_start)))
        stack.broker.start()                     # same port, same persistence directory
        assert stack.camera.wait(90) == 0
        wait_until(lambda: len(stack.stored()) >= 90, 150, "every hard frame to reach the bridge")
        time.sleep(3)   # the last frames, and a diagnostics message after them
        recorder.signal()
        assert recorder.wait(30) == 0
        edge, cloud, summary = results(tmp_path)
        diag = summary["diagnostics"]
        accepted = int(diag["uplink_submitted"])        # hard frames the uplink took on
        edge_hard = {r["frame_uuid"] for r in edge if r["is_hard"]}
        stored = stack.stored()
        assert len(stored) == accepted == 90 and edge_hard <= set(stored)
        assert int(diag["uplink_spool_dropped_oldest"]) == 0 and int(diag["uplink_spool_entries"]) == 0
        stats = stack.bridge.stats()
        assert stats["refined"] == accepted and stats["failed"] == 0
        assert int(diag["uplink_confirmed"]) == accepted
        # Refined results sent during or after the outage reach the robot too.
        assert edge_hard <= {r["frame_uuid"] for r in cloud}
        assert "connected to the broker (session present: True)" in stack.node.log()
    finally:
        stack.stop()


def test_spooled_hard_frames_survive_a_node_restart(tmp_path, reference_checkpoint):
    """Broker down while the robot works; the node is restarted; then the cloud comes up."""
    env = ros_env(tmp_path)
    port = free_port()
    params = {"model_path": reference_checkpoint, "input_height": 128, "input_width": 160,
              "cache_dir": tmp_path / "cache", "uplink.host": "127.0.0.1", "uplink.port": port,
              "uplink.robot_id": "dog1", "uplink.spool_dir": tmp_path / "spool",
              "mining.policy": "random", "mining.random_rate": 1.0,
              "mining.budget_per_minute": 6000.0, "mining.budget_burst": 1000}
    node = Proc("node1", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
    broker = bridge = None
    try:
        wait_serving(node)
        recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp_path / "rec",
                                                  "--duration", 30), env, tmp_path)
        wait_until(lambda: "recorder ready" in recorder.log(), 40, "the recorder")
        camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", CAM_W, "--height",
                                              CAM_H, "--rate", 4, "--count", 8, "--distinct", 4), env, tmp_path)
        assert camera.wait(60) == 0
        time.sleep(2.5)   # a diagnostics message after the last frame
        recorder.signal()
        assert recorder.wait(30) == 0
        edge, _, summary = results(tmp_path)
        spooled = int(summary["diagnostics"]["uplink_spool_entries"])
        assert spooled == int(summary["diagnostics"]["uplink_submitted"]) >= 7
        assert node.stop() == 0
        broker = LocalBroker(tmp_path / "broker", port=port).start()
        bridge = start_bridge(tmp_path, port, "b1", tmp_path / "store")
        node = Proc("node2", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
        wait_serving(node)
        assert f"{spooled} frames waiting" in node.log()
        wait_until(lambda: len(stored_uuids(tmp_path / "store")) == spooled, 60,
                   "the spooled frames to reach the bridge")
        stored = stored_uuids(tmp_path / "store")
        assert {r["frame_uuid"] for r in edge if r["is_hard"]} <= stored
    finally:
        node.stop()
        if bridge is not None:
            bridge.stop()
        if broker is not None:
            broker.stop()
