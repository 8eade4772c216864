"""Robot -> cloud uplink: hard frames over MQTT 5 through a durable on-disk spool.

Nothing here runs on the camera loop: `submit()` only enqueues. One sender
thread encodes each frame (segwire), writes it to the spool, and publishes
spooled frames with QoS 1 while connected. A frame leaves the spool only when
the bridge's refined result for it comes back, which the bridge sends after
storing the frame: the broker's PUBACK is not enough, because a broker may
acknowledge a frame and then drop it (mosquitto does, for a shared subscription
whose members are all offline). A frame not confirmed in `confirm_timeout_s` is
sent again; the bridge stores each frame uuid once. The spool survives broker
outages and node restarts, and drops the oldest frames (counted) when full. The
session is persistent (clean_start=False, a session expiry), so refined results
the cloud sends while the robot is offline are delivered when it reconnects.

paho's callbacks run on its network thread and only enqueue or set flags.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paho.mqtt.client as mqtt

from rfnet.preprocessing import PreprocessConfig
from seg_core import ConfigError, Counters
from segwire import (HardFrame, MqttConnection, RefinedResult, RobotStatus, WireError, connect_persistent,
                     decode_refined,
                     encode_hard_frame, encode_status, hard_topic, make_client, refined_topic, status_topic,
                     validate_robot_id)

from .spool import CorruptEntryError, DiskSpool, SpoolError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UplinkConfig(MqttConnection):
    """The broker connection (segwire.MqttConnection's fields: host, port, client_id,
    credentials, TLS, keepalive, session expiry) and how hard frames travel over it."""
    host: str = ""                 # broker host; empty disables the uplink
    robot_id: str = "robot"        # client_id defaults to "seg-edge-<robot_id>"
    spool_dir: str = "~/.cache/seg_edge/spool"
    spool_max_mb: float = 256.0
    rgb_format: str = "jpeg"
    jpeg_quality: int = 85
    # Depth travels in steps of this many millimetres. 0 = one step of the model's own
    # 8-bit depth scale (1000 / depth_units_per_metre, 39 mm by default): finer steps
    # carry sensor noise the model never sees, and noise does not compress.
    depth_unit_mm: int = 0
    max_inflight: int = 4
    ack_timeout_s: float = 60.0    # republish a frame the broker has not acknowledged after this long
    confirm_timeout_s: float = 120.0  # republish a frame the bridge has not answered after this long

    @property
    def enabled(self) -> bool:
        return bool(self.host)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        try:
            validate_robot_id(self.robot_id)
        except WireError as e:
            raise ConfigError(f"parameter uplink.robot_id: {e}") from e
        try:
            self.check("uplink")
        except ConfigError as e:
            raise ConfigError(f"parameter {e}") from e
        if self.rgb_format not in ("jpeg", "png"):
            raise ConfigError(f"parameter uplink.rgb_format={self.rgb_format!r}: use jpeg or png")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"parameter uplink.jpeg_quality={self.jpeg_quality}: use 1..100")
        if not 0 <= self.depth_unit_mm <= 1000:
            raise ConfigError(f"parameter uplink.depth_unit_mm={self.depth_unit_mm}: use 1..1000, or 0 for "
                              "one step of the model's depth scale")
        if not self.spool_max_mb > 0:
            raise ConfigError(f"parameter uplink.spool_max_mb={self.spool_max_mb}: use a size > 0")
        if self.max_inflight < 1:
            raise ConfigError(f"parameter uplink.max_inflight={self.max_inflight}: use 1 or more")


def model_depth_step_mm(depth_units_per_metre: float) -> int:
    """One step of the model's 8-bit depth scale, in whole millimetres."""
    return max(1, min(1000, int(1000.0 / depth_units_per_metre)))


class MqttUplink:
    def __init__(self, config: UplinkConfig, on_refined: Callable[[RefinedResult], None],
                 model_version: Callable[[], str] = lambda: "", depth_units_per_metre: float = PreprocessConfig.depth_units_per_metre):
        self.config = config
        self.depth_unit_mm = config.depth_unit_mm or model_depth_step_mm(depth_units_per_metre)
        self._on_refined = on_refined
        self._model_version = model_version
        self.spool = DiskSpool(Path(config.spool_dir).expanduser() / config.robot_id,
                               int(config.spool_max_mb * 1024 * 1024))
        self._frames: queue.Queue[HardFrame] = queue.Queue(maxsize=64)
        self._acks: queue.Queue[int] = queue.Queue()
        self._confirmations: queue.Queue[str] = queue.Queue()   # frame uuids the bridge answered
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._running = False
        self._inflight: dict[int, tuple[str, float]] = {}   # mid -> (spool entry, publish time)
        self._unconfirmed: dict[str, float] = {}            # spool entry -> when the broker acked it
        self.counters = Counters(("submitted", "dropped_queue_full", "encode_errors", "spool_errors", "published",
                                  "bytes_published", "acknowledged", "confirmed", "republished", "refined_received",
                                  "refined_rejected", "connects", "disconnects", "refused_by_broker"))
        self._client = self._make_client()

    # -- public API --------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()
        cfg = self.config
        connect_persistent(self._client, cfg)
        log.info("uplink to %s:%d as %s (spool %s, %d frames waiting)", cfg.host, cfg.port,
                 self._client_id, self.spool.directory, len(self.spool))

    def submit(self, frame: HardFrame) -> bool:
        """Hand a hard frame over without blocking; False (and counted) if the queue is full."""
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            self.counters.add("dropped_queue_full")
            return False
        self.counters.add("submitted")
        self._wake.set()
        return True

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stats(self) -> dict:
        out = self.counters.snapshot()
        out.update({f"spool_{k}": v for k, v in self.spool.stats().items()})
        out["connected"] = int(self.connected)
        out["inflight"] = len(self._inflight)
        out["awaiting_bridge"] = len(self._unconfirmed)
        return out

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending; frames not yet acknowledged stay in the spool for the next start."""
        self._running = False
        self._wake.set()
        if hasattr(self, "_thread"):
            self._thread.join(timeout)
        if self.connected:
            info = self._client.publish(status_topic(self.config.robot_id), self._status("offline"),
                                        qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        self.spool.close()

    # -- MQTT client -------------------------------------------------------------------
    @property
    def _client_id(self) -> str:
        return self.config.client_id or f"seg-edge-{self.config.robot_id}"

    def _status(self, state: str) -> bytes:
        return encode_status(RobotStatus(robot_id=self.config.robot_id, state=state,
                                         stamp_ns=time.time_ns(), model_version=self._model_version(),
                                         counters={}))

    def _make_client(self) -> mqtt.Client:
        cfg = self.config
        client = make_client(self._client_id, cfg)
        client.will_set(status_topic(cfg.robot_id), self._status("offline"), qos=1, retain=True)
        client.max_inflight_messages_set(cfg.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the connection: %s", reason_code)
            return
        self.counters.add("connects")
        client.subscribe(refined_topic(self.config.robot_id), qos=1)
        client.publish(status_topic(self.config.robot_id), self._status("online"), qos=1, retain=True)
        self._connected.set()
        self._wake.set()
        log.info("connected to the broker (session present: %s)", flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        self.counters.add("disconnects")
        if self._running:
            log.warning("lost the broker (%s); frames wait in the spool, retrying", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            # The frame stays unconfirmed and is sent again later, so this repeats until fixed.
            self.counters.add("refused_by_broker")
            log.warning("the broker refused a frame on %s: %s; with the project's ACL (deploy/mosquitto) "
                        "uplink.username must be the robot id", hard_topic(self.config.robot_id), reason_code)
        self._acks.put(mid)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            result = decode_refined(message.payload)
        except WireError as e:
            self.counters.add("refined_rejected")
            log.warning("dropped a malformed refined result on %s: %s", message.topic, e)
            return
        self.counters.add("refined_received")
        self._confirmations.put(result.frame_uuid)
        self._wake.set()
        try:
            self._on_refined(result)
        except Exception:  # the node's problem, but the network thread must survive it
            log.exception("handling a refined result failed")

    # -- sender thread -----------------------------------------------------------------
    def _run(self) -> None:
        while self._running:
            self._wake.wait(0.2)
            self._wake.clear()
            self._spool_new_frames()
            self._handle_acks()
            self._handle_confirmations()
            if self.connected:
                self._publish_spooled()

    def _spool_new_frames(self) -> None:
        cfg = self.config
        while True:
            try:
                frame = self._frames.get_nowait()
            except queue.Empty:
                return
            try:
                payload = encode_hard_frame(frame, cfg.rgb_format, cfg.jpeg_quality,
                                            depth_unit_mm=self.depth_unit_mm)
            except WireError as e:
                self.counters.add("encode_errors")
                log.error("cannot encode hard frame %s: %s", frame.frame_uuid, e)
                continue
            try:
                self.spool.put(payload, frame.frame_uuid)
            except SpoolError as e:
                self.counters.add("spool_errors")
                log.error("hard frame %s not spooled: %s", frame.frame_uuid, e)

    def _handle_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                self._unconfirmed[entry[0]] = time.monotonic()
                self.counters.add("acknowledged")

    def _handle_confirmations(self) -> None:
        while True:
            try:
                frame_uuid = self._confirmations.get_nowait()
            except queue.Empty:
                return
            # Spool entry ids end with the frame uuid they were stored under.
            for entry in [e for e in self.spool if e.endswith(frame_uuid)]:
                self._unconfirmed.pop(entry, None)
                if self.spool.remove(entry):
                    self.counters.add("confirmed")

    def _publish_spooled(self) -> None:
        cfg = self.config
        now = time.monotonic()
        for mid, (entry, sent_at) in list(self._inflight.items()):
            if now - sent_at > cfg.ack_timeout_s:  # lost somewhere: send again (the bridge dedups)
                del self._inflight[mid]
                self.counters.add("republished")
        for entry, acked_at in list(self._unconfirmed.items()):
            if now - acked_at > cfg.confirm_timeout_s:   # no answer from the bridge: send again
                del self._unconfirmed[entry]
                self.counters.add("republished")
        busy = {entry for entry, _ in self._inflight.values()} | set(self._unconfirmed)
        for entry in self.spool.oldest(cfg.max_inflight + len(busy)):
            if len(self._inflight) >= cfg.max_inflight:
                return
            if entry in busy:
                continue
            try:
                payload = self.spool.read(entry)
            except (KeyError, CorruptEntryError):
                continue  # dropped meanwhile, or corrupt (the spool counted and removed it)
            info = self._client.publish(hard_topic(cfg.robot_id), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return  # not connected after all; paho keeps what it accepted
            self._inflight[info.mid] = (entry, now)
            self.counters.add("published")
            self.counters.add("bytes_published", len(payload))
