"""Robot side of model push: fetch a signed model in chunks, resumably, and hand it over
only once every byte is proven (no ROS here; the node's model manager uses it).

On disk, under ``directory``::

    partial/<version>/manifest.json        the verified manifest of the download in progress
    partial/<version>/<index>.chunk        each chunk, checked against its signed hash, written durably
    versions/<version>/model.onnx          complete models, whole-file hash and size checked
    versions/<version>/manifest.json

A manifest (segwire.model_manifest) is accepted only when its signature verifies under
a trusted key, it fits the limits, and its version is newer than the model in use
(``allow_rollback`` admits older ones) and not withdrawn by a signed rollback command
(``commands``, seg_edge_node.model_rollback, whose topic this link also carries).
Chunks are requested in windows and asked for again after a timeout; one that does not match its hash is counted and requested again,
never written. A download interrupted by a disconnect, a restart or a power cut resumes
from the chunks on disk. When the last chunk is in, the file is assembled, its size and
SHA-256 checked, and it is moved to ``versions/<version>/`` in one rename before
``on_ready(manifest, path)`` is called. Nothing here touches the model in use.

MQTT: a ``ModelDownloader`` needs only its hooks called (``handle_message``,
``handle_connected``, ``handle_disconnected``; they only enqueue, so paho's network
thread may call them); ``MqttModelLink`` does that with a client of its own. One worker
thread verifies, hashes and writes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from durable_files import TEMP_SUFFIX, file_sha256, fsync_dir, makedirs_durable, write_atomic
from seg_core import ConfigError, Counters
from segwire import (ModelLimits, ModelRequest, TransferStatus, TransferError, decode_chunk, encode_transfer_status,
                     encode_request, model_chunk_topic, model_request_topic, model_status_topic,
                     models_manifest_topic, validate_robot_id)
from segwire.model_manifest import ManifestError, ModelManifest, verify_manifest

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
CHUNK_SUFFIX = ".chunk"
COUNTERS = ("manifests_received", "manifests_rejected", "chunks_received", "chunks_duplicate", "chunks_rejected",
            "chunks_malformed", "chunks_stale", "chunks_requested", "requests_sent", "re_requests", "disk_errors",
            "downloads_resumed", "downloads_abandoned", "downloads_completed", "downloads_failed",
            "commands_received", "commands_refused", "rollbacks")

# send(topic, payload, retain, expiry_s): publish with QoS 1; expiry_s None = never expires
Send = Callable[[str, bytes, bool, "int | None"], None]


@dataclass(frozen=True)
class DownloadOptions:
    fleet: str = "default"
    window: int = 16                 # chunks requested and not yet received, at most
    request_timeout_s: float = 5.0   # ask again for a chunk not received in this time
    request_expiry_s: int = 30       # the broker drops a request the cloud did not pick up by then
    status_period_s: float = 5.0     # model status while downloading, at most this often
    allow_rollback: bool = False     # accept versions older than the one in use
    limits: ModelLimits = ModelLimits()

    def __post_init__(self) -> None:
        if not 1 <= self.window <= self.limits.max_chunks_per_request:
            raise ConfigError(f"window={self.window}: use 1..{self.limits.max_chunks_per_request}")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"request_timeout_s={self.request_timeout_s}: use a time > 0")


@dataclass
class _Download:
    manifest: ModelManifest
    directory: Path                                          # partial/<version>
    have: set[int] = field(default_factory=set)
    outstanding: dict[int, float] = field(default_factory=dict)  # index -> when requested (monotonic)
    finish_after: float = 0.0                                    # when to retry a failed assembly

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def complete(self) -> bool:
        return len(self.have) == self.manifest.chunk_count


class ModelDownloader:
    def __init__(self, directory: str | Path, trusted_keys: dict, robot_id: str,
                 current_version_fn: Callable[[], int], on_ready: Callable[[ModelManifest, Path], None],
                 options: DownloadOptions = DownloadOptions(), commands=None):
        if not trusted_keys:
            raise ValueError("no trusted keys: every model would be rejected")
        self.directory = Path(directory).expanduser()
        self.robot_id = validate_robot_id(robot_id)
        self.options = options
        self._trusted = dict(trusted_keys)
        self._current_version = current_version_fn
        self._on_ready = on_ready
        self._commands = commands   # model_rollback.RollbackCommands, or None: no rollback commands
        self._partial = self.directory / "partial"
        self._versions = self.directory / "versions"
        self._inbox: queue.Queue = queue.Queue()
        self._lock = threading.Lock()  # the status snapshot, read by other threads
        self.counters = Counters(COUNTERS)
        self._status = dict(state="idle", version=None, received=0, total=0, reason="", last_error="")
        # worker thread only
        self._send: Send | None = None
        self._job: _Download | None = None
        self._announced: set[int] = set()   # versions handed to on_ready by this instance
        self._failed: set[int] = set()      # versions whose chunks did not make the signed file
        self._status_sent_at = 0.0

    # -- hooks for the MQTT side (any thread; they only enqueue) ---------------------------
    def subscriptions(self) -> list[str]:
        topics = [models_manifest_topic(self.options.fleet), model_chunk_topic(self.robot_id)]
        return topics + ([self._commands.topic] if self._commands is not None else [])

    def handle_message(self, topic: str, payload: bytes) -> None:
        self._inbox.put(("message", topic, payload))

    def handle_connected(self, send: Send) -> None:
        self._inbox.put(("connected", send))

    def handle_disconnected(self) -> None:
        self._inbox.put(("disconnected",))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-download", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop; a download in progress resumes from disk on the next start."""
        self._inbox.put(None)
        if hasattr(self, "_thread"):
            self._thread.join(timeout)

    def status(self) -> dict:
        current = self._current_version()  # outside the lock: it is the caller's code
        with self._lock:
            status = dict(self._status)
        return dict(status, current_version=current, counters=self.counters.snapshot())

    # -- worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        self._resume_from_disk()
        tick = min(0.5, self.options.request_timeout_s / 4)
        while True:
            try:
                item = self._inbox.get(timeout=tick)
            except queue.Empty:
                item = ("tick",)
            if item is None:
                return
            try:
                self._handle(item)
            except Exception:  # a bug must not end model updates for good
                log.exception("model download: handling %s failed", item[0])

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "message":
            topic, payload = item[1:]
            if topic == models_manifest_topic(self.options.fleet):
                self._on_manifest(payload)
            elif self._commands is not None and topic == self._commands.topic:
                self._on_command(payload)
            else:
                self._on_chunk(payload)
        elif kind == "connected":
            self._send = item[1]
            if self._job is not None:  # requests before the disconnect may be lost with it
                self._job.outstanding.clear()
            self._publish_status()
        elif kind == "disconnected":
            self._send = None
        self._check_timeouts()
        self._request_more()

    # -- manifests --------------------------------------------------------------------------
    def _on_manifest(self, payload: bytes) -> None:
        self.counters.add("manifests_received")
        try:
            manifest = verify_manifest(payload, self._trusted, self.options.limits)
        except ManifestError as e:
            self._reject(e.reason, f"manifest rejected: {e}")
            return
        version, current = manifest.version, self._current_version()
        job = self._job
        if job is not None and version <= job.version:
            return  # the same download, or an older (replayed) manifest: keep going
        if self._withdrawn(version):
            self._reject("withdrawn", f"manifest version {version} was withdrawn by a rollback command; not used")
            return
        if version == current:  # up to date
            self._abandon()
            self._set_status(state="idle")
            return
        if version < current and not self.options.allow_rollback:
            self._reject("downgrade", f"manifest version {version} is older than the model in use "
                                      f"({current}); refusing a downgrade (allow_rollback is off)")
            return
        if version in self._failed:
            return  # its chunks did not make the signed file; downloading it again would not help
        if self._complete(version):
            self._abandon()
            self._ready(manifest, self._versions / str(version) / MODEL_FILE)
            return
        self._abandon()
        directory = self._partial / str(version)
        makedirs_durable(directory)
        write_atomic(directory / MANIFEST_FILE, payload)
        self._job = _Download(manifest, directory)
        log.info("downloading model version %d (%d bytes in %d chunks; in use: %d)", version, manifest.size,
                 manifest.chunk_count, current)
        self._set_status(state="downloading", version=version, received=0, total=manifest.chunk_count,
                         reason="", last_error="")

    def _withdrawn(self, version: int) -> bool:
        return self._commands is not None and self._commands.withdrawn(version)

    # -- rollback commands ------------------------------------------------------------------
    def _on_command(self, payload: bytes) -> None:
        self.counters.add("commands_received")
        outcome = self._commands.handle(payload)
        if outcome.refused:
            self.counters.add("commands_refused")
            state = "downloading" if self._job is not None else "rejected"
            self._set_status(state=state, reason=outcome.reason, last_error=outcome.message)
            return
        if outcome.action == "rolling_back":
            self.counters.add("rollbacks")
            if self._job is not None and self._withdrawn(self._job.version):
                self._abandon()
            self._set_status(state="idle", version=None, reason="", last_error="")

    def _reject(self, reason: str, message: str) -> None:
        self.counters.add("manifests_rejected")
        log.warning("%s", message)
        # A download in progress goes on: one bad manifest must not stop a good transfer.
        state = "downloading" if self._job is not None else "rejected"
        self._set_status(state=state, reason=reason, last_error=message)

    def _abandon(self) -> None:
        if self._job is not None:
            self.counters.add("downloads_abandoned")
            log.info("abandoning the download of version %d", self._job.version)
            shutil.rmtree(self._job.directory, ignore_errors=True)
            self._job = None

    def _complete(self, version: int) -> bool:
        return (self._versions / str(version) / MANIFEST_FILE).is_file()

    # -- chunks ------------------------------------------------------------------------------
    def _on_chunk(self, payload: bytes) -> None:
        try:
            chunk = decode_chunk(payload, self.options.limits)
        except TransferError as e:
            self.counters.add("chunks_malformed")
            log.warning("dropped a malformed model chunk: %s", e)
            return
        job = self._job
        if job is None or chunk.version != job.version:
            self.counters.add("chunks_stale")
            return
        manifest = job.manifest
        if chunk.index >= manifest.chunk_count:
            self.counters.add("chunks_rejected")
            log.warning("chunk %d of version %d is past the last chunk %d", chunk.index, job.version,
                        manifest.chunk_count - 1)
            return
        if chunk.index in job.have:
            self.counters.add("chunks_duplicate")
            return
        if len(chunk.data) != manifest.chunk_length(chunk.index) or \
                hashlib.sha256(chunk.data).hexdigest() != manifest.chunk_sha256[chunk.index]:
            self.counters.add("chunks_rejected")
            message = f"chunk {chunk.index} of version {job.version} does not match its signed hash; asking again"
            log.warning("%s", message)
            self._set_status(last_error=message)
            job.outstanding.pop(chunk.index, None)  # so _request_more asks for it now
            return
        try:
            write_atomic(job.directory / f"{chunk.index}{CHUNK_SUFFIX}", chunk.data)
        except OSError as e:  # a full disk: leave it outstanding, asked for again after the timeout
            self.counters.add("disk_errors")
            self._set_status(last_error=f"cannot store chunk {chunk.index}: {e}")
            log.error("cannot store chunk %d of version %d: %s", chunk.index, job.version, e)
            return
        job.have.add(chunk.index)
        job.outstanding.pop(chunk.index, None)
        self.counters.add("chunks_received")
        self._set_status(received=len(job.have))
        if job.complete:
            self._finish(job)

    def _check_timeouts(self) -> None:
        job = self._job
        if job is None:
            return
        now = time.monotonic()
        if job.complete and now >= job.finish_after:
            self._finish(job)
            return
        if self._send is None:
            return  # everything outstanding is asked for again on connect
        late = [i for i, sent in job.outstanding.items() if now - sent > self.options.request_timeout_s]
        for index in late:
            del job.outstanding[index]
        self.counters.add("re_requests", len(late))
        if now - self._status_sent_at > self.options.status_period_s:
            self._publish_status()

    def _request_more(self) -> None:
        """Keep up to `window` chunks requested; top up once half of them have arrived,
        so requests go out in batches rather than one per chunk."""
        job, send = self._job, self._send
        if job is None or send is None or len(job.outstanding) > self.options.window // 2:
            return
        room = self.options.window - len(job.outstanding)
        wanted = [i for i in range(job.manifest.chunk_count) if i not in job.have and i not in job.outstanding]
        wanted = wanted[:room]
        if not wanted:
            return
        payload = encode_request(ModelRequest(job.version, wanted), self.options.limits)
        send(model_request_topic(self.robot_id), payload, False, self.options.request_expiry_s)
        now = time.monotonic()
        job.outstanding.update((i, now) for i in wanted)
        self.counters.add("requests_sent")
        self.counters.add("chunks_requested", len(wanted))

    # -- completion ---------------------------------------------------------------------------
    def _finish(self, job: _Download) -> None:
        self._set_status(state="verifying")
        try:
            path = self._assemble(job)
        except OSError as e:  # e.g. a full disk: the chunks stay, assembly is tried again later
            self.counters.add("disk_errors")
            job.finish_after = time.monotonic() + self.options.request_timeout_s
            message = f"cannot assemble version {job.version}: {e}; trying again"
            log.error("%s", message)
            self._set_status(state="downloading", last_error=message)
            return
        self._job = None
        shutil.rmtree(job.directory, ignore_errors=True)
        if path is None:
            # Every chunk matched its hash, so the signed manifest itself is inconsistent.
            self._failed.add(job.version)
            self.counters.add("downloads_failed")
            self._reject("model_hash", f"version {job.version}: the chunks, each matching its signed hash, do "
                                       "not make the file the manifest describes (size or sha256); not used")
            return
        self.counters.add("downloads_completed")
        log.info("model version %d downloaded and verified: %s", job.version, path)
        self._ready(job.manifest, path)

    def _assemble(self, job: _Download) -> Path | None:
        """Join the chunks, check the whole file and move it to versions/<version>/ in one
        rename; None (and nothing kept) if its size or sha256 is not the manifest's."""
        manifest = job.manifest
        staging = self._versions / f".staging-{job.version}"
        shutil.rmtree(staging, ignore_errors=True)
        makedirs_durable(staging)
        model_path = staging / MODEL_FILE
        write_atomic(model_path, (
            (job.directory / f"{i}{CHUNK_SUFFIX}").read_bytes() for i in range(manifest.chunk_count)))
        digest, size = file_sha256(model_path), model_path.stat().st_size
        if size != manifest.size or digest != manifest.model_sha256:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        write_atomic(staging / MANIFEST_FILE, (job.directory / MANIFEST_FILE).read_bytes())
        final = self._versions / str(job.version)
        os.replace(staging, final)  # the version appears complete or not at all
        fsync_dir(self._versions)
        return final / MODEL_FILE

    def _ready(self, manifest: ModelManifest, path: Path) -> None:
        self._set_status(state="ready", version=manifest.version, received=manifest.chunk_count,
                         total=manifest.chunk_count, reason="", last_error="")
        if manifest.version in self._announced:
            return
        self._announced.add(manifest.version)
        try:
            self._on_ready(manifest, path)
        except Exception:  # the manager's problem; the download stays complete on disk
            log.exception("on_ready for model version %d failed", manifest.version)

    # -- restart ------------------------------------------------------------------------------
    def _resume_from_disk(self) -> None:
        """Pick up the newest partial download that is still wanted; clear the rest."""
        for leftover in self._versions.glob(".staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        candidates = sorted((p for p in self._partial.glob("*") if p.name.isdigit()),
                            key=lambda p: int(p.name), reverse=True)
        for directory in candidates:
            job = None if self._job is not None else self._load_partial(directory)
            if job is None:
                shutil.rmtree(directory, ignore_errors=True)
            else:
                self._job = job
        job = self._job
        if job is not None:
            self.counters.add("downloads_resumed")
            log.info("resuming the download of version %d: %d of %d chunks on disk", job.version, len(job.have),
                     job.manifest.chunk_count)
            self._set_status(state="downloading", version=job.version, received=len(job.have),
                             total=job.manifest.chunk_count)
            if job.complete:
                self._finish(job)

    def _load_partial(self, directory: Path) -> _Download | None:
        try:
            manifest = verify_manifest((directory / MANIFEST_FILE).read_bytes(), self._trusted,
                                       self.options.limits)
        except (OSError, ManifestError) as e:  # e.g. its key is no longer trusted
            log.info("dropping partial download %s: %s", directory, e)
            return None
        current = self._current_version()
        if self._complete(manifest.version) or manifest.version == current or \
                self._withdrawn(manifest.version) or (manifest.version < current and not self.options.allow_rollback):
            return None
        job = _Download(manifest, directory)
        for path in directory.iterdir():
            if path.name.endswith(TEMP_SUFFIX):  # a write cut short by the restart
                path.unlink()
                continue
            if not path.name.endswith(CHUNK_SUFFIX):
                continue
            index = path.name.removesuffix(CHUNK_SUFFIX)
            data = path.read_bytes()
            if index.isdigit() and int(index) < manifest.chunk_count and \
                    hashlib.sha256(data).hexdigest() == manifest.chunk_sha256[int(index)]:
                job.have.add(int(index))
            else:
                path.unlink()  # damaged on disk: fetch it again
        return job

    # -- status ---------------------------------------------------------------------------------
    def _set_status(self, **changes) -> None:
        """Update the status; publish it when its state, version or reason changed
        (progress goes out every status_period_s, see _check_timeouts)."""
        keys = ("state", "version", "reason")
        with self._lock:
            before = [self._status[k] for k in keys]
            self._status.update(changes)
            changed = [self._status[k] for k in keys] != before
        if changed:
            self._publish_status()

    def _publish_status(self) -> None:
        if self._send is None:
            return
        status = self.status()
        payload = encode_transfer_status(TransferStatus(
            robot_id=self.robot_id, state=status["state"], version=status["version"],
            current_version=status["current_version"], received=status["received"], total=status["total"],
            reason=status["reason"], last_error=status["last_error"][:1000], stamp_ns=time.time_ns(),
            counters=status["counters"]), self.options.limits)
        self._send(model_status_topic(self.robot_id), payload, True, None)
        self._status_sent_at = time.monotonic()


class MqttModelLink:
    """Runs a ModelDownloader over a paho client of its own (segwire.make_client).

    Clean session on purpose: the transfer's state lives on the robot's disk, chunks
    queued for an offline robot would be stale by the time it is back, and the
    retained manifest arrives with every new subscription anyway.
    """

    def __init__(self, downloader: ModelDownloader, client: mqtt.Client):
        self.downloader = downloader
        self.client = client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message

    def start(self, host: str, port: int, keepalive_s: int = 10) -> None:
        self.client.connect_async(host, port, keepalive=keepalive_s, clean_start=True)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _send(self, topic: str, payload: bytes, retain: bool, expiry_s: int | None) -> None:
        props = None
        if expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = expiry_s
        self.client.publish(topic, payload, qos=1, retain=retain, properties=props)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the model link: %s", reason_code)
            return
        client.subscribe([(topic, 1) for topic in self.downloader.subscriptions()])
        self.downloader.handle_connected(self._send)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.downloader.handle_disconnected()

    def _on_message(self, client, userdata, message) -> None:
        self.downloader.handle_message(message.topic, message.payload)
