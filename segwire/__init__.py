"""MQTT wire protocol between the robot's segmentation node and the cloud bridge.

Topics are in ``segwire.topics``, payloads (and their byte-level specification)
in ``segwire.payload``. Both sides import this package so the protocol is
defined once.
"""

from .errors import WireError
from .images import Codec
from .payload import (
    MAGIC,
    STATES,
    HardFrame,
    Kind,
    RefinedResult,
    RobotStatus,
    Section,
    WireLimits,
    decode_hard_frame,
    decode_refined,
    decode_status,
    encode_hard_frame,
    encode_refined,
    encode_status,
)
from .mqtt_client import connect_persistent, make_client
from .topics import (
    ALL_HARD,
    PROTOCOL_VERSION,
    TOPIC_ROOT,
    hard_topic,
    refined_topic,
    robot_id_from_topic,
    shared_hard_subscription,
    status_topic,
    validate_robot_id,
)

__all__ = [
    "ALL_HARD",
    "MAGIC",
    "PROTOCOL_VERSION",
    "STATES",
    "TOPIC_ROOT",
    "Codec",
    "HardFrame",
    "Kind",
    "RefinedResult",
    "RobotStatus",
    "Section",
    "WireError",
    "WireLimits",
    "connect_persistent",
    "decode_hard_frame",
    "decode_refined",
    "decode_status",
    "encode_hard_frame",
    "encode_refined",
    "encode_status",
    "hard_topic",
    "make_client",
    "refined_topic",
    "robot_id_from_topic",
    "shared_hard_subscription",
    "status_topic",
    "validate_robot_id",
]
