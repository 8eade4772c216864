"""The main job end to end on its smoke preset (a few dozen tiny frames): data, base
model, broker + bridge + node processes, the three modes and the report. Its figures
must equal what is computed directly from the same predictions, and the lifelong
update must land on the running robot without a gap and make it better on the shifted
task (the full lifelong cycle of the design)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from cloud_bridge.sample_store import SqliteSampleStore
from segmetrics import ConfusionMatrix
from seg_eval.replay_eval import read_recording

pytestmark = [pytest.mark.ros, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    done = subprocess.run([sys.executable, "-m", "seg_eval.main_job", "--preset", "smoke", "--runs", str(runs)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1400)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    run = (runs / "latest").resolve()
    return run, json.loads((run / "report.json").read_text()), done.stdout


def _truth_by_stamp(rec: dict, index: Path) -> dict:
    """The dataset's label files keyed by the stamps the replay gave their frames (the
    replayer publishes every frame in order; the node may drop one when it is busy, and
    the report scores only the frames it segmented)."""
    truth = [cv2.imread(str(index.parent / p), cv2.IMREAD_UNCHANGED)
             for p in index.read_text().split() if p.startswith("label/")]
    stamps = sorted(rec["truth"])
    assert len(stamps) == len(truth)
    return dict(zip(stamps, truth))


def _stored(run: Path) -> dict:
    with SqliteSampleStore(run / "session" / "store" / "samples") as store:
        return {info.stamp_ns: store.get(info.frame_uuid).labels for info in store.list(limit=10_000)}


def test_report_has_the_figures_per_task(job):
    run, report, stdout = job
    tasks = [report["tasks"]["old"], report["tasks"]["new"]]
    for key in ("miou_edge", "miou_edge_cloud", "transfer_ratio", "miou_after_update_pseudo", "miou_after_update_gt",
                "latency_ms_p50", "latency_ms_p99", "bytes_sent"):
        assert set(tasks) <= set(report[key]), key
    assert set(report["bwt"]) == {"pseudo", "gt"}
    assert (run / "report.html").read_text().count("<img") >= 3
    assert "mIoU edge only" in stdout and str(run / "report.json") in stdout


def test_edge_and_cloud_figures_equal_a_direct_computation(job):
    run, report, _ = job
    data = Path(report["data"])
    stored = _stored(run)
    for task, name in (("old", report["tasks"]["old"]), ("new", report["tasks"]["new"])):
        rec = read_recording(run / "session" / f"before_{task}.mcap")
        truth = _truth_by_stamp(rec, data / name / "test.txt")
        assert len(rec["edge"]) == report["frames"][name] > 0.8 * len(truth)
        edge, final = ConfusionMatrix(30), ConfusionMatrix(30)
        uploaded = 0
        for stamp, labels in rec["edge"].items():
            edge.update(labels, truth[stamp])
            # The bridge's stored refined labels, not the ones the robot received back.
            uploaded += stamp in stored
            final.update(stored.get(stamp, labels), truth[stamp])
        assert report["miou_edge"][name] == pytest.approx(edge.miou())
        assert report["miou_edge_cloud"][name] == pytest.approx(final.miou())
        assert uploaded > 0 and report["transfer_ratio"][name] == pytest.approx(uploaded / len(rec["edge"]))
        assert report["bytes_sent"][name] > 0


def test_the_lifelong_update_lands_without_a_gap_and_helps_the_new_task(job):
    run, report, _ = job
    update = report["updates"]["gt"]
    assert update["published"] and update["version"] >= 1
    # The robot's frame sequence carried on through the swap, from one model to the other.
    assert update["frames_before"] > 0 and update["frames_after"] > 0
    assert update["old_version"] != update["new_version"]
    assert update["swap_gap_ms"] <= 2.0 * update["normal_gap_ms"]
    after = read_recording(run / "session" / "after_gt_new.mcap")
    assert {f.model_version for f in after["frames"]} == {update["new_version"]}
    new, old = report["tasks"]["new"], report["tasks"]["old"]
    assert report["miou_after_update_gt"][new] > report["miou_edge"][new]
    # BWT on the first task is its after-minus-before, from the same kind of replays.
    data = Path(report["data"])
    rec = read_recording(run / "session" / "after_gt_old.mcap")
    truth = _truth_by_stamp(rec, data / old / "test.txt")
    cm = ConfusionMatrix(30)
    for stamp, labels in rec["edge"].items():
        cm.update(labels, truth[stamp])
    assert report["frames_scored"]["gt"][old] == [len(rec["edge"]), len(truth)]
    assert report["bwt"]["gt"] == pytest.approx(cm.miou() - report["miou_edge"][old])
    decision = json.loads(Path(update["decision_record"]).read_text())
    assert decision["published"] and decision["label_sources"]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:   # exited meanwhile
            continue
        if text in args:
            found.append(args)
    return found


def test_interrupting_the_job_leaves_no_processes_behind(job):
    runs = job[0].parent   # its cache holds the data and base model: the job gets to its processes fast
    proc = subprocess.Popen([sys.executable, "-m", "seg_eval.main_job", "--preset", "smoke", "--runs", str(runs)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = []
        for line in proc.stdout:
            out.append(line)
            if "test bag" in line:      # broker, bridge, publisher and node are up
                break
        run = (runs / "latest").resolve()
        assert _processes_mentioning(str(run)), "".join(out)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _processes_mentioning(str(run)) == []
