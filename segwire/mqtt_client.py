"""MQTT 5 clients as both sides of the protocol use them: persistent sessions, optional
credentials and TLS, automatic reconnects. One place, so robot and bridge agree."""
from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def make_client(client_id: str, *, username: str = "", password: str = "", tls: bool = False,
                ca_file: str = "", cert_file: str = "", key_file: str = "",
                manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if username:
        client.username_pw_set(username, password or None)
    if tls:
        client.tls_set(ca_certs=ca_file or None, certfile=cert_file or None, keyfile=key_file or None)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client


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
