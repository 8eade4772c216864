"""The main job: a robot dog walks from a daylight campus into a dim underpass.

  scripts/main_job.sh [--preset full|smoke]

1. Renders the campus_sim data and bags (cached: seg_eval.job_data).
2. Trains RFNet on the daylight task, or reuses the cached model (seg_eval.base_model),
   and the cloud's own semantic model from it (seg_eval.cloud_model, cached too).
3. Starts a private mosquitto on a free loopback port, the cloud bridge (weights-free
   depth regions + the robot's and the cloud model's evidence), a model publisher and
   the segmentation node (separate processes, private DDS domain).
4. Replays each task's test bag through the node: edge-only masks and the refined
   masks of the hard frames the bridge sent back (modes edge and edge + cloud).
5. Replays the robot's walk through the underpass: its hard frames fill the cloud's
   buffer. Twice, from the same base model: with the bridge's pseudo-labels, and with
   ground truth standing in for human annotation, a lifelong update is fine-tuned,
   gated, signed and pushed; the node takes it while a stream plays (the swap gap is
   measured) and both test bags are replayed again (mode edge + cloud + lifelong).
6. Refines the shifted task's uploaded test frames again with every mask generator and
   source of class evidence, the SAM stand-in included (seg_eval.ablation), and writes
   report.json and report.html under runs/<timestamp>/ (runs/latest).

Ctrl-C (or SIGTERM) stops every process it started.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import time
from pathlib import Path

from .job_config import PRESETS, JobConfig
from .job_data import JobData, prepare_data
from .replay_eval import ROOT, EvalSession, ModeResult, ReplayConfig, read_recording, swap_gaps
from .run_dirs import new_run_dir

OLD, NEW = "old", "new"


def say(msg: str) -> None:
    print(f"[main-job {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _uploaded_during(store_dir: Path, stamps: set[int]) -> list[str]:
    from cloud_bridge.sample_store import SqliteSampleStore

    uuids, offset = [], 0
    with SqliteSampleStore(store_dir) as store:
        while page := store.list(limit=1000, offset=offset):
            uuids += [i.frame_uuid for i in page if i.stamp_ns in stamps]
            offset += len(page)
    return uuids


class _Updates:
    """Signing key, trusted key folder and the model publisher of the run."""

    def __init__(self, run: Path):
        from segwire.model_keys import generate_keypair

        self.key, pub = generate_keypair(run / "keys", "main-job")
        self.trusted = run / "keys" / "trusted"
        self.trusted.mkdir()
        shutil.copy(pub, self.trusted)
        self.publisher = None

    def node_params(self, run: Path) -> dict:
        return {"updates.enabled": "true", "updates.trusted_keys": self.trusted,
                "updates.directory": run / "robot_models"}

    def start(self, port: int, run: Path) -> None:
        from cloud_bridge.config import BrokerConfig
        from cloud_bridge.model_push import ModelPublisher
        from segwire.model_keys import load_private_key

        self.publisher = ModelPublisher(BrokerConfig(port=port), "default", run / "published",
                                        load_private_key(self.key), "main-job")
        self.publisher.start()
        if not self.publisher.wait_subscribed(60):
            raise RuntimeError("the model publisher did not connect to the local broker")

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()


def bridge_settings(cfg: JobConfig, base: Path, cloud: Path, run: Path) -> dict:
    """The job's bridge config (dotted keys): the robot's model for its logit vote (the
    registry finds it by the version the robot reports), the cloud's own model, and
    weights-free masks (there is no SAM checkpoint here)."""
    models = run / "bridge_models"
    models.mkdir(exist_ok=True)
    link = models / base.name
    if not link.exists():
        link.symlink_to(base.resolve())
    b, c = cfg.base, cfg.bridge
    return {"models.directory": str(models), "models.input_height": b.input_height,
            "models.input_width": b.input_width, "models.cache_dir": str(run / "bridge_cache"),
            "refinement.fallback": c.masks, "semantics.mode": c.semantics,
            "semantics.cloud_weight": c.cloud_weight, "semantics.mask_weight": c.mask_weight,
            "semantics.cloud_model.checkpoint": str(cloud),
            "semantics.cloud_model.input_height": c.cloud_input_height,
            "semantics.cloud_model.input_width": c.cloud_input_width,
            "semantics.cloud_model.cache_dir": str(run / "bridge_cache")}


def run_job(cfg: JobConfig, data: JobData, base: Path, cloud: Path, rehearsal: Path, run: Path,
            stages: dict) -> dict:
    from cloud_bridge.lifelong_publish import CandidatePusher
    from rfnet.engines import ModelSpec

    from .lifelong_stage import LABELS, pseudo_label_quality, train_update, training_store

    b, d = cfg.base, cfg.data
    session_dir = run / "session"
    updates = _Updates(run)
    rc = ReplayConfig(None, base, session_dir, mode="edge_cloud", input_height=b.input_height,
                      input_width=b.input_width, rate=cfg.replay_rate, node_params=dict(cfg.mining), robot_id="dog1",
                      bridge_settings=bridge_settings(cfg, base, cloud, run))
    tests = {OLD: data.old_test_bag, NEW: data.new_test_bag}
    results: dict[str, dict[str, ModeResult]] = {}
    updates_info: dict[str, dict] = {}
    say("starting mosquitto, the cloud bridge, the model publisher and the segmentation node")
    t0 = time.monotonic()
    with EvalSession(rc, updates.node_params(run)) as session:
        try:
            updates.start(session.broker.port, run)
            stages["start_processes"] = time.monotonic() - t0
            t0 = time.monotonic()
            results["before"] = {}
            for task, bag in tests.items():
                say(f"replaying the {_task_name(cfg, task)} test bag (edge, edge + cloud)")
                results["before"][task] = session.replay(bag, f"before_{task}")
            stages["replay_test_bags"] = time.monotonic() - t0
            t0 = time.monotonic()
            say(f"replaying the robot's walk through {d.new_task}: its hard frames go to the cloud")
            results["walk"] = {NEW: session.replay(data.walk_bag, "walk")}
            stages["replay_walk"] = time.monotonic() - t0
            truth = read_recording(session_dir / "walk.mcap")["truth"]
            uuids = _uploaded_during(session_dir / "store" / "samples", set(truth))
            say(f"the bridge holds {len(uuids)} refined hard frames of the walk")
            with _live_store(session_dir) as live:
                quality = pseudo_label_quality(live, uuids, truth, cfg.update.pseudo_keep_fraction)
            say(f"  their pseudo-labels: mIoU {quality['miou']:.3f} (the robot's own {quality['miou_edge']:.3f}); "
                f"{100 * quality['kept_fraction']:.0f} % of the pixels pass the confidence masking, "
                f"pixel accuracy {quality['kept_pixel_accuracy']:.3f} there")
            pusher = CandidatePusher(updates.publisher, ModelSpec(30, b.input_height, b.input_width, True))
            for labels in LABELS:
                t0 = time.monotonic()
                with _live_store(session_dir) as live, \
                        training_store(live, uuids, run / f"buffer_{labels}", d.new_task,
                                       truth if labels == "gt" else None) as store:
                    say(f"lifelong update with {'ground-truth' if labels == 'gt' else 'pseudo'} labels: "
                        f"fine-tuning the base model on {len(uuids)} uploaded frames + rehearsal")
                    t_trigger = time.monotonic()
                    update = train_update(cfg, data, base, store, labels, rehearsal, run / f"lifelong_{labels}")
                dec = update.decision
                info = {"published": dec.published, "blocked_because": list(dec.reasons),
                        "gate": dec.record["figures"], "train_frames": update.train_frames,
                        "candidate": str(dec.candidate_path), "decision_record": str(dec.record_path),
                        "train_s": dec.record["timings_s"]["total"]}
                updates_info[labels] = info
                if not dec.published:
                    say(f"  the gate BLOCKED the candidate: {'; '.join(dec.reasons)}; the robot keeps its model")
                    results[labels] = results["before"]   # no update from these labels: the base figures stand
                    stages[f"update_{labels}"] = time.monotonic() - t0
                    continue
                info.update(_land_update(session, pusher, dec, t_trigger, d, labels))
                results[labels] = {}
                for task, bag in tests.items():
                    say(f"  replaying the {_task_name(cfg, task)} test bag on the updated model")
                    results[labels][task] = session.replay(bag, f"after_{labels}_{task}")
                stages[f"update_{labels}"] = time.monotonic() - t0
        finally:
            updates.stop()
    return {"results": results, "updates": updates_info, "pseudo_label_quality": quality}


def _land_update(session: EvalSession, pusher, decision, t_trigger: float, d, labels: str) -> dict:
    """Push a published candidate while a camera stream plays and wait until the node
    serves it; the version, the update cycle time and the frame gaps around the swap."""
    from seg_harness.processes import wait_until

    pushed: dict = {}

    def push_and_wait():
        pushed["version"] = version = pusher(decision.candidate_path, decision)
        say(f"  pushed model version {version}; waiting for the robot to swap while frames flow")
        wait_until(lambda: f"now serving model {version} " in session.node.log(), 300,
                   f"the node to serve model {version}")
        pushed["update_cycle_s"] = time.monotonic() - t_trigger

    gaps = swap_gaps(session.stream(f"swap_{labels}", push_and_wait, d.bag_rate, d.height, d.width))
    say(f"  robot serves version {pushed['version']} {pushed['update_cycle_s']:.0f} s after the trigger; "
        + (f"swap gap {gaps['swap_gap_ms']:.0f} ms vs largest normal gap {gaps['normal_gap_ms']:.0f} ms"
           if gaps else "no frame was published on one side of the swap (gap not measured)"))
    return {**pushed, **(gaps or {})}


def _live_store(session_dir: Path):
    from cloud_bridge.sample_store import SqliteSampleStore
    return SqliteSampleStore(session_dir / "store" / "samples")


def _task_name(cfg: JobConfig, task: str) -> str:
    return cfg.data.old_task if task == OLD else cfg.data.new_task


def run_main_job(cfg: JobConfig, runs: Path) -> tuple[Path, dict]:
    """The whole job into a new runs/<timestamp>/; returns it and the report."""
    from .base_model import ensure_base_model
    from .cloud_model import ensure_cloud_model
    from .job_report import write_job_report
    from .lifelong_stage import rehearsal_index

    cache = runs / "cache"
    run = new_run_dir(runs)
    t0 = time.monotonic()
    stages: dict[str, float] = {}

    def timed(name, fn, *args):
        t = time.monotonic()
        out = fn(*args)
        stages[name] = time.monotonic() - t
        return out
    say(f"outputs in {run} ({runs / 'latest'})")
    data = timed("data", prepare_data, cfg, cache, say)
    base = timed("base_model", ensure_base_model, cfg, data, cache, say)
    cloud = timed("cloud_model", ensure_cloud_model, cfg, data, base, cache, say)
    outcome = run_job(cfg, data, base, cloud, rehearsal_index(cfg, data, cache, say), run, stages)
    say(f"ablation: refining the {cfg.data.new_task} test bag's uploaded frames with every mask generator "
        "and semantics (the SAM stand-in included)")
    outcome["ablation"] = timed("ablation", job_ablation, cfg, data, base, cloud, run)
    outcome["stages"] = stages
    t = time.monotonic()
    report = write_job_report(run, cfg, data, outcome, time.monotonic() - t0)
    stages["report"] = time.monotonic() - t
    say("stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
    return run, report


def job_ablation(cfg: JobConfig, data: JobData, base: Path, cloud: Path, run: Path) -> dict:
    """seg_eval.ablation on the shifted task's test bag replay, with the job bridge's models."""
    from cloud_bridge.cloud_semantics import CloudModel, CloudModelConfig
    from cloud_bridge.config import ModelsConfig
    from cloud_bridge.depth_regions import DepthRegionGenerator
    from cloud_bridge.mask_generators import RegionProposalGenerator
    from cloud_bridge.model_registry import ModelRegistry

    from .ablation import Evidence, hard_frames, instances_by_stamp, run_ablation
    from .sam_standin import SamStandInConfig, SimInstanceMaskGenerator

    session = run / "session"
    rec = read_recording(session / f"before_{NEW}.mcap")
    frames = hard_frames(session / "store" / "samples", set(rec["truth"]))
    b, c = cfg.base, cfg.bridge
    registry = ModelRegistry(ModelsConfig(directory=str(run / "bridge_models"), input_height=b.input_height,
                                          input_width=b.input_width, cache_dir=str(run / "bridge_cache")))
    edge = registry.predictor_for(frames[0].model_version) if frames else None
    cloud_model = CloudModel(CloudModelConfig(str(cloud), c.cloud_input_height, c.cloud_input_width,
                                              cache_dir=str(run / "bridge_cache")))
    standin = SamStandInConfig()
    generators = {"regions": RegionProposalGenerator(), "depth_regions": DepthRegionGenerator(),
                  "sam_standin": SimInstanceMaskGenerator(instances_by_stamp(data.new_test_index,
                                                                             list(rec["truth"])), standin)}
    result = run_ablation(frames, rec["truth"], rec["edge"], generators,
                          Evidence(edge, cloud_model, cfg.bridge.cloud_weight, cfg.bridge.mask_weight))
    result.update(task=cfg.data.new_task, sam_standin=standin.describe(),
                  live={"masks": cfg.bridge.masks, "semantics": cfg.bridge.semantics,
                        "mask_weight": cfg.bridge.mask_weight},
                  cloud_model={"version": cloud_model.version, "provenance": cloud_model.provenance})
    return result


def _interrupted(signum, frame):
    # SIGTERM unwinds like Ctrl-C, so every process is stopped on the way out.
    raise KeyboardInterrupt


def main(argv=None) -> int:
    from .job_report import headline

    ap = argparse.ArgumentParser(prog="scripts/main_job.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="full")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs", help="where runs/<timestamp>/ and the cache go")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    # A job started in the background by a shell inherits SIGINT ignored; Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # The trainer's per-epoch figures and the lifelong gate's decision are INFO logs.
    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    t0 = time.monotonic()
    say(f"preset {args.preset}")
    try:
        run, report = run_main_job(PRESETS[args.preset], args.runs)
    except KeyboardInterrupt:
        say("interrupted; every process it started is stopped")
        return 130
    say("done in %.1f min:\n%s" % ((time.monotonic() - t0) / 60, headline(report)))
    say(f"report: {run / 'report.json'} and {run / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
