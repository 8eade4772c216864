"""Score a recorded run: replay a bag through the real node (and, for edge+cloud, a local
broker and bridge), record what comes out, and compute the Ianvs metrics.

Everything runs as separate processes in a private DDS domain: the node, the bag
replayer (re-stamping frames to the present, so latencies are real) and a bag
recorder. Predictions are matched to the bag's ground truth by header stamp.
Modes: "edge" (the node alone) and "edge_cloud" (hard frames refined by the bridge;
a frame's final mask is the refined one when it came back, else the edge one).

An EvalSession keeps one node (and cloud side) up across several replays, as a robot
that walks on while its model is updated; run_replay is one session, one replay.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .interrupts import interrupts_deferred
from segmetrics import ConfusionMatrix, latency_percentiles, samples_transfer_ratio

MODES = ("edge", "edge_cloud")
NODE = "/seg_edge_node"
RECORDED = [f"{NODE}/labels", f"{NODE}/refined_labels", f"{NODE}/result", "/ground_truth/labels", "/diagnostics"]
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ReplayConfig:
    bag: Path | None             # run_replay's bag; an EvalSession takes one per replay
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
    robot_id: str = "eval"
    bridge_settings: dict = field(default_factory=dict)   # extra bridge config keys (edge_cloud)


@dataclass
class FrameRecord:
    stamp_ns: int          # the camera frame's (re-stamped) header stamp
    published_ns: int      # when the recorder received the node's result
    model_version: str


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
    frames: list[FrameRecord] = field(default_factory=list)   # in publishing order

    def summary(self) -> dict:
        return {"mode": self.mode, "frames_in_bag": self.frames_in_bag, "frames_segmented": self.frames_segmented,
                "miou_edge": self.edge.miou(), "miou_final": self.final.miou(),
                "pixel_accuracy_edge": self.edge.pixel_accuracy(),
                "pixel_accuracy_final": self.final.pixel_accuracy(),
                "transfer_ratio": samples_transfer_ratio(self.uploaded, max(self.frames_segmented, 1)),
                "uploaded": self.uploaded, "refined": self.refined, "bytes_sent": self.bytes_sent,
                **{f"latency_ms_{k}": v for k, v in latency_percentiles(self.latency_ms).items()}}


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _pixels(msg) -> np.ndarray:
    return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)[:, :msg.width]


def read_recording(recorded_bag: Path) -> dict:
    """The recorded node outputs by stamp: truth, edge and refined labels, result records,
    and the node's last diagnostics values."""
    from seg_edge_node.bag_io import from_cdr, message_class, open_reader

    out: dict = {"truth": {}, "edge": {}, "refined": {}, "log_time": {}, "frames": [], "diag": {}}
    with open_reader(recorded_bag) as reader:
        for connection, timestamp, raw in reader.messages():
            msg = from_cdr(raw, message_class(connection.msgtype))
            topic = connection.topic
            if topic == "/diagnostics":
                for status in msg.status:
                    if status.name.startswith("seg_edge_node"):
                        out["diag"] = {kv.key: kv.value for kv in status.values}
            elif topic.endswith("/result"):
                if msg.source == 0:   # SOURCE_EDGE; cloud results repeat the frame
                    out["frames"].append(FrameRecord(_stamp(msg.header), timestamp, msg.model_version))
            elif topic == "/ground_truth/labels":
                out["truth"][_stamp(msg.header)] = _pixels(msg)
            elif topic.endswith("/refined_labels"):
                out["refined"][_stamp(msg.header)] = _pixels(msg)
            else:
                out["edge"][_stamp(msg.header)] = _pixels(msg)
                out["log_time"][_stamp(msg.header)] = timestamp
    out["frames"].sort(key=lambda f: f.published_ns)
    return out


def _counter(diag: dict, name: str) -> int:
    return int(float(diag.get(name, 0)))


def score(rec: dict, mode: str, num_classes: int, baseline: dict | None = None) -> ModeResult:
    """Match the recorded node outputs (read_recording) to the replayed ground truth and
    compute the metrics. `baseline`: the node's diagnostics before this replay (its
    counters only grow)."""
    truth, edge, refined, diag = rec["truth"], rec["edge"], rec["refined"], rec["diag"]
    base = baseline or {}
    edge_cm, final_cm = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for stamp, labels in edge.items():
        if stamp in truth:
            edge_cm.update(labels, truth[stamp])
            final_cm.update(refined.get(stamp, labels), truth[stamp])
    return ModeResult(
        mode=mode, frames_in_bag=len(truth), frames_segmented=len(edge), edge=edge_cm, final=final_cm,
        latency_ms=[(rec["log_time"][s] - s) / 1e6 for s in edge],
        uploaded=_counter(diag, "uplink_acknowledged") - _counter(base, "uplink_acknowledged"),
        refined=len(refined),
        bytes_sent=_counter(diag, "uplink_bytes_published") - _counter(base, "uplink_bytes_published"),
        frames=rec["frames"])


class EvalSession:
    """A node (plus broker and bridge in edge_cloud mode) that bags are replayed through.

    `updates`: extra node parameters for signed model updates (updates.*); the broker is
    then started in edge mode as well, and `broker` is where to publish models.
    """

    def __init__(self, cfg: ReplayConfig, updates: dict | None = None):
        if cfg.mode not in MODES:
            raise ValueError(f"mode {cfg.mode!r}: use one of {MODES}")
        self.cfg, self.updates = cfg, updates or {}
        self.work = Path(cfg.work_dir)
        self.broker = self.bridge = self.node = None
        self._children: list = []    # processes, broker and bridge, in start order
        self._baseline: dict = {}
        self._replays = 0

    def __enter__(self) -> "EvalSession":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from seg_harness.local_cloud import BridgeRunner, LocalBroker
        from seg_harness.processes import Proc, node_command, ros_env, wait_serving

        cfg, work = self.cfg, self.work
        work.mkdir(parents=True, exist_ok=True)
        self.env = ros_env(work / "ros_home", str(cfg.dds_profile or ROOT / "launch" / "fastdds_profile.xml"))
        params = {"model_path": cfg.model, "input_height": cfg.input_height, "input_width": cfg.input_width,
                  "cache_dir": work / "cache", **cfg.node_params}
        if cfg.mode == "edge_cloud" or self.updates:
            self.broker = self._start(lambda: LocalBroker(work / "broker").start())
            params.update({"uplink.host": "127.0.0.1", "uplink.port": self.broker.port,
                           "uplink.robot_id": cfg.robot_id, "uplink.spool_dir": work / "spool", **self.updates})
            if cfg.mode == "edge":   # the uplink is there for the models: no frames go up
                params["mining.budget_per_minute"] = 0.0
        if cfg.mode == "edge_cloud":
            self.bridge = self._start(lambda: BridgeRunner(work, "eval", work / "store", {
                "broker.port": self.broker.port, **cfg.bridge_settings}).start())
            self.bridge.wait_subscribed()
        exe = cfg.node_exe or ROOT / ".venv" / "lib" / "seg_edge_node" / "seg_edge_node"
        command = node_command(exe, cfg.params_file or ROOT / "launch" / "edge_params.yaml", params)
        self.node = self._start(lambda: Proc("node", command, self.env, work))
        wait_serving(self.node)

    def replay(self, bag: Path, name: str, rate: float | None = None) -> ModeResult:
        """Replay `bag` through the running node, wait for the cloud's answers, score it.
        Outputs are recorded to <work_dir>/<name>.mcap."""
        from seg_harness.processes import python_module

        def play(proc) -> None:
            if proc.wait(3600) != 0:
                raise RuntimeError(f"bag replay of {bag} failed:\n{proc.log()}")
            if self.bridge is not None:
                self.wait_cloud_idle()
        recorded = self._record(name, python_module("seg_edge_node.bag_replay", bag, "--rate", rate or self.cfg.rate),
                                play)
        rec = read_recording(recorded)
        result = score(rec, self.cfg.mode, self.cfg.num_classes, self._baseline)
        self._baseline = rec["diag"] or self._baseline
        return result

    def stream(self, name: str, during: Callable[[], None], rate_hz: float, height: int, width: int,
               tail_s: float = 2.0) -> list[FrameRecord]:
        """Feed the node a synthetic camera stream while `during` runs (e.g. a model push
        and swap), and `tail_s` after; returns the node's published frames in order."""
        from seg_harness.processes import python_module

        def run(proc) -> None:
            during()
            time.sleep(tail_s)
            if not proc.alive():
                raise RuntimeError(f"the synthetic camera stopped early:\n{proc.log()}")
        recorded = self._record(name, python_module("seg_harness.synthetic_camera", "--rate", rate_hz,
                                                    "--height", height, "--width", width), run)
        rec = read_recording(recorded)
        self._baseline = rec["diag"] or self._baseline
        return rec["frames"]

    def _record(self, name: str, source_cmd: list, drive: Callable) -> Path:
        """Record the node's outputs to <work_dir>/<name>.mcap while `source_cmd` feeds it
        and `drive(source_proc)` returns."""
        from seg_harness.processes import Proc, python_module, wait_until

        recorded = self.work / f"{name}.mcap"
        recorder = self._start(lambda: Proc(f"record_{name}", python_module(
            "seg_edge_node.bag_record", "--out", recorded, "--topics", *RECORDED), self.env, self.work))
        try:
            wait_until(lambda: "recording" in recorder.log() or not recorder.alive(), 60, "the recorder")
            if not recorder.alive():
                raise RuntimeError(f"the bag recorder exited:\n{recorder.log()}")
            time.sleep(1.0)   # discovery of the recorder by the node's publishers
            source = self._start(lambda: Proc(f"source_{name}", source_cmd, self.env, self.work))
            try:
                drive(source)
            finally:
                source.stop()
            time.sleep(2.5)   # the last outputs and one more diagnostics message
        finally:
            recorder.stop()
        return recorded

    def wait_cloud_idle(self, timeout: float = 300.0) -> None:
        """Until the bridge has answered every hard frame it received."""
        from seg_harness.processes import wait_until

        def idle() -> bool:
            s = self.bridge.stats()
            answered = sum(s.get(k, 0) for k in ("refined", "duplicate", "rejected", "failed"))
            return s.get("queued", 1) == 0 and answered >= s.get("received", 0)
        wait_until(idle, timeout, "the bridge to finish")

    def _start(self, start: Callable):
        """Start a child and note it for stop(), with no interrupt in between."""
        with interrupts_deferred():
            child = start()
            self._children.append(child)
        return child

    def stop(self) -> None:
        while self._children:
            self._children.pop().stop()


def run_replay(cfg: ReplayConfig) -> ModeResult:
    """Replay `cfg.bag` through a fresh node (and cloud side for edge_cloud) and score it."""
    with EvalSession(cfg) as session:
        return session.replay(cfg.bag, "outputs")


def swap_gaps(frames: list[FrameRecord]) -> dict | None:
    """Gaps between consecutive published frames around a model change: the gap across
    the first change of model_version (`swap_gap_ms`) and the largest gap between frames
    of one model in the same stream (`normal_gap_ms`). None if the version never changed."""
    change = next((i for i in range(1, len(frames)) if frames[i].model_version != frames[i - 1].model_version),
                  None)
    if change is None:
        return None
    gaps = [(frames[i].published_ns - frames[i - 1].published_ns) / 1e6 for i in range(1, len(frames))]
    normal = [g for i, g in enumerate(gaps, start=1) if i != change]
    return {"swap_gap_ms": gaps[change - 1], "normal_gap_ms": max(normal) if normal else float("nan"),
            "normal_gap_ms_p50": float(np.median(normal)) if normal else float("nan"),
            "frames_before": change, "frames_after": len(frames) - change,
            "old_version": frames[change - 1].model_version, "new_version": frames[change].model_version}


def main(argv=None) -> int:
    """Score a bag (RGB, depth and /ground_truth/labels, e.g. from bag_from_dataset)
    with a model: report.json and report.html in --out."""
    import argparse
    import sys

    from rfnet.classes import load_class_list

    from .report import write_report

    ap = argparse.ArgumentParser(prog="python -m seg_eval.replay_eval", description=main.__doc__)
    ap.add_argument("bag", type=Path)
    ap.add_argument("--model", required=True, type=Path, help="RFNet checkpoint (.pth) or .onnx")
    ap.add_argument("--mode", choices=MODES, default="edge")
    ap.add_argument("--out", required=True, type=Path, help="work and report folder")
    ap.add_argument("--height", type=int, default=480, help="network input height")
    ap.add_argument("--width", type=int, default=640, help="network input width")
    ap.add_argument("--rate", type=float, default=1.0, help="replay speed")
    args = ap.parse_args(argv)
    if not args.bag.exists() or not args.model.exists():
        print(f"replay_eval: {args.bag if not args.bag.exists() else args.model} does not exist", file=sys.stderr)
        return 2
    result = run_replay(ReplayConfig(args.bag, args.model, args.out, args.mode, input_height=args.height,
                                     input_width=args.width, rate=args.rate))
    summary = result.summary()
    write_report(args.out, summary, load_class_list().names,
                 {"edge": result.edge.iou_per_class(), "final": result.final.iou_per_class()},
                 {args.mode: result.latency_ms}, [])
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
