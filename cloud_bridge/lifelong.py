"""Lifelong retraining in the cloud: fine-tune the robots' RFNet on new hard frames
from the replay buffer plus a rehearsal of earlier data, and publish the candidate only
if a gate finds it better on the new task and not much worse on the old one.

A run (LifelongTrainer.run):
  1. keeps the buffer's cap, reads the frames not yet trained on (`new_since` the marker);
  2. training data: the new frames of the training split + a seeded draw of earlier
     data (the rehearsal index and buffer frames already trained on);
  3. fine-tunes a copy of the current checkpoint with rfnet.training.Trainer;
  4. scores current and candidate (mIoU) on held-out old-task data (an index) and
     new-task data (an index, else the buffer's held-out split), and the Ianvs BWT/FWT;
  5. publishes if new-task gain >= min_new_gain and old-task drop <= max_old_drop;
  6. writes candidates/candidate-NNNNNN.pth (Ianvs format) and decisions/candidate-NNNNNN.json,
     advances the trigger marker, and calls on_publish for a published candidate.

  python -m cloud_bridge.lifelong --config cloud_bridge/bridge.yaml --current model.pth [--force]
      [--publish --signing-key keys/fleet-2026.key --model-dir /srv/models [--fleet default]]

With --publish, a candidate that passes the gate is exported to ONNX at the robots'
spec and pushed to the fleet as the next model version (cloud_bridge.lifelong_publish),
and the command keeps serving its chunks to the robots until interrupted (--serve-for).
"""
from __future__ import annotations

import argparse
import bisect
import dataclasses
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from durable_files import makedirs_durable
from rfnet.checkpoint import CheckpointError, load_checkpoint, model_version, save_checkpoint
from rfnet.engines import ModelSpec
from rfnet.training import TrainConfig, Trainer, evaluate, open_labelled
from rfnet.training_data import TorchSegmentationDataset
from segmetrics import bwt, fwt
from segdata import DatasetError, SegmentationDataset

from .config import ConfigError, load_bridge_config
from .lifelong_config import FineTuneConfig, GateConfig, LifelongConfig
from .lifelong_ledger import LedgerBusy, TrainingLedger
from .replay_buffer import BufferEntry, ReplayBuffer, TrainMarker
from .sample_store import SampleStore, SampleStoreError

__all__ = ["LifelongConfig", "LifelongError", "LifelongTrainer", "GateDecision", "TaskScores", "gate_reasons",
           "transfer_metrics"]

log = logging.getLogger(__name__)


class LifelongError(RuntimeError):
    """A run cannot start (missing held-out data, nothing new to train on, ...)."""


@dataclass(frozen=True)
class TaskScores:
    current: float      # mIoU of the current model
    candidate: float    # mIoU of the fine-tuned candidate

    @property
    def delta(self) -> float:
        return self.candidate - self.current

    def to_json(self) -> dict:
        return {"current": self.current, "candidate": self.candidate, "delta": self.delta}


@dataclass(frozen=True)
class GateDecision:
    candidate_id: int
    published: bool
    reasons: tuple[str, ...]   # why it was blocked; empty when published
    old_task: TaskScores
    new_task: TaskScores
    bwt: float
    fwt: float
    candidate_path: Path
    record_path: Path
    record: dict               # the decision record as written to record_path


def gate_reasons(old: TaskScores, new: TaskScores, gate: GateConfig) -> tuple[str, ...]:
    """The thresholds the candidate misses (none: publish)."""
    reasons = []
    if new.delta < gate.min_new_gain:
        reasons.append(f"new-task mIoU gain {new.delta:+.4f} < min_new_gain {gate.min_new_gain:.4f}")
    if -old.delta > gate.max_old_drop:
        reasons.append(f"old-task mIoU drop {-old.delta:+.4f} > max_old_drop {gate.max_old_drop:.4f}")
    return tuple(reasons)


def transfer_metrics(old: TaskScores, new: TaskScores) -> dict:
    """Ianvs BWT/FWT of the two-task sequence (old, new). Row 0 of the task matrix is
    the current model (it learned the old task), row 1 the candidate (learned the new);
    the initial scores are the current model's, as the gate compares against it. So
    BWT = (old delta + new delta) / 4, and FWT is 0 by construction: it is reported
    for comparison with Ianvs benchmark results, not used by the gate."""
    matrix = [[old.current, new.current], [old.candidate, new.candidate]]
    initial = [old.current, new.current]
    return {"task_matrix": matrix, "initial_scores": initial, "bwt": bwt(matrix, initial), "fwt": fwt(matrix, initial)}


def train_config(ft: FineTuneConfig) -> TrainConfig:
    return TrainConfig(epochs=ft.epochs, batch_size=ft.batch_size, lr=ft.lr, input_height=ft.input_height,
                       input_width=ft.input_width, augment=ft.augment, photometric=ft.photometric,
                       freeze_bn=ft.freeze_bn, seed=ft.seed, device=ft.device, precision=ft.precision,
                       class_weights=ft.class_weights)


class _Concat:
    """segdata datasets one after the other (a SegmentationDataset)."""

    def __init__(self, parts: Sequence[SegmentationDataset], name: str):
        self.parts, self.name = [p for p in parts if len(p)], name
        self._ends = list(np.cumsum([len(p) for p in self.parts]))

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    def __getitem__(self, i: int):
        part = bisect.bisect_right(self._ends, i)
        return self.parts[part][i - (self._ends[part - 1] if part else 0)]


class _Picked:
    """The frames `indices` of a dataset (a SegmentationDataset)."""

    def __init__(self, dataset: SegmentationDataset, indices: Sequence[int], name: str):
        self.dataset, self.indices, self.name = dataset, list(indices), name

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


@dataclass
class _RunData:
    labelled: list[BufferEntry]     # every labelled buffer frame when the run started
    new: list[BufferEntry]          # not yet trained on, both splits
    new_train: list[BufferEntry]
    train: TorchSegmentationDataset
    rehearsal: dict                 # how many frames were drawn from which pool
    old_eval: TorchSegmentationDataset
    new_eval: TorchSegmentationDataset
    new_eval_source: str

    def counts(self) -> dict:
        return {"new": len(self.new), "new_training": len(self.new_train),
                "new_held_out": len(self.new) - len(self.new_train),
                "new_by_source": dict(Counter(e.label_source for e in self.new)),
                "new_by_task": dict(Counter(e.task for e in self.new)),
                "rehearsal": self.rehearsal, "training": len(self.train),
                "old_task_eval": len(self.old_eval), "new_task_eval": len(self.new_eval),
                "new_task_eval_source": self.new_eval_source}


class LifelongTrainer:
    """Retrains from the replay buffer; one run at a time per output directory.

    on_publish(candidate_checkpoint_path, decision) is called for a published candidate
    after its record and the marker are written; an exception from it reaches run()'s
    caller. After a publish, later runs of this trainer fine-tune the published candidate.
    """

    def __init__(self, config: LifelongConfig, store: SampleStore, current_checkpoint: str | Path,
                 on_publish: Callable[[Path, GateDecision], None] | None = None, progress: bool = False,
                 ledger: TrainingLedger | None = None):
        if not config.output_dir:
            raise LifelongError("lifelong.output_dir is empty: set where candidates and decisions go")
        self.config, self.store = config, store
        self.current_checkpoint = Path(current_checkpoint)
        self.on_publish, self.progress = on_publish, progress
        self.output_dir = Path(config.output_dir).expanduser()
        self.buffer = ReplayBuffer(store, config.buffer)
        if ledger is None:   # markers, decisions and the run lock in files under output_dir
            from .lifelong_ledger import FileLedger
            ledger = FileLedger(self.output_dir)
        self.ledger = ledger

    # -- trigger ------------------------------------------------------------------------
    def load_marker(self) -> TrainMarker | None:
        try:
            return self.ledger.load_marker()
        except ValueError as e:
            raise LifelongError(str(e)) from e

    def pending(self) -> list[BufferEntry]:
        """Labelled buffer frames (both splits) not yet trained on."""
        return self.buffer.new_since(self.load_marker())

    def should_train(self) -> bool:
        return len(self.pending()) >= self.config.min_new_samples

    # -- run ----------------------------------------------------------------------------
    def run(self, reason: str) -> GateDecision:
        makedirs_durable(self.output_dir)
        try:
            with self.ledger.run_lock():
                decision = self._run_locked(reason)
        except LedgerBusy as e:
            raise LifelongError(str(e)) from None
        if decision.published and self.on_publish is not None:
            self.on_publish(decision.candidate_path, decision)
        return decision

    def _run_locked(self, reason: str) -> GateDecision:
        tc = train_config(self.config.train)
        started, t0 = time.time(), time.monotonic()
        if not self.config.old_task_index:
            raise LifelongError("lifelong.old_task_index is empty: the gate needs held-out old-task data "
                                "to tell whether the candidate forgets")
        evicted = self.buffer.enforce_cap()
        current = load_checkpoint(self.current_checkpoint)
        data = self._prepare(current.num_classes, tc)
        t_data = time.monotonic()

        candidate_id = self.ledger.next_candidate_id()
        candidate_path = self.output_dir / "candidates" / f"candidate-{candidate_id:06d}.pth"
        model = load_checkpoint(self.current_checkpoint).model  # a fresh copy to fine-tune
        history = Trainer(model, tc).fit(data.train, progress=self.progress).history
        t_train = time.monotonic()

        current.model.to(tc.device)
        old, new = (TaskScores(self._miou(current.model, ds, tc), self._miou(model, ds, tc))
                    for ds in (data.old_eval, data.new_eval))
        t_eval = time.monotonic()

        makedirs_durable(candidate_path.parent)
        save_checkpoint(model.cpu(), candidate_path, epoch=tc.epochs, best_pred=new.candidate)
        reasons = gate_reasons(old, new, self.config.gate)
        transfer = transfer_metrics(old, new)
        record = {
            "candidate_id": candidate_id,
            "published": not reasons,
            "decision": "block" if reasons else "publish",
            "blocked_because": list(reasons),
            "reason": reason,
            "started_at": started,
            "finished_at": time.time(),
            "current": {"path": str(self.current_checkpoint), "version": current.version},
            "candidate": {"path": str(candidate_path), "version": model_version(candidate_path)},
            "figures": {"old_task": old.to_json(), "new_task": new.to_json(), **transfer},
            "thresholds": dataclasses.asdict(self.config.gate),
            "label_sources": list(self.buffer.training_sources),
            "samples": {**data.counts(), "evicted": len(evicted)},
            "train": {**dataclasses.asdict(self.config.train),
                      "history": [{"epoch": h.epoch, "loss": h.loss, "seconds": h.seconds} for h in history]},
            "timings_s": {"data": t_data - t0, "train": t_train - t_data, "eval": t_eval - t_train,
                          "total": time.monotonic() - t0},
        }
        record_path = self.ledger.save_decision(candidate_id, record)
        # Everything labelled when the run started: frames arriving during training stay new.
        self.ledger.save_marker(self.buffer.marker(data.labelled), candidate_id)

        decision = GateDecision(candidate_id, not reasons, reasons, old, new, transfer["bwt"], transfer["fwt"],
                                candidate_path, record_path, record)
        log.info("lifelong: candidate %d %s (%s): old-task mIoU %.4f -> %.4f, new-task mIoU %.4f -> %.4f, "
                 "BWT %+.4f; %d new + %d rehearsal frames; %s", candidate_id,
                 "PUBLISHED" if decision.published else "BLOCKED", reason, old.current, old.candidate,
                 new.current, new.candidate, decision.bwt, len(data.new_train), data.rehearsal["drawn"],
                 "; ".join(reasons) or "gate passed")
        if decision.published:
            self.current_checkpoint = candidate_path
        return decision

    def _prepare(self, num_classes: int, tc: TrainConfig) -> _RunData:
        """The run's data, every file checked before any training time is spent."""
        labelled = self.buffer.entries(trainable=True)
        new = self.buffer.new_since(self.load_marker())
        new_train = [e for e in new if not e.held_out]
        if not new_train:
            raise LifelongError(f"no new labelled training frames in the buffer ({len(new)} new, all held out)")
        old_eval = TorchSegmentationDataset(open_labelled(self.config.old_task_index, num_classes), tc.preprocess)
        new_eval, new_eval_source = self._new_task_data(labelled, num_classes, tc)
        new_uuids = {e.uuid for e in new}
        earlier = [e for e in labelled if not e.held_out and e.uuid not in new_uuids]
        train, rehearsal = self._training_data(new_train, earlier, num_classes, tc)
        if len(train) < tc.batch_size:  # the trainer drops incomplete batches: it would learn nothing
            raise LifelongError(f"{len(train)} training frames ({len(new_train)} new + {rehearsal['drawn']} "
                                f"rehearsal) make no full batch of train.batch_size {tc.batch_size}")
        return _RunData(labelled, new, new_train, train, rehearsal, old_eval, new_eval, new_eval_source)

    # -- helpers ------------------------------------------------------------------------
    def _training_data(self, new_train: list[BufferEntry], earlier: list[BufferEntry], num_classes: int,
                       tc: TrainConfig) -> tuple[TorchSegmentationDataset, dict]:
        """New frames + a seeded draw from the rehearsal pool (index + earlier buffer frames)."""
        rc = self.config.rehearsal
        index = open_labelled(rc.index, num_classes) if rc.index else _Concat([], "no rehearsal index")
        pool = _Concat([index, self.buffer.dataset(earlier, num_classes, "earlier buffer frames")], "rehearsal pool")
        wanted = round(rc.ratio * len(new_train))
        if rc.max_samples:
            wanted = min(wanted, rc.max_samples)
        count = min(wanted, len(pool))
        # Seeded by the training seed alone: the same inputs give the same candidate.
        picks = sorted(np.random.default_rng(tc.seed).choice(len(pool), count, replace=False).tolist())
        thresholds, pseudo = self._pseudo_label_thresholds(new_train)
        data = _Concat([self.buffer.dataset(new_train, num_classes, "new buffer frames", thresholds),
                        _Picked(pool, picks, "rehearsal")], "lifelong training data")
        # Hard frames may come without depth (optional in segwire): the robot then ran the
        # model on a no-return depth image, which is what require_depth=False feeds.
        torch_data = TorchSegmentationDataset(data, tc.preprocess, augment=tc.augment, seed=tc.seed,
                                              require_depth=False, augment_cfg=tc.augment_config)
        return torch_data, {"drawn": count, "pool": len(pool), "pool_index": len(index),
                            "pool_buffer": len(earlier), "index": rc.index, "pseudo_labels": pseudo}

    def _pseudo_label_thresholds(self, entries: list[BufferEntry]) -> tuple[np.ndarray | None, dict]:
        """Class-balanced confidence thresholds over the run's new frames whose labels
        carry a confidence (cloud_bridge.pseudo_labels), and what they keep."""
        from .pseudo_labels import class_thresholds, kept_fraction

        cfg = self.config.pseudo_labels
        if not cfg.enabled:
            return None, {"enabled": False}
        frames = [(s.labels, s.label_confidence) for s in map(self.store.get, (e.uuid for e in entries))
                  if s is not None and s.label_confidence is not None]
        if not frames:
            return None, {"enabled": True, "frames_with_confidence": 0}
        thresholds = class_thresholds(frames, cfg)
        present = sorted({int(c) for labels, _ in frames for c in np.unique(labels)} - {255})
        return thresholds, {"enabled": True, "frames_with_confidence": len(frames),
                            "kept_pixel_fraction": kept_fraction(frames, thresholds),
                            "thresholds": {str(c): int(thresholds[c]) for c in present}}

    def _new_task_data(self, entries: list[BufferEntry], num_classes: int,
                       tc: TrainConfig) -> tuple[TorchSegmentationDataset, str]:
        if self.config.new_task_index:
            return (TorchSegmentationDataset(open_labelled(self.config.new_task_index, num_classes), tc.preprocess),
                    self.config.new_task_index)
        held_out = [e for e in entries if e.held_out]
        if not held_out:
            raise LifelongError("no new-task held-out data: the buffer holds no labelled held-out frames yet "
                                f"(1 in {self.config.buffer.holdout_every}); set lifelong.new_task_index or wait "
                                "for more frames")
        data = self.buffer.dataset(held_out, num_classes, "buffer held-out frames")
        return (TorchSegmentationDataset(data, tc.preprocess, require_depth=False),
                f"buffer held-out split ({len(held_out)} frames)")

    def _miou(self, model, data, tc: TrainConfig) -> float:
        return evaluate(model, data, tc, model.num_classes, progress=self.progress).miou()


BROKER_WAIT_S = 15.0   # --publish: how long to wait for the broker before training


def main(argv=None, observer=None) -> int:
    """observer (cloud_bridge.trainer_job's metrics) hears how the run ended."""
    ap = argparse.ArgumentParser(description="Retrain RFNet on the replay buffer when enough new frames arrived; "
                                             "publish the candidate only if the gate passes.")
    ap.add_argument("--config", type=Path, help="bridge YAML (its lifelong section and storage_dir)")
    ap.add_argument("--current", required=True, type=Path, help="the robots' current RFNet checkpoint (.pth)")
    ap.add_argument("--store", type=Path, help="sample store directory (default <storage_dir>/samples)")
    ap.add_argument("--force", action="store_true", help="run even if too few new frames arrived")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    push = ap.add_argument_group("push a published candidate to the robots")
    push.add_argument("--publish", action="store_true", help="export a candidate that passes the gate to ONNX "
                                                             "and publish it as the fleet's next model version")
    push.add_argument("--signing-key", type=Path, help="ed25519 private key (<key_id>.key, segwire.model_keys)")
    push.add_argument("--key-id", help="default: the key file's name without .key")
    push.add_argument("--fleet", default="default")
    push.add_argument("--model-dir", type=Path, help="the publisher's versions (default <storage_dir>/published)")
    push.add_argument("--input-height", type=int, help="the robots' input height (default lifelong.train's)")
    push.add_argument("--input-width", type=int, help="the robots' input width (default lifelong.train's)")
    push.add_argument("--rgb-only", action="store_true", help="the robots run the RGB-only model")
    push.add_argument("--serve-for", type=float, default=0.0,
                      help="after a push, serve the model's chunks this many seconds (0 = until interrupted)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bridge = load_bridge_config(args.config)
    except ConfigError as e:
        print(f"lifelong: {e}", file=sys.stderr)
        return 2
    storage = Path(bridge.storage_dir).expanduser()
    config = bridge.lifelong
    if not config.output_dir:
        config = dataclasses.replace(config, output_dir=str(storage / "lifelong"))
    from .store_factory import open_ledger, open_store

    try:   # SQLite under --store/<storage_dir>, or the shared PostgreSQL database (store.backend)
        store = open_store(bridge, os.environ, "lifelong-trainer", sqlite_dir=args.store, create=False)
    except (ValueError, SampleStoreError) as e:
        print(f"lifelong: {e}", file=sys.stderr)
        return 2
    publisher = pusher = None
    with store:
        if args.publish:
            try:
                publisher, pusher = _candidate_pusher(args, bridge, storage)
            except (ValueError, OSError, CheckpointError) as e:   # before any training time is spent
                print(f"lifelong: --publish: {e}", file=sys.stderr)
                return 2
        try:
            return _run(args, config, store, open_ledger(store, config.output_dir), pusher, publisher, observer)
        finally:
            if publisher is not None:
                publisher.stop()


def _candidate_pusher(args, bridge, storage: Path):
    from segwire.model_keys import load_private_key

    from .lifelong_publish import CandidatePusher
    from .model_push import ModelPublisher

    if args.signing_key is None:
        raise ValueError("give --signing-key (the fleet's <key_id>.key)")
    key = load_private_key(args.signing_key)
    key_id = args.key_id or args.signing_key.name.removesuffix(".key")
    ft = bridge.lifelong.train
    spec = ModelSpec(load_checkpoint(args.current).num_classes, args.input_height or ft.input_height,
                     args.input_width or ft.input_width, use_depth=not args.rgb_only)
    # Its own client id: the bridge's persistent session must not be taken over.
    broker = dataclasses.replace(bridge.broker, client_id="")
    publisher = ModelPublisher(broker, args.fleet, args.model_dir or storage / "published", key, key_id)
    publisher.start()
    # Found out now, not after the training time: a push needs the broker.
    if not publisher.wait_subscribed(BROKER_WAIT_S):
        publisher.stop()
        raise ValueError(f"the broker at {broker.host}:{broker.port} did not answer in {BROKER_WAIT_S:g}s "
                         f"(check the config's broker section); nothing was trained")
    return publisher, CandidatePusher(publisher, spec)


def _run(args, config: LifelongConfig, store: SampleStore, ledger: TrainingLedger, pusher, publisher,
         observer=None) -> int:
    from .lifelong_publish import CandidatePushError
    from .model_push import PublishError

    version = None
    report = observer or _NoObserver()

    def on_publish(path: Path, decision: GateDecision) -> None:
        nonlocal version
        version = pusher(path, decision)

    if pusher is not None:
        pusher.versions = ledger   # versions are allocated where every trainer sees them
    trainer = LifelongTrainer(config, store, args.current, on_publish=on_publish if pusher else None,
                              progress=sys.stderr.isatty(), ledger=ledger)
    try:
        # One lock over training and publishing: a second trainer does neither.
        with ledger.run_lock():
            pending = len(trainer.pending())
            report.pending(pending)
            if pending < config.min_new_samples and not args.force:
                report.finished("not_triggered")
                print(f"not triggered: {pending} new labelled frames < min_new_samples {config.min_new_samples}")
                return 0
            reason = (f"forced ({pending} new labelled frames)" if pending < config.min_new_samples
                      else f"triggered: {pending} new labelled frames >= {config.min_new_samples}")
            d = trainer.run(reason)
    except LedgerBusy as e:
        report.finished("busy")
        print(f"lifelong: {e}")
        return 0
    except (LifelongError, CheckpointError, DatasetError, SampleStoreError, PublishError) as e:
        report.finished("failed")
        print(f"lifelong: {e}", file=sys.stderr)
        return 2
    except CandidatePushError as e:
        report.finished("failed")
        print(f"lifelong: not pushed: {e}", file=sys.stderr)
        return 2
    report.finished("published" if d.published else "blocked")
    print(f"candidate {d.candidate_id}: {'PUBLISH' if d.published else 'BLOCK'}"
          + ("" if d.published else f" ({'; '.join(d.reasons)})"))
    print(f"  old-task mIoU {d.old_task.current:.4f} -> {d.old_task.candidate:.4f} ({d.old_task.delta:+.4f})")
    print(f"  new-task mIoU {d.new_task.current:.4f} -> {d.new_task.candidate:.4f} ({d.new_task.delta:+.4f})")
    print(f"  BWT {d.bwt:+.4f}  FWT {d.fwt:+.4f}")
    print(f"  checkpoint {d.candidate_path}\n  record {d.record_path}")
    if version is not None:
        where = (f"pushed to fleet {publisher.fleet!r}" if publisher.stats()["connected"] else
                 f"stored for fleet {publisher.fleet!r} (broker lost; announced when the publisher reconnects)")
        print(f"  {where} as model version {version} ({publisher.model_dir / str(version)})")
        _serve(publisher, args.serve_for)
    return 0


class _NoObserver:
    def pending(self, n: int) -> None:
        pass

    def finished(self, outcome: str) -> None:
        pass


def _serve(publisher, seconds: float) -> None:
    """Robots fetch the chunks on request: keep answering until interrupted or for `seconds`."""
    import signal
    import threading

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"  serving the model to the robots {'for %gs' % seconds if seconds else 'until interrupted'} ...",
          flush=True)
    stop.wait(seconds or None)
    print(f"  publisher: {publisher.stats()}")


if __name__ == "__main__":
    sys.exit(main())
