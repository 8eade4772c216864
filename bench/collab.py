#!/usr/bin/env python3
"""Collaborative-inference benchmark: wire size, vote time, round trip, bridge throughput.

- bytes_per_hard_frame: a 480x640 RGB-D hard frame as the uplink sends it (JPEG q90,
  depth in 10 mm steps, PNG labels), mean over synthetic camera frames;
  raw_bytes_per_frame: the same frame as raw rgb8 + 16UC1 images.
- vote_ms_p50: logit vote at 480x640, 100 masks, 30 classes.
- round_trip_ms_p50/p95: a real node, bridge and loopback mosquitto; from the node's
  edge result of a hard frame to the refined mask on ~/refined_labels, both seen by one
  recorder process (so one clock). Region-proposal masks (no SAM checkpoint).
- bridge_frames_per_s: one bridge replica refining a burst of 480x640 hard frames.

  source scripts/ros_env.sh && .venv/bin/python bench/collab.py --json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "seg_edge_node"))

from seg_harness.vote_benchmark import vote_benchmark  # noqa: E402
from seg_harness.local_cloud import BridgeRunner, LocalBroker  # noqa: E402
from rfnet.checkpoint import save_checkpoint  # noqa: E402
from rfnet.network import RFNet  # noqa: E402
from seg_harness.processes import (Proc, node_command, python_module, ros_env, wait_serving,  # noqa: E402
                                     wait_until)
from seg_harness.synthetic_camera import synthetic_frame  # noqa: E402
from seg_edge_node.uplink import UplinkConfig, model_depth_step_mm  # noqa: E402
from segwire import HardFrame, encode_hard_frame, hard_topic, refined_topic  # noqa: E402

NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS_FILE = ROOT / "launch" / "edge_params.yaml"
DDS_PROFILE = ROOT / "launch" / "fastdds_profile.xml"
H, W = 480, 640


def log(msg: str) -> None:
    print(f"[collab] {msg}", file=sys.stderr, flush=True)


def hard_frame(index: int, robot_id: str = "bench") -> HardFrame:
    rgb, depth = synthetic_frame(index, H, W)
    labels = np.where(depth > 0, 0, 10).astype(np.uint8)
    return HardFrame(robot_id=robot_id, frame_uuid=str(uuid.uuid4()), stamp_ns=time.time_ns(), frame_id="camera",
                     model_version="bench", mining_policy="random", mining_score=1.0, rgb=rgb, depth_m=depth,
                     edge_labels=labels)


def wire_size(frames: int) -> dict:
    """Sizes with the node's default uplink settings."""
    up = UplinkConfig()
    unit = up.depth_unit_mm or model_depth_step_mm(25.5)
    sizes = [len(encode_hard_frame(hard_frame(i), up.rgb_format, up.jpeg_quality, depth_unit_mm=unit))
             for i in range(frames)]
    return {"bytes_per_hard_frame": int(np.mean(sizes)), "raw_bytes_per_frame": H * W * 3 + H * W * 2,
            "wire_settings": f"jpeg q{up.jpeg_quality}, depth in {unit} mm steps"}


def bridge_throughput(tmp: Path, port: int, frames: int) -> float:
    bridge = BridgeRunner(tmp, "tput", tmp / "tput_store", {
        "broker.port": port, "broker.share_group": "tput", "broker.receive_maximum": 8}).start()
    done = threading.Event()
    got = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-robot", protocol=mqtt.MQTTv5)

    def on_message(c, u, m):
        got.append(m.mid)
        if len(got) >= frames:
            done.set()
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(refined_topic("tput"), qos=1)
    client.loop_start()
    try:
        bridge.wait_subscribed()
        payloads = [encode_hard_frame(hard_frame(i, "tput"), depth_unit_mm=model_depth_step_mm(25.5))
                    for i in range(frames)]
        t0 = time.monotonic()
        for p in payloads:
            client.publish(hard_topic("tput"), p, qos=1)
        if not done.wait(600):
            raise TimeoutError(f"bridge refined only {len(got)} of {frames} frames: {bridge.stats()}")
        return frames / (time.monotonic() - t0)
    finally:
        client.loop_stop()
        client.disconnect()
        bridge.stop()


def round_trip(tmp: Path, port: int, frames: int, rate: float) -> dict:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(RFNet(), tmp / "rfnet.pth")
    bridge = BridgeRunner(tmp, "rt", tmp / "rt_store", {"broker.port": port, "broker.share_group": "rt"}).start()
    env = ros_env(tmp / "ros", str(DDS_PROFILE))
    params = {"model_path": checkpoint, "cache_dir": tmp / "cache", "uplink.host": "127.0.0.1",
              "uplink.port": port, "uplink.robot_id": "rt", "uplink.spool_dir": tmp / "spool",
              "mining.policy": "random", "mining.random_rate": 1.0, "mining.budget_per_minute": 6000.0,
              "mining.budget_burst": 1000}
    node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp)
    try:
        bridge.wait_subscribed()
        wait_serving(node)
        wait_until(lambda: "connected to the broker" in node.log(), 30, "the uplink")
        recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp / "rt",
                                                  "--no-labels", "--duration", frames / rate + 120), env, tmp)
        camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", W, "--height", H,
                                              "--rate", rate, "--count", frames, "--distinct", 8), env, tmp)
        camera.wait(frames / rate + 60)
        wait_until(lambda: bridge.stats().get("queued", 1) == 0 and
                   bridge.stats().get("refined", 0) >= bridge.stats().get("received", 1), 180, "the bridge")
        time.sleep(2.0)
        recorder.stop()
        results = json.loads((tmp / "rt.json").read_text())["results"]
        edge = {r["frame_uuid"]: r["received_ns"] for r in results if r["source"] == "edge" and r["is_hard"]}
        cloud = {r["frame_uuid"]: r["received_ns"] for r in results if r["source"] == "cloud"}
        rt = np.array([(cloud[u] - edge[u]) / 1e6 for u in edge if u in cloud])
        return {"round_trip_ms_p50": float(np.percentile(rt, 50)), "round_trip_ms_p95": float(np.percentile(rt, 95)),
                "round_trip_frames": int(rt.size), "hard_frames_sent": len(edge)}
    finally:
        node.stop()
        bridge.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--frames", type=int, default=20, help="frames for the round trip and throughput runs")
    ap.add_argument("--rate", type=float, default=0.5, help="camera Hz during the round-trip run")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="collab_bench_"))
    try:
        result = wire_size(16)
        log(f"wire: {result}")
        vote = vote_benchmark(h=H, w=W, n_masks=100, n_classes=30)
        result["vote_ms_p50"] = round(vote["ms_p50"], 2)
        result["majority_vote_ms_p50"] = round(vote["majority_ms_p50"], 2)
        log(f"vote: {vote}")
        with LocalBroker(tmp / "broker") as broker:
            result.update({k: round(v, 2) if isinstance(v, float) else v
                           for k, v in round_trip(tmp, broker.port, args.frames, args.rate).items()})
            log(f"round trip: {result}")
            result["bridge_frames_per_s"] = round(bridge_throughput(tmp, broker.port, args.frames), 2)
        result.update({"resolution": f"{H}x{W}", "masks": "felzenszwalb region proposals (no SAM checkpoint)"})
        print(json.dumps(result) if args.json else json.dumps(result, indent=1))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
