#!/usr/bin/env python3
"""Replay a camera bag through the node as a new user would, and print what the node says.

Makes a "real-looking" RGB-only camera bag from campus_sim frames (e.g. 768x576): each frame
as a bgr8 sensor_msgs/Image on /camera/color/image_raw and as a JPEG CompressedImage on
/camera/color/image_raw/compressed, with bad frames mixed in (a wrong step, a truncated
image, a 1x1 image, a truncated JPEG). Then three replays through the real node with the
shipped launch/edge_params.yaml:
  1. as shipped (use_depth true) on the raw topic: RGB frames never pair with depth;
  2. use_depth:=false on the raw topic;
  3. use_depth:=false, rgb_compressed:=true on the JPEG topic;
each followed by a few quiet seconds (the stalled-camera warning). Prints the node's
warnings and the diagnostics it published, and writes them to OUT/transcript.txt.

  .venv/bin/python scripts/camera_bag_replay.py --index FRAMES/daylight_campus/demo.txt \\
      --model runs/cache/base-*.pth --out runs/camera_bag
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from seg_edge_node.bag_io import open_writer
from seg_harness.processes import Proc, node_command, python_module, ros_env, wait_serving, wait_until
from segdata.ianvs_index import parse_index

ROOT = Path(__file__).resolve().parents[1]
NODE_EXE = ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
PARAMS = ROOT / "launch" / "edge_params.yaml"
RAW, JPEG = "/camera/color/image_raw", "/camera/color/image_raw/compressed"
START_NS = 1_700_000_000_000_000_000


def bgr8(bgr: np.ndarray, header: Header, step_cut: int = 0, truncate: int = 0) -> Image:
    h, w = bgr.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="bgr8", is_bigendian=0, step=w * 3 - step_cut)
    data = bgr.tobytes()
    msg.data = data[: len(data) - truncate] if truncate else data
    return msg


def make_bag(index: Path, out: Path, rate: float) -> dict:
    samples = parse_index(index)
    bad = {}
    with open_writer(out) as bag:
        for i, sample in enumerate(samples):
            header = Header(frame_id="camera_color_optical_frame")
            header.stamp.sec, header.stamp.nanosec = divmod(START_NS + round(i * 1e9 / rate), 1_000_000_000)
            t = START_NS + round(i * 1e9 / rate)
            bgr = cv2.imread(str(sample.rgb), cv2.IMREAD_COLOR)
            jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
            kind = {40: "wrong step", 90: "truncated", 140: "1x1", 190: "truncated JPEG"}.get(i % 200, "")
            raw = bgr8(bgr, header)
            if kind == "wrong step":
                raw = bgr8(bgr, header, step_cut=6)
            elif kind == "truncated":
                raw = bgr8(bgr, header, truncate=bgr.shape[1] * 3 * 10)
            elif kind == "1x1":
                raw = bgr8(bgr[:1, :1].copy(), header)
            elif kind == "truncated JPEG":
                jpeg = jpeg[: len(jpeg) // 3]
            if kind:
                bad[i] = kind
            bag.write_msg(RAW, t, raw)
            bag.write_msg(JPEG, t, CompressedImage(header=header, format="bgr8; jpeg compressed bgr8", data=jpeg))
    return {"frames": len(samples), "size": f"{bgr.shape[1]}x{bgr.shape[0]}", "bad_frames": bad}


def replay(out: Path, bag: Path, model: Path, name: str, topic: str, params: dict, quiet_s: float) -> list[str]:
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    env = ros_env(run / "ros_home", str(ROOT / "launch" / "fastdds_profile.xml"))
    node = Proc("node", node_command(NODE_EXE, PARAMS, {"model_path": model, "input_height": 128, "input_width": 160,
                                                        "cache_dir": out / "cache", **params}), env, run)
    lines = [f"== replay {name}: {topic}, parameters {PARAMS.relative_to(ROOT)} + {params}"]
    try:
        wait_serving(node)
        diag_path = run / "diagnostics.jsonl"
        diag = Proc("diag", [sys.executable, str(ROOT / "tests" / "ros_procs" / "diagnostics_log.py"), diag_path],
                    env, run)
        wait_until(lambda: "diagnostics log ready" in diag.log(), 40, "the diagnostics log")
        player = Proc("replay", python_module("seg_edge_node.bag_replay", bag, "--topics", topic,
                                              "--wait-topics", topic), env, run)
        assert player.wait(600) == 0, player.log()
        replayed = time.time_ns()
        time.sleep(quiet_s)
        diag.stop()
        node.stop()
        for line in node.log().splitlines():
            if "[WARN]" in line or "[ERROR]" in line or "serving model" in line:
                lines.append("node: " + line.split("]: ", 1)[-1])
        records = [json.loads(x) for x in diag_path.read_text().splitlines()]
        during = [r for r in records if r["_received_ns"] <= replayed]
        for label, record in (("diagnostics during the replay", during[-1] if during else None),
                              ("diagnostics after it", records[-1] if records else None)):
            if record is None:
                continue
            keys = ["rgb_received", "frames_segmented", "rgb_without_depth", "rate_hz", "latency_ms_p50"] + sorted(
                k for k, v in record.items() if k.startswith("rejected_") and v != "0")
            lines.append(f"{label}: level {record['_level']} message {record['_message']!r}")
            lines.append("    " + ", ".join(f"{k}={record[k]}" for k in keys if k in record))
    finally:
        node.stop()
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True, help="Ianvs index of the frames (e.g. campus_sim output)")
    ap.add_argument("--model", type=Path, required=True, help="RFNet .pth checkpoint (trained at 128x160)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    ap.add_argument("--quiet", type=float, default=4.0, help="seconds to listen after each replay")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bag = args.out / "camera.mcap"
    if bag.exists():
        bag.unlink()
    summary = make_bag(args.index, bag, args.rate)
    lines = [f"bag {bag.relative_to(ROOT) if bag.is_relative_to(ROOT) else bag}: {summary['frames']} frames at "
             f"{summary['size']}, {args.rate:g} Hz, bgr8 on {RAW} and JPEG on {JPEG}; bad frames: "
             f"{summary['bad_frames']}"]
    lines += replay(args.out, bag, args.model, "1_as_shipped", RAW, {}, args.quiet)
    lines += replay(args.out, bag, args.model, "2_rgb_only", RAW, {"use_depth": "false"}, args.quiet)
    lines += replay(args.out, bag, args.model, "3_rgb_only_jpeg", JPEG,
                    {"use_depth": "false", "rgb_compressed": "true", "rgb_topic": JPEG}, args.quiet)
    text = "\n".join(lines) + "\n"
    (args.out / "transcript.txt").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
