"""The cloud bridge as a real process against a real mosquitto: sharing, bad input, crashes."""
from __future__ import annotations

import subprocess

import pytest

from bridge_processes import RobotClient, make_hard_frame, start_bridge
from cloud_bridge.sample_store import SqliteSampleStore
from seg_harness.processes import wait_until
from segwire import encode_hard_frame, hard_topic

pytestmark = pytest.mark.timeout(240)


def stored_uuids(storage) -> set[str]:
    with SqliteSampleStore(storage / "samples") as store:
        return {info.frame_uuid for info in store.list(limit=100000)}


def test_two_replicas_share_the_work_and_store_each_frame_once(tmp_path, broker):
    storage = tmp_path / "store"
    bridges = {bid: start_bridge(tmp_path, broker.port, bid, storage) for bid in ("b1", "b2")}
    try:
        robots = [RobotClient(broker.port, "dog1"), RobotClient(broker.port, "dog2")]
        sent = [make_hard_frame(robots[i % 2].robot_id, i) for i in range(30)]
        for i, frame in enumerate(sent):
            robots[i % 2].send(frame)
        wait_until(lambda: sum(len(r.refined) for r in robots) == 30, 90, "30 refined results")
        wait_until(lambda: sum(b.stats().get("refined", 0) for b in bridges.values()) == 30, 10, "stats")
        per_bridge = {bid: b.stats()["refined"] for bid, b in bridges.items()}
        assert all(n > 0 for n in per_bridge.values()), per_bridge
        assert stored_uuids(storage) == {f.frame_uuid for f in sent}
        for robot in robots:  # each robot got exactly its own frames back
            assert set(robot.refined) == {f.frame_uuid for f in sent if f.robot_id == robot.robot_id}
            robot.close()
    finally:
        for proc in bridges.values():
            proc.stop()


def test_malformed_payloads_are_logged_counted_and_the_bridge_keeps_serving(tmp_path, broker):
    storage = tmp_path / "store"
    proc = start_bridge(tmp_path, broker.port, "b1", storage, max_payload_mb=0.25)
    try:
        good = encode_hard_frame(make_hard_frame("dog1", 0))
        other_robot = encode_hard_frame(make_hard_frame("dog2", 1))
        cases = {
            "text": b"hello, I am not a frame",
            "truncated": good[: len(good) // 2],
            "bit_flipped_magic": b"XEGW" + good[4:],
            "other_robots_frame": other_robot,          # robot id in payload != topic
            "oversized": b"SEGW" + bytes(300 * 1024),
        }
        for name, payload in cases.items():
            path = tmp_path / f"{name}.bin"
            path.write_bytes(payload)
            # mosquitto_pub: a client nobody here wrote.
            subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", hard_topic("dog1"),
                            "-f", str(path)], check=True, timeout=30)
        wait_until(lambda: proc.stats().get("rejected") == len(cases), 30, "rejections counted")
        assert proc.alive()
        robot = RobotClient(broker.port, "dog1")
        frame = make_hard_frame("dog1", 2)
        robot.send(frame)
        wait_until(lambda: frame.frame_uuid in robot.refined, 30, "a good frame after the bad ones")
        robot.close()
        stats = proc.stats()
        assert stats["rejected"] == len(cases) and stats["failed"] == 0
        assert stored_uuids(storage) == {frame.frame_uuid}
        log = proc.log()
        for reason in ("does not start with b'SEGW'", "declares", "frame says robot 'dog2'", "above the limit"):
            assert reason in log, reason
    finally:
        proc.stop()


def test_bridge_killed_mid_frame_processes_it_after_restart_without_duplicates(tmp_path, broker):
    storage = tmp_path / "store"
    proc = start_bridge(tmp_path, broker.port, "b1", storage)
    robot = RobotClient(broker.port, "dog1")
    # Camera-sized frames make each refinement take a while, so frames are in flight.
    sent = [make_hard_frame("dog1", i, h=480, w=640) for i in range(10)]
    try:
        for frame in sent:
            robot.send(frame)
        wait_until(lambda: len(robot.refined) >= 2, 60, "the bridge to get going")
        proc.kill()
        done_before = len(stored_uuids(storage))
        assert done_before < len(sent), "the bridge finished before it was killed; test is void"
        restarted = start_bridge(tmp_path, broker.port, "b1", storage)
        try:
            wait_until(lambda: len(robot.refined) == len(sent), 120, "all frames refined after restart")
            # Same uuid set, each stored once (the store is keyed by uuid; counts must agree too).
            assert stored_uuids(storage) == {f.frame_uuid for f in sent}
            with SqliteSampleStore(storage / "samples") as store:
                assert store.count() == len(sent)
        finally:
            restarted.stop()
    finally:
        robot.close()
        proc.stop()
