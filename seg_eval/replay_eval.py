"""Score a recorded run: replay a bag through the real node (and, for edge+cloud, a local
broker and bridge), record what comes out, and compute the Ianvs metrics.

Everything runs as separate processes in a private DDS domain: the node, the bag
replayer (re-stamping frames to the present, so latencies are real) and a bag
recorder. Predictions are matched to the bag's ground truth by header stamp.
Modes: "edge" (the node alone) and "edge_cloud" (hard frames refined by the bridge;
a frame's final mask is the refined one when it came back, else the edge one).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .metrics import ConfusionMatrix, latency_percentiles, samples_transfer_ratio

MODES = ("edge", "edge_cloud")
NODE = "/seg_edge_node"
RECORDED = [f"{NODE}/labels", f"{NODE}/refined_labels", f"{NODE}/result", "/ground_truth/labels", "/diagnostics"]


@dataclass(frozen=True)
class ReplayConfig:
    bag: Path
    model: Path
    work_dir: Path
    mode: str = "edge"
    num_classes: int = 30
    input_height: int = 480
    input_width: int = 640
    rate: float = 1.0                        # replay speed (1.0 = as recorded)
    node_params: dict = field(default_factory=dict)   # extra node parameters, e.g. mining.*
    node_exe: Path | None = None             # default: the venv's seg_edge_node
    params_file: Path | None = None          # default: launch/edge_params.yaml
    dds_profile: Path | None = None


@dataclass
class ModeResult:
    mode: str
    frames_in_bag: int
    frames_segmented: int
    edge: ConfusionMatrix
    final: ConfusionMatrix
    latency_ms: list[float]
    uploaded: int
    refined: int
    bytes_sent: int

    def summary(self) -> dict:
        return {"mode": self.mode, "frames_in_bag": self.frames_in_bag, "frames_segmented": self.frames_segmented,
                "miou_edge": self.edge.miou(), "miou_final": self.final.miou(),
                "pixel_accuracy_final": self.final.pixel_accuracy(),
                "transfer_ratio": samples_transfer_ratio(self.uploaded, max(self.frames_segmented, 1)),
                "uploaded": self.uploaded, "refined": self.refined, "bytes_sent": self.bytes_sent,
                **{f"latency_ms_{k}": v for k, v in latency_percentiles(self.latency_ms).items()}}


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _pixels(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


def score_recording(recorded_bag: Path, mode: str, num_classes: int) -> ModeResult:
    """Match the recorded node outputs to the replayed ground truth and compute the metrics."""
    from seg_edge_node.bag_io import from_cdr, message_class, open_reader

    truth, edge, refined, log_time, diag = {}, {}, {}, {}, {}
    with open_reader(recorded_bag) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = from_cdr(raw, message_class(connection.msgtype))
            topic = connection.topic
            if topic == "/diagnostics":
                for status in msg.status:
                    if status.name.startswith("seg_edge_node"):
                        diag = {kv.key: kv.value for kv in status.values}
                continue
            if topic.endswith("/result"):
                continue
            stamp = _stamp(msg.header)
            if topic == "/ground_truth/labels":
                truth[stamp] = _pixels(msg)
            elif topic.endswith("/refined_labels"):
                refined[stamp] = _pixels(msg)
            else:
                edge[stamp] = _pixels(msg)
                log_time[stamp] = timestamp
    edge_cm, final_cm = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for stamp, labels in edge.items():
        if stamp in truth:
            edge_cm.update(labels, truth[stamp])
            final_cm.update(refined.get(stamp, labels), truth[stamp])
    return ModeResult(
        mode=mode, frames_in_bag=len(truth), frames_segmented=len(edge), edge=edge_cm, final=final_cm,
        latency_ms=[(log_time[s] - s) / 1e6 for s in edge],
        uploaded=int(diag.get("uplink_acknowledged", 0)), refined=len(refined),
        bytes_sent=int(diag.get("uplink_bytes_published", 0)))


def run_replay(cfg: ReplayConfig) -> ModeResult:
    """Replay `cfg.bag` through a fresh node (and cloud side for edge_cloud) and score it."""
    from cloud_bridge.local_run import BridgeRunner, LocalBroker
    from seg_edge_node.processes import Proc, node_command, python_module, ros_env, wait_serving, wait_until

    if cfg.mode not in MODES:
        raise ValueError(f"mode {cfg.mode!r}: use one of {MODES}")
    root = Path(__file__).resolve().parents[1]
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = ros_env(work / "ros_home", str(cfg.dds_profile or root / "launch" / "fastdds_profile.xml"))
    params = {"model_path": cfg.model, "input_height": cfg.input_height, "input_width": cfg.input_width,
              "cache_dir": work / "cache", **cfg.node_params}
    broker = bridge = None
    procs = []
    try:
        if cfg.mode == "edge_cloud":
            broker = LocalBroker(work / "broker").start()
            bridge = BridgeRunner(work, "eval", work / "store", {"broker.port": broker.port}).start()
            bridge.wait_subscribed()
            params.update({"uplink.host": "127.0.0.1", "uplink.port": broker.port, "uplink.robot_id": "eval",
                           "uplink.spool_dir": work / "spool"})
        node = Proc("node", node_command(cfg.node_exe or root / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node",
                                         cfg.params_file or root / "launch" / "edge_params.yaml", params), env, work)
        procs.append(node)
        wait_serving(node)
        recorded = work / "outputs.mcap"
        recorder = Proc("bag_record", python_module("seg_edge_node.bag_record", "--out", recorded,
                                                    "--topics", *RECORDED), env, work)
        procs.append(recorder)
        wait_until(lambda: "recording" in recorder.log(), 60, "the recorder")
        time.sleep(1.0)   # discovery of the recorder by the node's publishers
        replay = Proc("bag_replay", python_module("seg_edge_node.bag_replay", cfg.bag, "--rate", cfg.rate),
                      env, work)
        procs.append(replay)
        if replay.wait(3600) != 0:
            raise RuntimeError(f"bag replay failed:\n{replay.log()}")
        if bridge is not None:   # let the last hard frames come back refined
            wait_until(lambda: bridge.stats().get("queued", 1) == 0 and
                       bridge.stats().get("refined", 0) + bridge.stats().get("duplicate", 0)
                       >= bridge.stats().get("received", 0), 300, "the bridge to finish")
        time.sleep(2.5)   # the last outputs and one more diagnostics message
        recorder.stop()
        return score_recording(recorded, cfg.mode, cfg.num_classes)
    finally:
        for p in reversed(procs):
            p.stop()
        if bridge is not None:
            bridge.stop()
        if broker is not None:
            broker.stop()
