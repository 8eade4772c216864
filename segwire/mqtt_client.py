"""MQTT 5 clients as both sides of the protocol use them: persistent sessions, optional
credentials and TLS, automatic reconnects. One place, so robot and bridge agree.

``MqttConnection`` is the one definition of how a client reaches the broker: the robot's
uplink settings (seg_edge_node.uplink.UplinkConfig) and the cloud's broker settings
(cloud_bridge.config.BrokerConfig, used by the bridge, the model publisher and the
rollback tool) extend it, and ``make_client`` / ``connect_persistent`` take it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from seg_core import ConfigError


@dataclass(frozen=True)
class MqttConnection:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""            # stable and unique per client: the broker keeps its session by it
    username: str = ""
    password: str = ""             # prefer password_file: a parameter or config shows in dumps and listings
    password_file: str = ""        # first line is the password
    tls: bool = False              # verifies the broker's certificate and host name against ca_file
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 10
    session_expiry_s: int = 7 * 24 * 3600   # the broker keeps what was queued for us this long

    def check(self, where: str) -> None:
        """ConfigError for settings that cannot work, naming them as `<where>.<field>`."""
        if not 0 < self.port < 65536:
            raise ConfigError(f"{where}.port={self.port}: use 1..65535")
        if self.keepalive_s < 1:
            raise ConfigError(f"{where}.keepalive_s={self.keepalive_s}: use 1 or more")
        if self.password and self.password_file:
            raise ConfigError(f"{where}.password and {where}.password_file are both set: keep password_file")
        if (self.password or self.password_file) and not self.username:
            raise ConfigError(f"{where}.password(_file) is set without {where}.username")
        if self.password_file:
            try:
                read_password_file(self.password_file)
            except ValueError as e:
                raise ConfigError(f"{where}.password_file: {e}") from e
        files = {name: getattr(self, name) for name in ("ca_file", "cert_file", "key_file")}
        given = [name for name, value in files.items() if value]
        if given and not self.tls:
            raise ConfigError(f"{where}.{given[0]} is set but {where}.tls is false: set {where}.tls to true")
        if files["key_file"] and not files["cert_file"]:
            raise ConfigError(f"{where}.key_file is set without {where}.cert_file")
        for name in given:
            if not Path(files[name]).expanduser().is_file():
                raise ConfigError(f"{where}.{name}: no such file {files[name]!r}")


def make_client(client_id: str, connection: MqttConnection = MqttConnection(), *,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho client with `connection`'s credentials and TLS; with tls, the broker's
    certificate and host name are verified against ca_file (the system's CAs when empty).
    A password_file is read here, so the password stays out of parameter dumps."""
    c = connection
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    password = c.password
    if c.password_file:
        if password:
            raise ValueError("set the MQTT password or password_file, not both")
        password = read_password_file(c.password_file)
    if c.username:
        client.username_pw_set(c.username, password or None)
    if c.tls:
        client.tls_set(ca_certs=_expand(c.ca_file), certfile=_expand(c.cert_file), keyfile=_expand(c.key_file))
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


def read_password_file(path: str) -> str:
    """The first line of `path`, without its line end; ValueError saying what to fix."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the MQTT password file {file}: {e}") from e
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ValueError(f"the MQTT password file {file} is empty; write the password on its first line")
    return password


def _expand(path: str) -> str | None:
    return str(Path(path).expanduser()) if path else None


def connect_persistent(client: mqtt.Client, connection: MqttConnection, receive_maximum: int | None = None) -> None:
    """Connect in the background and keep reconnecting. clean_start=False on every connect,
    so what the broker queued for this client while it was away is delivered."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = connection.session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    client.connect_async(connection.host, connection.port, keepalive=connection.keepalive_s, clean_start=False,
                         properties=props)
    client.loop_start()
