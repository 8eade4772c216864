"""Push retrained models to the robots: signed manifest retained, chunks on request.

    publisher = ModelPublisher(BrokerConfig(host=...), "default", "/srv/models",
                               load_private_key("keys/cloud-2026a.key"), "cloud-2026a")
    publisher.start()
    publisher.publish("rfnet.onnx", version=7, spec={...}, notes="retrained on week 46")

``publish`` keeps the model and its signed manifest under ``model_dir/<version>/``
(durably: the manifest, written last, marks a complete version) and publishes the
manifest retained on ``seg/v1/models/<fleet>/manifest``, so a robot connecting later
gets the latest. Robots ask for the chunks they lack on ``seg/v1/<robot>/model/request``
(segwire.model_transfer); the publisher answers on that robot's chunk topic from any
version it holds, bounded per request and rate-limited per robot, so a fleet resuming
at once does not flood the broker. Versions only grow: a version not above the latest
is refused. On (re)connect the latest manifest is published again, so a broker that
lost its retained messages gets it back. Started with a different signing key than the
latest manifest's, the publisher re-signs that manifest with the new key (step 3 of
key rotation in segwire.model_manifest).

paho's callbacks only enqueue; one worker thread reads files, hashes and publishes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import queue
import shutil
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from durable_files import makedirs_durable, write_atomic
from seg_core import Counters, TokenBucket
from segwire import (ALL_MODEL_REQUESTS, ModelChunk, ModelLimits, WireError, connect_persistent, decode_request,
                     encode_chunk, make_client, model_chunk_topic, models_manifest_topic,
                     robot_id_from_model_topic)
from segwire.model_manifest import (ManifestError, ModelManifest, build_manifest, iter_chunks, sign_manifest,
                                    verify_manifest)

from .config import BrokerConfig

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
COUNTERS = ("manifests_published", "requests", "requests_rejected", "unknown_version", "bad_index",
            "chunks_served", "chunks_throttled", "corrupt_chunks")


class PublishError(ValueError):
    """A model that cannot be published (version not newer, file too large, ...)."""


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    chunk_size: int = 256 * 1024
    chunks_per_s: float = 400.0     # per robot: 100 MB/s at 256 KiB, far above a robot's link
    burst_chunks: int = 64          # per robot, served at once before the rate applies
    chunk_expiry_s: int = 120       # the broker drops chunks a robot never picked up
    announce_timeout_s: float = 10.0
    limits: ModelLimits = ModelLimits()


class ModelPublisher:
    def __init__(self, broker: BrokerConfig, fleet: str, model_dir: str | Path, private_key: Ed25519PrivateKey,
                 key_id: str, options: ServeOptions = ServeOptions()):
        self.broker = broker
        self.fleet = fleet
        self.model_dir = Path(model_dir).expanduser()
        self.key_id = key_id
        self.options = options
        self._private_key = private_key
        self._trusted = {key_id: private_key.public_key()}  # to check our own manifests like a robot would
        self._topic = models_manifest_topic(fleet)
        self._lock = threading.Lock()           # manifests and latest: publish() runs on the caller's thread
        self._manifests: dict[int, ModelManifest] = {}
        self._latest = 0
        self._buckets: dict[str, TokenBucket] = {}
        self.counters = Counters(COUNTERS)
        self._inbox: queue.Queue = queue.Queue()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._load_published()
        self.client = self._make_client()

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="model-push", daemon=True)
        self._thread.start()
        b = self.broker
        connect_persistent(self.client, b, b.receive_maximum)

    def stop(self) -> None:
        self._inbox.put(None)
        if hasattr(self, "_thread"):
            self._thread.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    @property
    def latest_version(self) -> int:
        with self._lock:
            return self._latest

    def stats(self) -> dict:
        return dict(self.counters.snapshot(), latest_version=self.latest_version,
                    connected=int(self._connected.is_set()))

    # -- publishing ------------------------------------------------------------------------
    def publish(self, onnx_path: str | Path, version: int, spec: dict, notes: str = "",
                base_version: int | None = None) -> ModelManifest:
        """Store ``onnx_path`` as ``version`` with its signed manifest and announce it to
        the fleet. Returns once stored; the announcement is retried on every connect."""
        onnx_path = Path(onnx_path)
        limits = self.options.limits
        with self._lock:
            latest = self._latest
        if isinstance(version, bool) or not isinstance(version, int) or version <= latest:
            raise PublishError(f"version {version!r} is not above the latest published version {latest}: "
                               "robots would refuse it as a downgrade")
        size = onnx_path.stat().st_size
        if size > limits.max_model_bytes:
            raise PublishError(f"{onnx_path} is {size} bytes, above the robots' limit {limits.max_model_bytes}")
        version_dir = self.model_dir / str(version)
        makedirs_durable(version_dir)
        model_path = version_dir / MODEL_FILE
        # Hash the copy, not the source: the manifest must describe the bytes we serve.
        with open(onnx_path, "rb") as src:
            write_atomic(model_path, iter_chunks(src, 1024 * 1024))
        try:
            manifest = sign_manifest(
                build_manifest(model_path, version, spec, self.options.chunk_size, base_version=base_version,
                               notes=notes), self._private_key, self.key_id)
            verify_manifest(manifest.to_bytes(), self._trusted, limits)  # as a robot will
        except ManifestError as e:
            model_path.unlink()  # without a manifest the version does not exist; free the space
            raise PublishError(f"robots would reject this model: {e}") from e
        write_atomic(version_dir / MANIFEST_FILE, manifest.to_bytes())
        with self._lock:
            self._manifests[version] = manifest
            self._latest = version
        log.info("published model version %d (%d bytes, %d chunks, sha256 %s) for fleet %r", version,
                 manifest.size, manifest.chunk_count, manifest.model_sha256[:12], self.fleet)
        self._announce(manifest, wait=True)
        return manifest

    def _announce(self, manifest: ModelManifest, wait: bool) -> None:
        if not self._connected.is_set():
            log.info("not connected: version %d is announced on connect", manifest.version)
            return
        info = self.client.publish(self._topic, manifest.to_bytes(), qos=1, retain=True)
        if wait:
            try:
                info.wait_for_publish(self.options.announce_timeout_s)
            except (RuntimeError, ValueError) as e:  # lost the connection meanwhile
                log.warning("announcing version %d failed (%s); retried on connect", manifest.version, e)
                return
        self.counters.add("manifests_published")

    def _load_published(self) -> None:
        """Versions published before (a version without its manifest never completed)."""
        if not self.model_dir.is_dir():
            return
        for path in self.model_dir.glob(f"*/{MANIFEST_FILE}"):
            if not path.parent.name.isdigit():
                continue
            manifest = ModelManifest(**json.loads(path.read_bytes()))
            self._manifests[manifest.version] = manifest
        if self._manifests:
            self._latest = max(self._manifests)
            latest = self._manifests[self._latest]
            if latest.key_id != self.key_id:  # key rotation: the retained manifest moves to the new key
                resigned = sign_manifest(latest, self._private_key, self.key_id)
                write_atomic(self.model_dir / str(latest.version) / MANIFEST_FILE, resigned.to_bytes())
                self._manifests[latest.version] = resigned
                log.info("re-signed the manifest of version %d with key %r (was %r)", latest.version,
                         self.key_id, latest.key_id)
        # Copies interrupted before their manifest was written: reclaim the space.
        for path in self.model_dir.iterdir():
            if path.is_dir() and path.name.isdigit() and int(path.name) not in self._manifests:
                shutil.rmtree(path)

    # -- MQTT ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        b = self.broker
        client = make_client(b.client_id or f"model-publisher-{self.fleet}", b)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe(ALL_MODEL_REQUESTS, qos=1)
        self._connected.set()
        self._inbox.put(("connected",))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused the subscription to %s: %s", ALL_MODEL_REQUESTS, reason_codes)
            return
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self._subscribed.clear()

    def _on_message(self, client, userdata, message) -> None:
        self._inbox.put(("request", message.topic, message.payload))

    # -- worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while (item := self._inbox.get()) is not None:
            try:
                if item[0] == "connected":
                    with self._lock:
                        latest = self._manifests.get(self._latest)
                    if latest is not None:
                        self._announce(latest, wait=False)
                else:
                    self._serve(*item[1:])
            except Exception:  # a bug must not stop serving the fleet
                log.exception("model push worker failed on %s", item[0])

    def _serve(self, topic: str, payload: bytes) -> None:
        self.counters.add("requests")
        try:
            robot_id = robot_id_from_model_topic(topic)
            request = decode_request(payload, self.options.limits)
        except WireError as e:
            self.counters.add("requests_rejected")
            log.warning("dropped a malformed model request on %s: %s", topic, e)
            return
        with self._lock:
            manifest = self._manifests.get(request.version)
        if manifest is None:
            self.counters.add("unknown_version")
            log.warning("robot %s asked for version %d, which is not published", robot_id, request.version)
            return
        indices = [i for i in request.chunks if i < manifest.chunk_count]
        if len(indices) < len(request.chunks):
            self.counters.add("bad_index", len(request.chunks) - len(indices))
        granted = self._bucket(robot_id).take_up_to(len(indices))
        if granted < len(indices):  # the robot asks again after its timeout
            self.counters.add("chunks_throttled", len(indices) - granted)
        topic = model_chunk_topic(robot_id)
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = self.options.chunk_expiry_s
        with open(self.model_dir / str(manifest.version) / MODEL_FILE, "rb") as f:
            for index in indices[:granted]:
                f.seek(index * manifest.chunk_size)
                data = f.read(manifest.chunk_length(index))
                if hashlib.sha256(data).hexdigest() != manifest.chunk_sha256[index]:
                    # The robot would reject it and ask forever: say so loudly instead.
                    self.counters.add("corrupt_chunks")
                    log.error("chunk %d of stored version %d does not match its manifest (disk corruption?)",
                              index, manifest.version)
                    continue
                chunk = encode_chunk(ModelChunk(manifest.version, index, data), self.options.limits)
                self.client.publish(topic, chunk, qos=1, properties=props)
                self.counters.add("chunks_served")

    def _bucket(self, robot_id: str) -> TokenBucket:
        bucket = self._buckets.get(robot_id)
        if bucket is None:
            if len(self._buckets) > 1024:  # forget robots that are not downloading
                self._buckets = {r: b for r, b in self._buckets.items() if not b.full()}
            bucket = self._buckets[robot_id] = TokenBucket(self.options.chunks_per_s, self.options.burst_chunks)
        return bucket
