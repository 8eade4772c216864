"""The uplink spool under faults: kill -9 in the middle of a stream of writes, and a
robot whose broker is gone while its spool cap is tiny.

- A real writer process is SIGKILLed at random moments, many times; after each kill the
  spool opens, every entry it lists reads back complete, every put the writer saw
  return is still there, and nothing half-written is listed.
- A real node (RFNet, DDS, paho) uploads every frame as hard while no broker listens on
  its port, with uplink.spool_max_mb far below what the frames need: it keeps
  publishing labels, /diagnostics shows the drop counter rising and the spool within
  its cap, and once broker and bridge come up the frames the spool kept (the newest)
  reach the bridge, each once.

    source scripts/ros_env.sh && .venv/bin/python -m pytest tests/test_spool_faults.py -q
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import seg_edge_node
from bridge_processes import start_bridge
from seg_harness.local_cloud import LocalBroker, free_port
from cloud_bridge.sample_store import SqliteSampleStore
from ros_processes import (NODE_EXE, PARAMS_FILE, Proc, node_command, python_module, python_script, ros_env,
                           wait_serving, wait_until)
from seg_edge_node.spool import DiskSpool

PACKAGE_ROOT = Path(seg_edge_node.__file__).resolve().parents[1]

# --- kill -9 during a stream of writes ----------------------------------------------------

WRITER = textwrap.dedent("""
    import random, sys
    from seg_edge_node.spool import DiskSpool
    {content}
    directory, round_ = sys.argv[1], int(sys.argv[2])
    rng = random.Random(round_)
    with DiskSpool(directory, max_bytes=10**9) as spool:
        print("ready", flush=True)
        i = 0
        while True:
            key = f"r{{round_:03d}}-{{i}}-{{rng.choice([10, 2000, 60000, 400000])}}"
            print("put", spool.put(content(key), key), flush=True)
            if len(spool) > 6:   # like the uplink: the oldest is confirmed and removed
                oldest = spool.oldest()[0]
                spool.remove(oldest)
                print("removed", oldest, flush=True)
            i += 1
""")


def content(key: str) -> bytes:
    """Payload of the size named at the end of `key`, made of the key, so a reader can check it."""
    size = int(key.rsplit("-", 1)[1])
    pattern = (key + "|").encode()
    return (pattern * (size // len(pattern) + 1))[:size]


def seq(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class Writer:
    """The writer process, its output read on a thread so it never blocks on a full pipe."""

    def __init__(self, directory: Path, round_: int):
        import inspect
        script = WRITER.format(content=inspect.getsource(content))
        self.proc = subprocess.Popen([sys.executable, "-c", script, str(directory), str(round_)],
                                     env={**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.split())
            self.ready.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(30)
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_kill_9_at_random_points_of_a_write_stream_never_loses_a_returned_put(tmp_path):
    directory = tmp_path / "spool"
    rng = random.Random(20261121)
    listed: list[str] = []           # what the spool listed after the previous kill
    temp_files_found = 0
    for round_ in range(30):
        writer = Writer(directory, round_)
        try:
            assert writer.ready.wait(60), f"writer did not start: {writer.proc.stderr.read()}"
            threading.Event().wait(rng.uniform(0.0, 0.5))
            assert writer.proc.poll() is None, writer.proc.stderr.read()
        finally:
            writer.kill()
        assert writer.lines[0] == ["ready"]
        done = [line for line in writer.lines[1:] if len(line) == 2]   # a kill can cut the last line
        puts = [entry for op, entry in done if op == "put"]
        removed = [entry for op, entry in done if op == "removed"]
        expected = [e for e in listed + puts if e not in set(removed)]

        with DiskSpool(directory, max_bytes=10**9) as spool:
            now = list(spool)
            temp_files_found += spool.temp_files_removed
            assert spool.discarded_corrupt == 0
            for entry in now:
                assert spool.read(entry) == content(entry.split("-", 1)[1]), entry
        assert sorted(os.listdir(directory)) == sorted([".lock"] + [e + ".seg" for e in now])
        # The kill may land between a put or remove and its line on stdout: at most one
        # entry more (the newest, stored but not yet reported) or one fewer (the oldest,
        # removed but not yet reported). Nothing else may differ.
        extra = [e for e in now if e not in expected]
        missing = [e for e in expected if e not in now]
        assert len(extra) <= 1 and all(seq(e) > seq(expected[-1]) for e in extra if expected), (extra, expected)
        assert missing in ([], expected[:1]), (missing, now)
        assert now == sorted(now, key=seq) and len(set(map(seq, now))) == len(now)
        if listed and now:
            assert seq(now[-1]) >= seq(listed[-1])   # the sequence continues across restarts
        listed = now
    # The kills really landed in the middle of writes (a temp file left behind), not
    # only between them; with 400 kB payloads most rounds do.
    assert temp_files_found >= 3, temp_files_found
    print(f"30 kills: {temp_files_found} landed inside a write (temp file left), every listed entry intact")


# --- a real node with a tiny spool and no broker -------------------------------------------

CAM_W, CAM_H = 320, 240
FRAMES = 40


def diagnostics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines[:-1]] + ([json.loads(lines[-1])] if lines and lines[-1].endswith("}")
                                                         else [])


def stored_uuids(storage: Path) -> list[str]:
    with SqliteSampleStore(storage / "samples") as store:
        return [info.frame_uuid for info in store.list(limit=100000)]


@pytest.mark.ros
@pytest.mark.timeout(420)
def test_tiny_spool_without_broker_keeps_serving_drops_oldest_and_delivers_the_rest(tmp_path,
                                                                                      reference_checkpoint):
    env = ros_env(tmp_path)
    port = free_port()   # nobody listens here until the broker starts below
    cap_mb = 0.6   # a few frames of 240x320 (about 100 kB each with the random model's noisy labels)
    params = {"model_path": reference_checkpoint, "input_height": 128, "input_width": 160,
              "cache_dir": tmp_path / "cache", "uplink.host": "127.0.0.1", "uplink.port": port,
              "uplink.robot_id": "dog1", "uplink.spool_dir": tmp_path / "spool", "uplink.spool_max_mb": cap_mb,
              "uplink.confirm_timeout_s": 10.0,   # a frame the broker took before the bridge subscribed
              "mining.policy": "random", "mining.random_rate": 1.0,
              "mining.budget_per_minute": 6000.0, "mining.budget_burst": 1000}
    diag_path = tmp_path / "diagnostics.jsonl"
    node = Proc("node", node_command(NODE_EXE, PARAMS_FILE, params), env, tmp_path)
    wait_serving(node)
    diag = Proc("diag", python_script("diagnostics_log.py", diag_path), env, tmp_path)
    recorder = Proc("recorder", python_module("seg_harness.result_recorder", "--out", tmp_path / "rec",
                                              "--no-labels", "--duration", 300), env, tmp_path)
    wait_until(lambda: "recorder ready" in recorder.log(), 60, "the recorder")
    wait_until(lambda: diagnostics(diag_path) or not diag.alive(), 60, "the first diagnostics message")
    assert diagnostics(diag_path), f"the diagnostics log exited before the first message:\n{diag.log()}"
    camera = Proc("camera", python_module("seg_harness.synthetic_camera", "--width", CAM_W, "--height", CAM_H,
                                          "--rate", 4, "--count", FRAMES, "--distinct", 8), env, tmp_path)
    assert camera.wait(120) == 0, camera.log()

    def last() -> dict:
        return (diagnostics(diag_path) or [{}])[-1]

    # Every frame the node received is through the model (the camera's exit does not mean
    # the last frame is), and every one it segmented has reached the spool (or was dropped from it).
    # The camera's last frames may still be in flight (best-effort input): settled means all
    # of them arrived, or nothing more arrived for 3 s.
    settled: dict = {}

    def spooled_everything() -> bool:
        d = last()
        received = int(d.get("rgb_received", -1))
        consistent = (int(d.get("frames_segmented", -3)) + int(d.get("frames_skipped_stale", 0)) == received
                      and int(d.get("uplink_submitted", -1)) == int(d.get("hard_frames", -2))
                      == int(d.get("frames_segmented", -3))
                      and int(d.get("uplink_spool_entries", 0)) + int(d.get("uplink_spool_dropped_oldest", 0))
                      + int(d.get("uplink_spool_errors", 0)) == int(d.get("uplink_submitted", -1)))
        if not consistent or settled.get("received") != received:
            settled.update(received=received, since=time.monotonic())
            return consistent and received == FRAMES
        return time.monotonic() - settled["since"] >= 3.0

    wait_until(spooled_everything, 60, "the node to spool every hard frame")
    history = diagnostics(diag_path)
    final = history[-1]
    segmented, accepted = int(final["frames_segmented"]), int(final["uplink_submitted"])
    dropped, kept = int(final["uplink_spool_dropped_oldest"]), int(final["uplink_spool_entries"])
    cap = int(cap_mb * 1024 * 1024)
    assert segmented >= FRAMES * 0.75, f"the node stopped serving: {segmented} of {FRAMES} frames segmented"
    assert int(final["uplink_connected"]) == 0 and int(final["uplink_spool_errors"]) == 0
    assert 0 < kept < accepted and dropped == accepted - kept, final
    drops_seen = [int(d.get("uplink_spool_dropped_oldest", 0)) for d in history]
    assert drops_seen == sorted(drops_seen) and len(set(d for d in drops_seen if d > 0)) >= 2, drops_seen
    assert all(int(d.get("uplink_spool_bytes_used", 0)) <= cap for d in history)
    # Labels kept coming while the spool was dropping frames.
    frames_while_dropping = [int(d["frames_segmented"]) for d in history
                             if 0 < int(d.get("uplink_spool_dropped_oldest", 0)) < dropped]
    assert frames_while_dropping and max(frames_while_dropping) > min(frames_while_dropping)

    # The cloud comes up: the frames the spool kept go up, and only those.
    broker = LocalBroker(tmp_path / "broker", port=port).start()
    start_bridge(tmp_path, port, "b1", tmp_path / "store")
    wait_until(lambda: len(stored_uuids(tmp_path / "store")) >= kept and int(last().get("uplink_spool_entries", 1))
               == 0, 180, f"the {kept} spooled frames to reach the bridge and be confirmed")
    recorder.signal()
    assert recorder.wait(60) == 0, recorder.log()
    stored = stored_uuids(tmp_path / "store")
    results = json.loads((tmp_path / "rec.json").read_text())["results"]
    hard = [r["frame_uuid"] for r in sorted(results, key=lambda r: r["stamp_ns"])
            if r["source"] == "edge" and r["is_hard"]]
    assert len(hard) == accepted, (len(hard), accepted)
    assert len(stored) == len(set(stored)) == kept
    assert set(stored) == set(hard[-kept:]), "the spool must keep the newest frames and drop the oldest"
    final = last()
    assert int(final["uplink_confirmed"]) == kept and int(final["uplink_spool_dropped_oldest"]) == dropped
    assert "spool full, dropped oldest entry" in node.log()
    broker.stop()
