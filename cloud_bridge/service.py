"""The cloud bridge service: hard frames in over MQTT, refined masks out, samples stored.

  cloud-bridge --config cloud_bridge/bridge.yaml

Replicas share the work through an MQTT shared subscription. Each frame is
acknowledged to the broker (manual PUBACK) only after its sample and refined
labels are stored durably and the refined result was handed to the broker, so
a crash at any point means redelivery, never loss; the store is keyed by frame
uuid, so a redelivered frame is not stored twice (its stored result is sent again).
Samples go in through the replay buffer, so its size cap (lifelong.buffer.max_samples)
holds after every insert: the least trusted, oldest samples are evicted first.
Malformed payloads are logged, counted and acknowledged (redelivery cannot fix
them); a frame whose refinement fails is kept in <storage_dir>/failed/. While the store
is unavailable (its database restarting), the frame waits unacknowledged and is tried
again every store.retry_s (counted as store_errors).

The store is SQLite under storage_dir, or PostgreSQL shared by replicas on several hosts
(store.backend; cloud_bridge.store_factory). With http.port set, /healthz, /readyz and
Prometheus /metrics are served (cloud_bridge.service_http, cloud_bridge.metrics).

broker.receive_maximum (MQTT 5 Receive Maximum) caps the frames the broker hands over
unacknowledged, so a backlog waits in the broker and the inbox holds at most that many,
provided the broker honours it: mosquitto 2.0.11 (Debian 12) does not once PUBACKs flow
(each PUBACK for the oldest frame in flight releases receive_maximum more). Frames past
the cap are still processed and acknowledged; stats count them (over_receive_maximum).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from seg_core import Counters
from segwire import (HardFrame, RefinedResult, WireError, WireLimits, connect_persistent, decode_hard_frame,
                     encode_refined, make_client, refined_topic, robot_id_from_topic,
                     shared_hard_subscription)

from .config import BridgeConfig, ConfigError, load_bridge_config
from .json_logs import configure_logging
from .metrics import BridgeMetrics
from .refiner import Refiner, build_refiner
from .replay_buffer import ReplayBuffer
from .sample_store import Sample, SampleStore, SampleStoreError, StoreUnavailable

log = logging.getLogger("cloud_bridge")

COUNTERS = ("received", "refined", "rejected", "duplicate", "failed", "published", "publish_deferred",
            "over_receive_maximum", "store_errors")


class _StoppedWaiting(Exception):
    """The bridge stopped while a frame waited for the store."""


class BridgeService:
    def __init__(self, config: BridgeConfig, store: SampleStore, refiner: Refiner):
        self.config = config
        self.store = store
        self.buffer = ReplayBuffer(store, config.lifelong.buffer)
        self.refiner = refiner
        self.limits = WireLimits(max_payload_bytes=int(config.max_payload_mb * 1024 * 1024))
        self.counters = Counters(COUNTERS)
        self._lock = threading.Lock()   # the connection number and the unacknowledged count
        self._inbox: queue.Queue = queue.Queue()
        self._connection = 0     # counts lost connections: which one delivered a frame
        self._unacked = 0        # frames this connection delivered at QoS 1 and we have not acknowledged
        self._running = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._storage = Path(config.storage_dir).expanduser()
        self._storage.mkdir(parents=True, exist_ok=True)
        self.metrics = BridgeMetrics(self.stats)
        self.client = self._make_client()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._threads = [threading.Thread(target=self._work, name=f"refine-{i}", daemon=True)
                         for i in range(self.config.workers)]
        self._threads.append(threading.Thread(target=self._report, name="stats", daemon=True))
        for t in self._threads:
            t.start()
        b = self.config.broker
        connect_persistent(self.client, b, b.receive_maximum)
        log.info("bridge %s: refining with %s; broker %s:%d, group %r; storage %s",
                 self.config.bridge_id, self.refiner.describe(), b.host, b.port, b.share_group, self._storage)

    def stop(self) -> None:
        self._running = False
        for _ in range(self.config.workers):
            self._inbox.put(None)
        for t in getattr(self, "_threads", []):
            t.join(timeout=10)
        self.client.disconnect()
        self.client.loop_stop()
        self._write_stats()
        log.info("bridge %s stopped: %s", self.config.bridge_id, self.stats())

    def stats(self) -> dict:
        evicted = sum(dict(self.buffer.evictions).values())   # a copy: workers add to it
        return dict(self.counters.snapshot(), evicted=evicted, connected=int(self._connected.is_set()),
                    subscribed=int(self._subscribed.is_set()), queued=self._inbox.qsize())

    # -- MQTT ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        b = self.config.broker
        # manual_ack: the PUBACK for a frame is sent only once it is stored (see _work).
        client = make_client(b.client_id or f"cloud-bridge-{self.config.bridge_id}", b, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        client.subscribe(shared_hard_subscription(self.config.broker.share_group), qos=1)
        self._connected.set()
        log.info("connected (session present: %s)", flags.session_present)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("the broker refused the subscription: %s", reason_codes)
            return
        self._subscribed.set()
        self._write_stats()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._lock:
            self._connection += 1
            self._unacked = 0
        self._connected.clear()
        self._subscribed.clear()
        if self._running:
            log.warning("lost the broker (%s); unacknowledged frames will be redelivered", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        # Network thread: hand over and return; the PUBACK waits for the worker.
        limit = self.config.broker.receive_maximum
        warn = False
        with self._lock:
            connection = self._connection
            if message.qos:
                self._unacked += 1
                if self._unacked > limit:
                    warn, unacked = self.counters.add("over_receive_maximum") == 1, self._unacked
        if warn:
            log.warning("the broker sent %d unacknowledged frames, more than broker.receive_maximum=%d (mosquitto "
                        "2.0.11 does once PUBACKs flow): the backlog now waits in this bridge's memory, not in the "
                        "broker. Nothing is lost; use a broker that honours Receive Maximum, or receive_maximum: 1",
                        unacked, limit)
        self._inbox.put((connection, message.mid, message.qos, message.topic, message.payload))

    # -- work ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            connection, mid, qos, topic, payload = item
            try:
                self._process(topic, payload)
            except _StoppedWaiting:   # not stored: unacknowledged, the broker delivers it again
                continue
            except Exception:  # a bug must not stop the bridge; the frame is kept for a look
                self.counters.add("failed")
                log.exception("refining a frame from %s failed; payload kept in %s", topic, self._storage / "failed")
                self._keep_failed(payload)
            self._ack(connection, mid, qos)

    def _with_store(self, call, *args):
        """call(*args), tried again every store.retry_s while the store is unavailable (a
        database restart): the frame in hand waits, unacknowledged, with its refinement."""
        outage = False
        while True:
            try:
                result = call(*args)
            except StoreUnavailable as e:
                self.counters.add("store_errors")
                if not outage:
                    log.warning("sample store unavailable (%s): the frame waits unacknowledged, tried again "
                                "every %gs", e, self.config.store.retry_s)
                    outage = True
                if not self._running:
                    raise _StoppedWaiting() from e
                time.sleep(self.config.store.retry_s)
                continue
            if outage:
                log.info("sample store back")
            return result

    def _ack(self, connection: int, mid: int, qos: int) -> None:
        # QoS 0 has no packet id: a PUBACK for it is a protocol error the broker disconnects for.
        # A frame from a lost connection is not acknowledged: with the session kept, the broker
        # resends it under the same packet id and that copy gets the PUBACK; two PUBACKs for one
        # id widen the broker's window past receive_maximum, or acknowledge a frame given the id
        # since, before it is stored. With the session lost, the id may name a new frame already.
        # Under the lock, so that a connection lost meanwhile is never sent this PUBACK.
        with self._lock:
            if qos == 0 or connection != self._connection:
                return
            self._unacked -= 1
            self.client.ack(mid, qos)

    def _process(self, topic: str, payload: bytes) -> None:
        try:
            robot_id = robot_id_from_topic(topic)
            frame = decode_hard_frame(payload, self.limits)
            if frame.robot_id != robot_id:
                raise WireError(f"frame says robot {frame.robot_id!r} but came on {topic!r}")
        except WireError as e:
            self.counters.add("rejected")
            log.warning("rejected a payload on %s (%d bytes): %s", topic, len(payload), e)
            return
        self.counters.add("received")
        stored = self._with_store(self.store.get, frame.frame_uuid)
        if stored is not None:  # redelivery: the result may not have reached the robot
            self.counters.add("duplicate")
            self._publish(frame, stored.labels, stored.refiner)
            return
        with self.metrics.refine_seconds.time():
            refinement = self.refiner.refine(frame)
        new = self._with_store(self.buffer.add, Sample(
            frame_uuid=frame.frame_uuid, robot_id=frame.robot_id, stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id, edge_model_version=frame.model_version,
            mining_policy=frame.mining_policy, mining_score=frame.mining_score,
            label_source=refinement.label_source, refiner=refinement.refiner, received_at=time.time(),
            rgb=frame.rgb, depth_m=frame.depth_m, edge_labels=frame.edge_labels, labels=refinement.labels,
            label_confidence=refinement.confidence, tags=refinement.tags))
        self.counters.add("refined" if new else "duplicate")   # another replica may have won the race
        self._publish(frame, refinement.labels, refinement.refiner)

    def _publish(self, frame: HardFrame, labels, refiner: str) -> None:
        payload = encode_refined(RefinedResult(
            robot_id=frame.robot_id, frame_uuid=frame.frame_uuid, stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id, edge_model_version=frame.model_version, refiner=refiner,
            labels=labels, bridge_id=self.config.bridge_id))
        info = self.client.publish(refined_topic(frame.robot_id), payload, qos=1)
        # Hand the result to the broker before acknowledging the frame it answers. While
        # disconnected, paho keeps the QoS 1 message and sends it after reconnecting.
        published = False
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            try:
                info.wait_for_publish(timeout=10.0)
                published = info.is_published()
            except RuntimeError:   # the connection dropped while waiting
                pass
        if published:
            self.counters.add("published")
        else:
            self.counters.add("publish_deferred")
            log.warning("refined result for %s queued until the broker is back", frame.frame_uuid)

    def _keep_failed(self, payload: bytes) -> None:
        failed = self._storage / "failed"
        failed.mkdir(exist_ok=True)
        (failed / f"{time.time_ns()}.segw").write_bytes(payload)

    # -- reporting ---------------------------------------------------------------------------

    def _report(self) -> None:
        last = None
        while self._running:
            time.sleep(self.config.stats_period_s)
            stats = self.stats()
            self._write_stats()
            if stats != last:
                log.info("stats %s", stats)
                last = stats

    def _write_stats(self) -> None:
        path = self._storage / f"stats-{self.config.bridge_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.stats()))
        os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Cloud bridge: refines robots' hard frames with Segment "
                                             "Anything and stores them for retraining.")
    ap.add_argument("--config", help="YAML config (see cloud_bridge/bridge.yaml)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--log-json", action="store_true", help="one JSON object per log line")
    ap.add_argument("--bridge-id", help="overrides the config's bridge_id (replicas sharing one config file, "
                                        "e.g. a StatefulSet pod's name)")
    args = ap.parse_args(argv)
    configure_logging(args.log_level, args.log_json)
    try:
        config = load_bridge_config(args.config)
        if args.bridge_id:
            config = dataclasses.replace(config, bridge_id=args.bridge_id)
        refiner = build_refiner(config)
    except (ConfigError, ValueError, RuntimeError) as e:
        print(f"cloud-bridge: cannot start: {e}", file=sys.stderr)
        return 2
    from .service_http import bridge_probe_server
    from .store_factory import open_store_waiting

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        store = open_store_waiting(config, os.environ, stop)
    except (ValueError, SampleStoreError) as e:
        print(f"cloud-bridge: cannot start: {e}", file=sys.stderr)
        return 2
    if store is None:   # stopped while waiting for the database
        return 0
    service = BridgeService(config, store, refiner)
    http = bridge_probe_server(service)
    service.start()
    stop.wait()
    service.stop()
    if http is not None:
        http.stop()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
