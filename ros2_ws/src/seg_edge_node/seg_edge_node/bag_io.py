"""rosbag2 files (MCAP or sqlite3) for the bag tools, without `ros2 bag`.

Bags are read and written with `rosbags` (pure Python); messages are built and
parsed by rclpy itself (`to_cdr` / `from_cdr`), so the bag tools use the same
message classes and image converters as the node. rosbags only needs the type
definitions, to store them in the bag: ROS 2 kilted's standard types plus the
project's seg_msgs, read from their .msg files. The RIHS01 type hashes it writes
equal those of the installed interfaces (checked for Image, CameraInfo, Clock,
DiagnosticArray and both seg_msgs types), so other ROS 2 tools accept the bags.
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}  # a bag written as one file of that storage
# Source tree layout: ros2_ws/src/<package>/msg next to ros2_ws/src/seg_edge_node.
_SOURCE_PACKAGES = Path(__file__).resolve().parents[2]


class BagError(RuntimeError):
    """A bag, topic or message type the tools cannot handle; the text says what to do."""


def storage_for(path, storage: str | None = None) -> str:
    """The storage to write: `storage` if given, else what the name's suffix says, else mcap."""
    implied = SUFFIXES.get(Path(path).suffix)
    if storage is None:
        return implied or "mcap"
    if storage not in STORAGES:
        raise BagError(f"unknown bag storage {storage!r}; use one of: {', '.join(STORAGES)}")
    if implied and implied != storage:
        raise BagError(f"{path} names a {implied} file but the storage asked for is {storage}; "
                       "change one of them")
    return storage


def _msg_dir(package: str) -> Path | None:
    """Where `package`'s .msg files are: a sourced ROS install, this venv, or the source tree."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [Path(p) / "share" / package / "msg" for p in [*prefixes, sys.prefix]]
    candidates.append(_SOURCE_PACKAGES / package / "msg")
    return next((c for c in candidates if c.is_dir()), None)


def _register_package(store: Typestore, package: str, names: list[str] | None = None) -> None:
    msg_dir = _msg_dir(package)
    if msg_dir is None:
        raise BagError(
            f"cannot find the .msg files of {package}: looked in share/{package}/msg under "
            f"AMENT_PREFIX_PATH and {sys.prefix}, and in {_SOURCE_PACKAGES / package / 'msg'}. "
            "Run scripts/setup.sh (it installs the ROS packages into .venv) or source the ROS install")
    files = sorted(msg_dir.glob("*.msg")) if names is None else [msg_dir / f"{n}.msg" for n in names]
    for f in files:
        if not f.is_file():
            raise BagError(f"{package} has no message {f.stem} (no {f}); check the type name")
        store.register(get_types_from_msg(f.read_text(), f"{package}/msg/{f.stem}"))


@cache
def typestore() -> Typestore:
    """ROS 2 kilted's standard message types plus seg_msgs (one shared instance)."""
    store = get_typestore(Stores.ROS2_KILTED)
    _register_package(store, "seg_msgs")
    return store


def normalize_type(msgtype: str) -> str:
    """'sensor_msgs/Image' or 'sensor_msgs/msg/Image' -> 'sensor_msgs/msg/Image'."""
    parts = msgtype.strip("/").split("/")
    if len(parts) == 2:
        parts.insert(1, "msg")
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise BagError(f"message type {msgtype!r} is not of the form package/msg/Type")
    return "/".join(parts)


def message_class(msgtype: str):
    """The rclpy class of 'pkg/msg/Type', e.g. sensor_msgs.msg.Image."""
    package, _, name = normalize_type(msgtype).split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type {msgtype!r} is not installed for Python (no {package}.msg.{name}); "
                       f"install or build {package}") from None


def type_name(msg_or_class) -> str:
    """rclpy message (or class) -> 'pkg/msg/Type'; the module is e.g. sensor_msgs.msg._image."""
    cls = msg_or_class if isinstance(msg_or_class, type) else type(msg_or_class)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def to_cdr(msg) -> bytes:
    return serialize_message(msg)


def from_cdr(data: bytes, msg_class):
    return deserialize_message(data, msg_class)


class BagWriter:
    """A rosbag2 being written.

    A path ending in .mcap or .db3 becomes that single file (it carries its own
    metadata; `ros2 bag play` and Foxglove open it directly); any other path becomes
    a bag directory, as `ros2 bag record -o` makes. Topics are declared with
    add_topic (or on first write_msg). The bag is only readable once closed: use it
    as a context manager, which closes it even when an exception ends the writing,
    so what was written so far is kept.
    """

    def __init__(self, path, storage: str | None = None):
        self.path = Path(path)
        self.storage = storage_for(path, storage)
        # rosbags writes directories; a single file is written in one and moved out on close.
        self._single_file = self.path.suffix in SUFFIXES
        self._dir = self.path.with_name(self.path.name + ".partial") if self._single_file else self.path
        for p in {self.path, self._dir}:
            if p.exists():
                raise BagError(f"{p} already exists; a bag is never overwritten, choose another --out "
                               "(or delete it)")
        self._writer = Writer(self._dir, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[self.storage])
        self._writer.open()
        self._connections = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        msgtype = normalize_type(msgtype)
        if topic in self._connections:
            if self._connections[topic].msgtype != msgtype:
                raise BagError(f"topic {topic} is already in the bag as {self._connections[topic].msgtype}, "
                               f"not {msgtype}")
            return
        store = typestore()
        if msgtype not in store.fielddefs:
            # A type outside kilted's standard set and seg_msgs: read it from its package.
            package, _, name = msgtype.split("/")
            _register_package(store, package, [name])
        self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=store)
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, data: bytes) -> None:
        """Write CDR bytes on a declared topic; `timestamp_ns` is the bag (log) time."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"topic {topic} was not added to the bag; call add_topic first")
        self._writer.write(connection, timestamp_ns, data)
        self.counts[topic] += 1

    def write_msg(self, topic: str, timestamp_ns: int, msg) -> None:
        self.add_topic(topic, type_name(msg))
        self.write(topic, timestamp_ns, to_cdr(msg))

    def close(self) -> None:
        """Finalize (MCAP footer/index or sqlite commit, metadata); idempotent."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        writer.close()
        if self._single_file:
            storage_file = self._dir / f"{self._dir.name}{self.path.suffix}"
            storage_file.replace(self.path)
            (self._dir / "metadata.yaml").unlink()
            self._dir.rmdir()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_writer(path, storage: str | None = None) -> BagWriter:
    """A new bag at `path`: a single .mcap/.db3 file, or else a bag directory; storage mcap or sqlite3."""
    return BagWriter(path, storage)


@contextmanager
def open_reader(path) -> Iterator[Reader]:
    """An open rosbags Reader for a bag directory or a single .mcap/.db3 file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is a directory without metadata.yaml, so not a finished rosbag2 "
                       "(was the recorder killed before it could close the bag?)")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises several types for unreadable files
        raise BagError(f"cannot read bag {path}: {e}") from e
    try:
        yield reader
    finally:
        reader.close()


def bag_topics(reader: Reader) -> dict[str, str]:
    """topic -> 'pkg/msg/Type' for every topic in an open bag."""
    return {c.topic: c.msgtype for c in reader.connections}
