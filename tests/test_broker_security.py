"""The shipped broker security (deploy/mosquitto) against a real mosquitto with a PKI
from segwire.dev_pki, probed with real paho clients: who may connect, publish and read.

Set SEG_SECURITY_FIGURES=<file> to have the refused attempts, counted by case, written there.
"""
from __future__ import annotations

import collections
import os
import ssl
import threading
import time
from pathlib import Path

import pytest
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from bridge_processes import make_hard_frame
from cloud_bridge.config import BrokerConfig, ConfigError
from seg_harness.local_cloud import BridgeRunner, LocalBroker, free_port
from segwire import (hard_topic, make_client, model_chunk_topic, model_request_topic, model_status_topic,
                     models_manifest_topic, refined_topic, status_topic)
from segwire.dev_pki import BRIDGE_IDENTITY, PUBLISHER_IDENTITY, PkiError, PkiRequest, generate

pytestmark = pytest.mark.timeout(240)

NOT_AUTHORIZED = 135           # MQTT 5 reason code, in CONNACK and PUBACK
BAD_CREDENTIALS = (134, 135)   # "bad user name or password" / "not authorized"
ACCEPTED = (0, 16)             # PUBACK "success" / "no matching subscribers"
WAIT_S = 10.0
REFUSED: collections.Counter = collections.Counter()   # refused attempts by case, for the figures


class Pki:
    def __init__(self, directory: Path, port: int, mtls_port: int):
        self.dir, self.port, self.mtls_port = directory, port, mtls_port
        self.ca = str(directory / "ca.crt")

    def password_file(self, identity: str) -> str:
        return str(self.dir / "passwords" / identity)

    def cert(self, identity: str) -> tuple[str, str]:
        return str(self.dir / "clients" / f"{identity}.crt"), str(self.dir / "clients" / f"{identity}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki") / "dev-pki"
    # No bind address, as shipped: the broker is also reachable at 127.0.0.2, an address its
    # certificate does not name, for the host name check.
    request = PkiRequest(directory, ("dog1", "dog2"), port=free_port(), mtls_port=free_port())
    generate(request)
    with LocalBroker(directory, port=request.port, config_path=directory / "mosquitto.conf"):
        yield Pki(directory, request.port, request.mtls_port)
    if os.environ.get("SEG_SECURITY_FIGURES"):
        lines = ["| case | refused attempts |", "|---|---|"] + [f"| {case} | {n} |" for case, n in sorted(REFUSED.items())]
        Path(os.environ["SEG_SECURITY_FIGURES"]).write_text("\n".join(lines) + "\n")


class Session:
    """A paho client over TLS recording its CONNACK, PUBACK reason codes and messages."""

    def __init__(self, pki: Pki, name: str, *, username: str = "", password_file: str = "", password: str = "",
                 ca_file: str | None = None, cert: tuple[str, str] = ("", ""), host: str = "127.0.0.1",
                 port: int | None = None, will_topic: str = ""):
        self.connack = None
        self.connected = threading.Event()
        self.answered = threading.Event()       # CONNACK or disconnect
        self.messages: list[MQTTMessage] = []
        self.pubacks: dict[int, int] = {}
        self._lock = threading.Lock()
        self.client = make_client(f"test-{name}", username=username, password=password, password_file=password_file,
                                  tls=True, ca_file=pki.ca if ca_file is None else ca_file,
                                  cert_file=cert[0], key_file=cert[1])
        if will_topic:
            self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *args: self.answered.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.connect(host, port or pki.port)   # the TLS handshake happens here
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code.value
        if not reason_code.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append(message)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            self.pubacks[mid] = reason_code.value

    def wait_connack(self) -> int | None:
        assert self.answered.wait(WAIT_S), "no CONNACK and no disconnect"
        return self.connack

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *args: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(WAIT_S), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """QoS 1; the PUBACK's reason code (0, 16 'no subscribers', 135 'not authorized', ...)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            with self._lock:
                if info.mid in self.pubacks:
                    return self.pubacks[info.mid]
            time.sleep(0.01)
        raise AssertionError(f"no PUBACK for {topic}")

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [m.payload for m in self.messages if topic is None or m.topic == topic]

    def wait_for(self, payload: bytes) -> None:
        deadline = time.monotonic() + WAIT_S
        while payload not in self.payloads():
            assert time.monotonic() < deadline, f"{payload!r} did not arrive; got {self.payloads()}"
            time.sleep(0.01)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sessions():
    opened: list[Session] = []

    def open_session(*args, **kwargs) -> Session:
        session = Session(*args, **kwargs)
        opened.append(session)
        return session

    yield open_session
    for session in opened:
        session.close()


def login(open_session, pki: Pki, identity: str, **kwargs) -> Session:
    session = open_session(pki, f"{identity}-{time.monotonic_ns()}", username=identity,
                           password_file=pki.password_file(identity), **kwargs)
    assert session.wait_connack() == 0, f"{identity} could not log in"
    return session


def refused(case: str, happened: bool) -> None:
    if happened:
        REFUSED[case] += 1
    assert happened, f"not refused: {case}"


# -- connecting ----------------------------------------------------------------------------
def test_connections_without_valid_credentials_are_refused(pki, sessions):
    refused("connect without credentials", sessions(pki, "anon").wait_connack() in BAD_CREDENTIALS)
    refused("connect with a wrong password", sessions(pki, "wrong", username="dog1",
                                                      password="not-the-password").wait_connack() in BAD_CREDENTIALS)
    # Another identity's password does not open this one.
    refused("connect with another identity's password", sessions(
        pki, "swap", username="dog1", password_file=pki.password_file("dog2")).wait_connack() in BAD_CREDENTIALS)
    refused("connect as an unknown user", sessions(
        pki, "ghost", username="dog3", password_file=pki.password_file("dog1")).wait_connack() in BAD_CREDENTIALS)
    assert login(sessions, pki, "dog1").connected.is_set()


def test_plain_mqtt_to_the_tls_listener_gets_no_session(pki):
    client = make_client("test-plain", username="dog1", password_file=pki.password_file("dog1"))
    answered, connacks = threading.Event(), []
    client.on_connect = lambda c, u, f, rc, p: (connacks.append(rc), answered.set())
    client.on_disconnect = lambda *args: answered.set()
    try:
        client.connect("127.0.0.1", pki.port)
        client.loop_start()
        assert answered.wait(WAIT_S)
        refused("plain MQTT on the TLS port", not connacks)
    finally:
        client.loop_stop()


def test_a_client_that_trusts_another_ca_refuses_the_broker(pki, tmp_path, sessions):
    other = generate(PkiRequest(tmp_path / "other-pki", ("dog1",)))
    assert other
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        sessions(pki, "other-ca", username="dog1", password_file=pki.password_file("dog1"),
                 ca_file=str(tmp_path / "other-pki" / "ca.crt"))
    REFUSED["TLS: broker certificate from an untrusted CA"] += 1


def test_the_broker_host_name_is_verified(pki, sessions):
    # The certificate names localhost and 127.0.0.1; the same broker at 127.0.0.2 is refused.
    login(sessions, pki, "dog1", host="localhost")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        sessions(pki, "wrong-host", username="dog1", password_file=pki.password_file("dog1"), host="127.0.0.2")
    REFUSED["TLS: broker address not in its certificate"] += 1


def test_client_certificate_listener_takes_the_identity_from_the_certificate(pki, sessions):
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    bridge.subscribe(hard_topic("dog1"))
    dog1 = sessions(pki, "dog1-cert", cert=pki.cert("dog1"), port=pki.mtls_port)
    assert dog1.wait_connack() == 0
    # Logged in as dog1 by its certificate: its own topics, nobody else's.
    refused("publish to another robot's hard topic", dog1.publish(hard_topic("dog2"), b"forged") == NOT_AUTHORIZED)
    assert dog1.publish(hard_topic("dog1"), b"cert-frame") in ACCEPTED
    bridge.wait_for(b"cert-frame")
    assert bridge.payloads() == [b"cert-frame"]


def test_the_client_certificate_listener_refuses_a_client_without_one(pki):
    client = make_client("test-nocert", username="dog1", password_file=pki.password_file("dog1"), tls=True,
                         ca_file=pki.ca)
    answered, connacks = threading.Event(), []
    client.on_connect = lambda c, u, f, rc, p: (connacks.append(rc), answered.set())
    client.on_disconnect = lambda *args: answered.set()
    try:
        try:
            client.connect("127.0.0.1", pki.mtls_port)   # TLS 1.2 fails here, TLS 1.3 right after
            client.loop_start()
            assert answered.wait(WAIT_S)
        except ssl.SSLError:
            pass
        refused("no client certificate on the certificate listener", not connacks)
    finally:
        client.loop_stop()


# -- robots --------------------------------------------------------------------------------
def test_a_robot_cannot_publish_as_another_robot(pki, sessions):
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    for topic in (hard_topic("dog2"), status_topic("dog2"), model_status_topic("dog2")):
        bridge.subscribe(topic)
    dog1 = login(sessions, pki, "dog1")
    for topic in (hard_topic("dog2"), status_topic("dog2"), model_status_topic("dog2"), model_request_topic("dog2")):
        refused("publish into another robot's topics", dog1.publish(topic, b"forged") == NOT_AUTHORIZED)
    # A frame of its own sent after the forged ones arrives; the forged ones, which would have
    # come first, did not.
    dog2 = login(sessions, pki, "dog2")
    assert dog2.publish(hard_topic("dog2"), b"genuine") in ACCEPTED
    bridge.wait_for(b"genuine")
    assert b"forged" not in bridge.payloads()


def test_a_robot_cannot_impersonate_the_cloud(pki, sessions):
    dog1 = login(sessions, pki, "dog1")
    dog1.subscribe(refined_topic("dog1"))
    dog1.subscribe(model_chunk_topic("dog1"))
    fleet_command = "seg/v1/models/default/command"   # signed rollback commands (segwire.model_command)
    for topic in (refined_topic("dog1"), refined_topic("dog2"), models_manifest_topic("default"), fleet_command,
                  model_chunk_topic("dog1"), model_chunk_topic("dog2")):
        refused("publish refined results, manifests, commands or chunks as a robot",
                dog1.publish(topic, b"forged", retain=topic.startswith("seg/v1/models/")) == NOT_AUTHORIZED)
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    assert bridge.publish(refined_topic("dog1"), b"from-the-bridge") in ACCEPTED
    dog1.wait_for(b"from-the-bridge")
    assert b"forged" not in dog1.payloads()


def test_a_robot_reads_nothing_of_another_robot(pki, sessions):
    dog2 = login(sessions, pki, "dog2")
    assert dog2.publish(status_topic("dog2"), b"dog2-status", retain=True) in ACCEPTED
    dog1 = login(sessions, pki, "dog1")
    for topic in (refined_topic("dog2"), status_topic("dog2"), model_chunk_topic("dog2"), hard_topic("dog2"),
                  refined_topic("dog1"), "seg/v1/#"):
        dog1.subscribe(topic)   # mosquitto grants it, and checks each delivery instead
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    publisher = login(sessions, pki, PUBLISHER_IDENTITY)
    assert bridge.publish(refined_topic("dog2"), b"dog2-refined") in ACCEPTED
    assert publisher.publish(model_chunk_topic("dog2"), b"dog2-chunk") in ACCEPTED
    assert dog2.publish(hard_topic("dog2"), b"dog2-hard") in ACCEPTED
    assert bridge.publish(refined_topic("dog1"), b"dog1-refined") in ACCEPTED   # the marker: sent last
    dog1.wait_for(b"dog1-refined")
    leaked = set(dog1.payloads()) & {b"dog2-status", b"dog2-refined", b"dog2-chunk", b"dog2-hard"}
    for payload in (b"dog2-status", b"dog2-refined", b"dog2-chunk", b"dog2-hard"):
        refused("read another robot's status, refined results, chunks or frames", payload not in leaked)


def test_a_robot_cannot_hang_its_last_will_on_another_robot(pki, sessions):
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    bridge.subscribe(status_topic("dog2"))
    # mosquitto 2.0 accepts the will at connect and checks it when it would publish it.
    dog1 = sessions(pki, "will", username="dog1", password_file=pki.password_file("dog1"),
                    will_topic=status_topic("dog2"))
    assert dog1.wait_connack() == 0
    dog1.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    dog2 = login(sessions, pki, "dog2")
    assert dog2.publish(status_topic("dog2"), b"dog2-online", retain=True) in ACCEPTED
    bridge.wait_for(b"dog2-online")
    refused("a last will on another robot's status", b"offline" not in bridge.payloads())


def test_a_robot_guessing_the_bridges_group_gets_no_frames(pki, sessions):
    group = f"bridges-{time.monotonic_ns()}"
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    bridge.subscribe(f"$share/{group}/seg/v1/+/hard")
    # mosquitto 2.0 grants these subscriptions and then delivers nothing to them; in a
    # group it knew, the robot would be dealt frames that are then dropped (see deploy/mosquitto/acl).
    dog1 = login(sessions, pki, "dog1")
    dog1.subscribe("$share/bridges/seg/v1/+/hard")
    dog2 = login(sessions, pki, "dog2")
    frames = [f"frame-{i}".encode() for i in range(6)]
    for frame in frames:
        assert dog2.publish(hard_topic("dog2"), frame) in ACCEPTED
    bridge.wait_for(frames[-1])
    assert bridge.payloads() == frames
    refused("read hard frames through a guessed shared subscription", dog1.payloads() == [])


def test_a_robot_does_its_own_job(pki, sessions):
    bridge = login(sessions, pki, BRIDGE_IDENTITY)
    bridge.subscribe("$share/bridges-own/seg/v1/+/hard")
    publisher = login(sessions, pki, PUBLISHER_IDENTITY)
    publisher.subscribe("seg/v1/+/model/request")
    assert publisher.publish(models_manifest_topic("default"), b"signed-manifest", retain=True) in ACCEPTED
    assert publisher.publish("seg/v1/models/default/command", b"signed-command", retain=True) in ACCEPTED
    dog1 = login(sessions, pki, "dog1")
    dog1.subscribe(refined_topic("dog1"))
    dog1.subscribe(model_chunk_topic("dog1"))
    dog1.subscribe(models_manifest_topic("default"))
    dog1.subscribe("seg/v1/models/default/command")
    dog1.wait_for(b"signed-manifest")
    dog1.wait_for(b"signed-command")
    assert dog1.publish(hard_topic("dog1"), b"dog1-hard") in ACCEPTED
    bridge.wait_for(b"dog1-hard")
    assert bridge.publish(refined_topic("dog1"), b"dog1-refined") in ACCEPTED
    dog1.wait_for(b"dog1-refined")
    assert dog1.publish(model_request_topic("dog1"), b"send-chunks") in ACCEPTED
    publisher.wait_for(b"send-chunks")
    assert publisher.publish(model_chunk_topic("dog1"), b"chunk-0") in ACCEPTED
    dog1.wait_for(b"chunk-0")
    assert dog1.publish(status_topic("dog1"), b"online", retain=True) in ACCEPTED
    assert dog1.publish(model_status_topic("dog1"), b"serving", retain=True) in ACCEPTED


def test_the_bridge_identity_reads_every_robots_frames_through_the_shared_subscription(pki, sessions):
    bridges = [login(sessions, pki, BRIDGE_IDENTITY) for _ in range(2)]
    for bridge in bridges:
        bridge.subscribe("$share/bridges-all/seg/v1/+/hard")
    robots = {name: login(sessions, pki, name) for name in ("dog1", "dog2")}
    sent = [f"{name}-{i}".encode() for i in range(4) for name in robots]
    for payload in sent:
        assert robots[payload.decode().split("-")[0]].publish(hard_topic(payload.decode().split("-")[0]),
                                                              payload) in ACCEPTED
    deadline = time.monotonic() + WAIT_S
    while sum(len(b.payloads()) for b in bridges) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.01)
    received = [p for b in bridges for p in b.payloads()]
    assert sorted(received) == sorted(sent)             # each frame once, to one of the bridges
    assert all(b.payloads() for b in bridges)           # and the group shares the load


# -- the real bridge and uplink ------------------------------------------------------------
def test_bridge_and_uplink_work_over_tls_with_credentials(pki, tmp_path):
    import yaml
    from seg_harness.processes import wait_until
    from seg_edge_node.uplink import MqttUplink, UplinkConfig

    broker_section = yaml.safe_load((pki.dir / "bridge-broker.yaml").read_text())["broker"]
    settings = {f"broker.{k}": v for k, v in broker_section.items()}
    settings.update({"broker.host": "localhost", "broker.port": pki.port, "refinement.regions.method": "felzenszwalb"})
    runner = BridgeRunner(tmp_path, "tls-bridge", tmp_path / "store", settings).start()
    refined = []
    uplink = MqttUplink(UplinkConfig(host="localhost", port=pki.port, robot_id="dog1", username="dog1",
                                     password_file=pki.password_file("dog1"), tls=True, ca_file=pki.ca,
                                     spool_dir=str(tmp_path / "spool")), refined.append)
    try:
        runner.wait_subscribed()
        uplink.start()
        frame = make_hard_frame("dog1", 0, h=48, w=64)
        assert uplink.submit(frame)
        wait_until(lambda: refined, 60, "the refined result over TLS")
        assert refined[0].frame_uuid == frame.frame_uuid
        assert refined[0].labels.shape == (48, 64)
    finally:
        uplink.stop()
        runner.stop()


def test_an_uplink_logged_in_as_another_robot_counts_the_refusals(pki, tmp_path):
    from seg_harness.processes import wait_until
    from seg_edge_node.uplink import MqttUplink, UplinkConfig

    uplink = MqttUplink(UplinkConfig(host="localhost", port=pki.port, robot_id="dog2", username="dog1",
                                     password_file=pki.password_file("dog1"), tls=True, ca_file=pki.ca,
                                     spool_dir=str(tmp_path / "spool")), lambda result: None)
    try:
        uplink.start()
        assert uplink.submit(make_hard_frame("dog2", 0, h=48, w=64))
        wait_until(lambda: uplink.stats()["refused_by_broker"] >= 1, 30, "the broker's refusal")
        REFUSED["uplink frames under another robot's id"] += uplink.stats()["refused_by_broker"]
        assert uplink.stats()["confirmed"] == 0 and uplink.stats()["spool_entries"] == 1
    finally:
        uplink.stop()


# -- settings that cannot work are refused before connecting --------------------------------
def test_tls_and_password_settings_are_checked(pki, tmp_path):
    from seg_edge_node.uplink import UplinkConfig

    base = dict(host="localhost", robot_id="dog1", username="dog1")
    cases = {
        "uplink.password_file: cannot read": dict(password_file=str(tmp_path / "missing")),
        "both set": dict(password="x", password_file=pki.password_file("dog1")),
        "tls is false": dict(ca_file=pki.ca),
        "no such file": dict(tls=True, ca_file=str(tmp_path / "nope.crt")),
        "without uplink.username": dict(username="", password_file=pki.password_file("dog1")),
    }
    for message, changes in cases.items():
        with pytest.raises(ValueError, match=message):
            UplinkConfig(**{**base, **changes}).validate()
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        BrokerConfig(username="cloud.bridge", password_file=str(tmp_path / "empty")).validate()
    UplinkConfig(**base, password_file=pki.password_file("dog1"), tls=True, ca_file=pki.ca).validate()


def test_dev_pki_refuses_to_overwrite_or_take_bad_ids(pki, tmp_path):
    with pytest.raises(PkiError, match="not empty"):
        generate(PkiRequest(pki.dir, ("dog9",)))
    with pytest.raises(PkiError, match="robot id"):
        generate(PkiRequest(tmp_path / "x", ("dog/1",)))
    secrets = [p for p in pki.dir.rglob("*") if p.is_file() and (p.suffix == ".key" or p.parent.name == "passwords"
                                                                    or p.name in ("passwd", "bridge-broker.yaml"))]
    assert secrets and all(p.stat().st_mode & 0o077 == 0 for p in secrets)
    assert not (pki.dir / "ca.key").exists()


def test_the_tls_launch_overlay_sets_real_parameters_of_the_right_type():
    import yaml
    from seg_edge_node.config import EdgeNodeConfig

    def flatten(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    root = Path(__file__).resolve().parent.parent
    overlay = flatten(yaml.safe_load((root / "launch" / "edge_tls_params.yaml").read_text())
                      ["/**"]["ros__parameters"])
    defaults = EdgeNodeConfig.parameter_defaults()
    assert overlay and set(overlay) <= set(defaults), set(overlay) - set(defaults)
    assert all(type(value) is type(defaults[name]) for name, value in overlay.items())
    assert overlay["uplink.tls"] and overlay["uplink.password_file"] and not overlay.get("uplink.password")
    assert overlay["uplink.username"] == overlay["uplink.robot_id"]
