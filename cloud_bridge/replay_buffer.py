"""The replay buffer for lifelong retraining, on top of the bridge's SampleStore.

Every labelled hard frame the bridge stores is a buffer entry. The buffer adds what
retraining needs on top of the store:

  * task tags: `Sample.tags[task_tag]` names a frame's scene/task ("-" when untagged),
    and `received_at` its time;
  * label sources: human > ground_truth > sam > region. Only the enabled sources count
    as training labels, and a label is never replaced by a less trusted one;
  * a size cap: beyond `max_samples` the least trusted labels go first, oldest first
    among equals, so human labels are never evicted while pseudo-labels remain;
  * a held-out split: 1 frame in `holdout_every`, chosen by a hash of its uuid, is
    never trained on and serves the gate as new-task data;
  * the trigger: `new_since(marker)` lists labelled frames not yet trained on;
  * `dataset(entries)`: a segdata SegmentationDataset over entries, for training.

  python -m cloud_bridge.replay_buffer --store DIR list [--robot R --source S --limit N]
  python -m cloud_bridge.replay_buffer --store DIR show UUID [--out side_by_side.png]
  python -m cloud_bridge.replay_buffer --store DIR import-labels LABELS_DIR   # <uuid>.png each
  python -m cloud_bridge.replay_buffer --store DIR stats
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from segdata import IGNORE_LABEL, LabelConfig
from segdata import Sample as SegSample

from .config import ConfigError, load_bridge_config
from .lifelong_config import LABEL_PREFERENCE, ReplayBufferConfig
from .pseudo_labels import mask_unsure
from .sample_store import Sample, SampleInfo, SampleStore, SampleStoreError

log = logging.getLogger(__name__)

UNTAGGED = "-"
_PAGE = 1000  # store.list page size when reading the whole buffer


def is_held_out(frame_uuid: str, holdout_every: int) -> bool:
    """The split rule: a hash, not a random draw, so every process, run and restart
    puts a frame on the same side, and a frame once held out is never trained on."""
    if holdout_every == 0:
        return False
    digest = hashlib.sha256(frame_uuid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % holdout_every == 0


def preference_rank(label_source: str) -> int:
    """0 for the most trusted source (human)."""
    return LABEL_PREFERENCE.index(label_source)


@dataclass(frozen=True)
class BufferEntry:
    info: SampleInfo
    order: int          # rank in insertion order among the entries listed with it, 0 = oldest
    task: str
    held_out: bool
    trainable: bool     # its label source counts as a training label

    @property
    def uuid(self) -> str:
        return self.info.frame_uuid

    @property
    def label_source(self) -> str:
        return self.info.label_source


@dataclass(frozen=True)
class TrainMarker:
    """What the last run trained on: uuid -> its label source then.

    A set of uuids rather than a "last sequence/time": bridge replicas commit frames out
    of received_at order, and eviction renumbers positions, so a cut-off would miss
    frames; and a frame whose label was since upgraded (e.g. by a human) counts as new.
    """
    created_at: float
    seen: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"created_at": self.created_at, "seen": dict(sorted(self.seen.items()))}

    @classmethod
    def from_json(cls, data: dict) -> TrainMarker:
        return cls(float(data["created_at"]), {str(k): str(v) for k, v in data["seen"].items()})


class BufferDataset:
    """segdata.SegmentationDataset over buffer entries (pixels read on access).

    Label ids >= num_classes read as ignore, as rfnet.training.open_labelled does for
    index data. depth_m stays None for frames sent without depth (optional in segwire).
    With `thresholds` (cloud_bridge.pseudo_labels), pixels whose label_confidence is below
    their class's threshold read as ignore too.
    """

    def __init__(self, store: SampleStore, uuids: list[str], num_classes: int, name: str = "replay buffer",
                 thresholds: np.ndarray | None = None):
        self.store, self.uuids, self.name = store, list(uuids), name
        self._lut = LabelConfig(num_classes=num_classes).lut()
        self.thresholds = thresholds

    def __len__(self) -> int:
        return len(self.uuids)

    def __getitem__(self, i: int) -> SegSample:
        s = self.store.get(self.uuids[i])
        if s is None:
            raise SampleStoreError(f"{self.name}: sample {self.uuids[i]} was deleted while in use")
        depth = None if s.depth_m is None else s.depth_m.astype(np.float32)
        return SegSample(s.rgb, depth, self._lut[mask_unsure(s.labels, s.label_confidence, self.thresholds)],
                         s.frame_uuid)


class ReplayBuffer:
    def __init__(self, store: SampleStore, config: ReplayBufferConfig = ReplayBufferConfig()):
        self.store, self.config = store, config
        self.training_sources = config.label_sources.enabled()
        self.evictions: Counter[str] = Counter()  # label source -> frames evicted by this buffer

    # -- reading ------------------------------------------------------------------------
    def entries(self, *, task: str | None = None, robot_id: str | None = None,
                label_source: str | None = None, held_out: bool | None = None,
                trainable: bool | None = None) -> list[BufferEntry]:
        """Entries, oldest first, matching every filter given (None = any)."""
        infos, offset = [], 0
        while True:
            page = self.store.list(limit=_PAGE, offset=offset, robot_id=robot_id, label_source=label_source)
            infos += page
            if len(page) < _PAGE:
                break
            offset += _PAGE
        entries = [self._entry(info, order) for order, info in enumerate(infos)]
        return [e for e in entries if (task is None or e.task == task)
                and (held_out is None or e.held_out == held_out)
                and (trainable is None or e.trainable == trainable)]

    def task_of(self, tags: dict[str, str]) -> str:
        return tags.get(self.config.task_tag, UNTAGGED)

    def _entry(self, info: SampleInfo, order: int) -> BufferEntry:
        return BufferEntry(info, order, self.task_of(info.tags),
                           is_held_out(info.frame_uuid, self.config.holdout_every),
                           info.label_source in self.training_sources)

    def new_since(self, marker: TrainMarker | None) -> list[BufferEntry]:
        """Labelled entries (both splits) the marker's run did not see, or saw with
        another label source. No marker: every labelled entry is new."""
        seen = {} if marker is None else marker.seen
        return [e for e in self.entries(trainable=True) if seen.get(e.uuid) != e.label_source]

    def marker(self, entries: list[BufferEntry]) -> TrainMarker:
        return TrainMarker(time.time(), {e.uuid: e.label_source for e in entries})

    def dataset(self, entries: list[BufferEntry], num_classes: int, name: str = "replay buffer",
                thresholds: np.ndarray | None = None) -> BufferDataset:
        return BufferDataset(self.store, [e.uuid for e in entries], num_classes, name, thresholds)

    # -- writing ------------------------------------------------------------------------
    def add(self, sample: Sample) -> bool:
        """Store a sample (idempotent by uuid) and keep the cap."""
        stored = self.store.put(sample)
        if stored and self.store.count() > self.config.max_samples:
            # Choosing victims lists every row; evicting 5 % below the cap makes that pass
            # once per max_samples/20 inserts instead of at each insert of a full buffer.
            self.enforce_cap(keep=self.config.max_samples - self.config.max_samples // 20)
        return stored

    def relabel(self, frame_uuid: str, labels: np.ndarray, label_source: str) -> bool:
        """Replace a frame's labels unless its current ones are more trusted (a later SAM
        pass must not undo a human's correction). False if the uuid is unknown or the
        labels were kept; ValueError for a wrong size (from the store)."""
        current = self.store.get(frame_uuid)
        if current is None:
            return False
        if preference_rank(label_source) > preference_rank(current.label_source):
            log.info("replay buffer: kept %s labels of %s over %s", current.label_source, frame_uuid, label_source)
            return False
        return self.store.update_labels(frame_uuid, labels, label_source)

    def enforce_cap(self, keep: int | None = None) -> list[str]:
        """Over max_samples, evict down to `keep` (default max_samples): least trusted
        label source first, oldest first within a source. Returns the evicted uuids."""
        if self.store.count() <= self.config.max_samples:  # the common case, without listing every row
            return []
        entries = self.entries()
        excess = len(entries) - (self.config.max_samples if keep is None else keep)
        victims = sorted(entries, key=lambda e: (-preference_rank(e.label_source), e.order))[:excess]
        evicted = []
        for e in victims:
            if self.store.delete(e.uuid):  # False: another process deleted it meanwhile
                self.evictions[e.label_source] += 1
                evicted.append(e.uuid)
        log.info("replay buffer: evicted %d samples over the cap of %d (%s)", len(evicted),
                 self.config.max_samples, dict(Counter(e.label_source for e in victims)))
        return evicted

    def stats(self) -> dict:
        entries = self.entries()
        times = [e.info.received_at for e in entries]
        return {
            "samples": len(entries),
            "max_samples": self.config.max_samples,
            # Frames with a training label, by split.
            "labelled_train_split": sum(e.trainable and not e.held_out for e in entries),
            "labelled_held_out_split": sum(e.trainable and e.held_out for e in entries),
            "training_sources": list(self.training_sources),
            "by_source": dict(Counter(e.label_source for e in entries)),
            "by_task": dict(Counter(e.task for e in entries)),
            "by_robot": dict(Counter(e.info.robot_id for e in entries)),
            "oldest_received_at": min(times) if times else None,
            "newest_received_at": max(times) if times else None,
            "evicted_by_this_process": dict(self.evictions),  # the store keeps no eviction history
        }


# -- CLI --------------------------------------------------------------------------------
def _colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids -> RGB with the packaged class palette; ignore is white."""
    from rfnet.classes import load_class_list

    lut = load_class_list().palette()
    lut[IGNORE_LABEL] = 255
    return lut[labels]


def side_by_side(sample: Sample) -> np.ndarray:
    """rgb | coloured labels, RGB order."""
    return np.concatenate([sample.rgb, _colorize(sample.labels)], axis=1)


def read_label_png(path: Path) -> np.ndarray:
    data = np.frombuffer(path.read_bytes(), np.uint8)
    labels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise ValueError("not a PNG opencv can decode")
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"must be a single-channel 8-bit image of class ids, got {labels.dtype} {labels.shape}")
    return labels


def import_labels(buffer: ReplayBuffer, labels_dir: Path) -> tuple[list[str], list[str]]:
    """Each <uuid>.png in labels_dir becomes that frame's human labels.
    Returns (imported uuids, error messages); a bad file does not stop the others."""
    if not labels_dir.is_dir():
        raise ValueError(f"{labels_dir} is not a directory")
    files = sorted(labels_dir.glob("*.png"))
    if not files:
        raise ValueError(f"{labels_dir}: no <uuid>.png label files")
    imported, errors = [], []
    for path in files:
        uuid = path.stem
        sample_hw = _frame_size(buffer.store, uuid)
        if sample_hw is None:
            errors.append(f"{path.name}: unknown frame uuid {uuid} (not in the store)")
            continue
        try:
            labels = read_label_png(path)
        except (OSError, ValueError) as e:
            errors.append(f"{path.name}: {e}")
            continue
        if labels.shape != sample_hw:
            errors.append(f"{path.name}: labels are {labels.shape[1]}x{labels.shape[0]} (WxH) but frame {uuid} "
                          f"is {sample_hw[1]}x{sample_hw[0]}")
            continue
        if buffer.relabel(uuid, labels, "human"):
            imported.append(uuid)
        else:
            errors.append(f"{path.name}: frame {uuid} was deleted during the import")
    return imported, errors


def _frame_size(store: SampleStore, frame_uuid: str) -> tuple[int, int] | None:
    sample = store.get(frame_uuid)
    return None if sample is None else sample.rgb.shape[:2]


def _print_entries(entries: list[BufferEntry]) -> None:
    print(f"{'uuid':40} {'robot':12} {'source':12} {'task':12} {'split':8} {'size':9} received_at")
    for e in entries:
        i = e.info
        split = "held-out" if e.held_out else "train"
        received = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(i.received_at))
        print(f"{i.frame_uuid:40} {i.robot_id:12} {i.label_source:12} {e.task:12} {split:8} "
              f"{i.width}x{i.height:<5} {received}Z")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Inspect the replay buffer and import human labels.")
    ap.add_argument("--store", type=Path, help="SQLite sample store directory (default <storage_dir>/samples; "
                                               "a config with store.backend: postgres names the database instead)")
    ap.add_argument("--config", type=Path, help="bridge YAML whose lifelong.buffer settings apply (default: defaults)")
    sub = ap.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the newest --limit frames, oldest first")
    ls.add_argument("--robot")
    ls.add_argument("--source", choices=LABEL_PREFERENCE)
    ls.add_argument("--limit", type=int, default=50, help="0 = all")
    show = sub.add_parser("show", help="one frame's metadata; --out writes rgb|labels side by side")
    show.add_argument("uuid")
    show.add_argument("--out", type=Path)
    imp = sub.add_parser("import-labels", help="<uuid>.png class-id images become human labels")
    imp.add_argument("labels_dir", type=Path)
    sub.add_parser("stats", help="counts by source, task, robot and split")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        bridge = load_bridge_config(args.config)
        config = bridge.lifelong.buffer
    except ConfigError as e:
        print(f"replay_buffer: {e}", file=sys.stderr)
        return 2
    from .store_factory import open_store
    try:
        store = open_store(bridge, os.environ, "replay-buffer", sqlite_dir=args.store, create=False)
    except (ValueError, SampleStoreError) as e:
        print(f"replay_buffer: {e}", file=sys.stderr)
        return 2
    with store:
        buffer = ReplayBuffer(store, config)
        if args.command == "list":
            entries = buffer.entries(robot_id=args.robot, label_source=args.source)
            _print_entries(entries[-args.limit:] if args.limit else entries)
            print(f"{len(entries)} frames" + (f", last {args.limit} shown" if 0 < args.limit < len(entries) else ""))
        elif args.command == "show":
            return _show(buffer, args.uuid, args.out)
        elif args.command == "import-labels":
            try:
                imported, errors = import_labels(buffer, args.labels_dir)
            except ValueError as e:
                print(f"replay_buffer: {e}", file=sys.stderr)
                return 2
            for message in errors:
                print(f"error: {message}", file=sys.stderr)
            print(f"imported {len(imported)} human label maps, {len(errors)} rejected")
            return 1 if errors else 0
        else:
            print(json.dumps(buffer.stats(), indent=2))
    return 0


def _show(buffer: ReplayBuffer, frame_uuid: str, out: Path | None) -> int:
    sample = buffer.store.get(frame_uuid)
    if sample is None:
        print(f"replay_buffer: unknown frame uuid {frame_uuid}", file=sys.stderr)
        return 1
    held_out = is_held_out(frame_uuid, buffer.config.holdout_every)
    print(json.dumps({"frame_uuid": sample.frame_uuid, "robot_id": sample.robot_id, "stamp_ns": sample.stamp_ns,
                      "label_source": sample.label_source, "task": buffer.task_of(sample.tags),
                      "split": "held-out" if held_out else "train",
                      "trainable": sample.label_source in buffer.training_sources,
                      "refiner": sample.refiner, "edge_model_version": sample.edge_model_version,
                      "mining_policy": sample.mining_policy, "mining_score": sample.mining_score,
                      "received_at": sample.received_at, "tags": sample.tags,
                      "size": [sample.rgb.shape[1], sample.rgb.shape[0]], "has_depth": sample.depth_m is not None,
                      "classes": sorted(int(c) for c in np.unique(sample.labels))}, indent=2))
    if out is not None:
        image = cv2.cvtColor(side_by_side(sample), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(out), image):
            print(f"replay_buffer: cannot write {out}", file=sys.stderr)
            return 1
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
