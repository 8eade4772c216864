"""MQTT 5 clients as both sides of the protocol use them: persistent sessions, optional
credentials and TLS, automatic reconnects. One place, so robot and bridge agree."""
from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def make_client(client_id: str, *, username: str = "", password: str = "", password_file: str = "",
                tls: bool = False, ca_file: str = "", cert_file: str = "", key_file: str = "",
                manual_ack: bool = False) -> mqtt.Client:
    """A paho client; with tls, the broker's certificate and host name are verified against
    ca_file (the system's CAs when empty). password_file: a file whose first line is the
    password, so that the password stays out of parameter dumps and process listings."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if password_file:
        if password:
            raise ValueError("set the MQTT password or password_file, not both")
        password = read_password_file(password_file)
    if username:
        client.username_pw_set(username, password or None)
    if tls:
        client.tls_set(ca_certs=_expand(ca_file), certfile=_expand(cert_file), keyfile=_expand(key_file))
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


def check_client_settings(settings, where: str) -> None:
    """Refuse credential and TLS settings that cannot work, naming the setting.

    `settings` has the fields username, password, password_file, tls, ca_file, cert_file
    and key_file (UplinkConfig, BrokerConfig); `where` prefixes their names in messages."""
    if settings.password and settings.password_file:
        raise ValueError(f"{where}.password and {where}.password_file are both set: keep password_file")
    if (settings.password or settings.password_file) and not settings.username:
        raise ValueError(f"{where}.password(_file) is set without {where}.username")
    if settings.password_file:
        try:
            read_password_file(settings.password_file)
        except ValueError as e:
            raise ValueError(f"{where}.password_file: {e}") from e
    files = {name: getattr(settings, name) for name in ("ca_file", "cert_file", "key_file")}
    given = [name for name, value in files.items() if value]
    if given and not settings.tls:
        raise ValueError(f"{where}.{given[0]} is set but {where}.tls is false: set {where}.tls to true")
    if files["key_file"] and not files["cert_file"]:
        raise ValueError(f"{where}.key_file is set without {where}.cert_file")
    for name in given:
        if not Path(files[name]).expanduser().is_file():
            raise ValueError(f"{where}.{name}: no such file {files[name]!r}")


def _expand(path: str) -> str | None:
    return str(Path(path).expanduser()) if path else None


def connect_persistent(client: mqtt.Client, host: str, port: int, keepalive_s: int, session_expiry_s: int,
                       receive_maximum: int | None = None) -> None:
    """Connect in the background and keep reconnecting. clean_start=False on every connect,
    so what the broker queued for this client while it was away is delivered."""
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry_s
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    client.connect_async(host, port, keepalive=keepalive_s, clean_start=False, properties=props)
    client.loop_start()
