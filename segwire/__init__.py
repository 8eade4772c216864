"""MQTT wire protocol between the robot's segmentation node and the cloud bridge.

Topics are in ``segwire.topics``, payloads (and their byte-level specification)
in ``segwire.payload``. Both sides import this package so the protocol is
defined once.

Model push: chunk, request and status messages in ``segwire.model_transfer``
(exported here); signed manifests in ``segwire.model_manifest`` and signing keys
in ``segwire.model_keys``, imported by name because they need ``cryptography``,
which a robot image without model push need not install.
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
from .model_transfer import (
    CHUNK_MAGIC,
    TRANSFER_STATES,
    ModelChunk,
    ModelLimits,
    ModelRequest,
    TransferStatus,
    TransferError,
    decode_chunk,
    decode_transfer_status,
    decode_request,
    encode_chunk,
    encode_transfer_status,
    encode_request,
)
from .mqtt_client import MqttConnection, connect_persistent, make_client
from .topics import (
    ALL_HARD,
    ALL_MODEL_REQUESTS,
    PROTOCOL_VERSION,
    TOPIC_ROOT,
    fleet_command_topic,
    hard_topic,
    model_chunk_topic,
    model_request_topic,
    model_status_topic,
    models_manifest_topic,
    refined_topic,
    robot_id_from_model_topic,
    robot_id_from_topic,
    shared_hard_subscription,
    status_topic,
    validate_robot_id,
)

__all__ = [
    "ALL_HARD",
    "ALL_MODEL_REQUESTS",
    "CHUNK_MAGIC",
    "MAGIC",
    "TRANSFER_STATES",
    "PROTOCOL_VERSION",
    "STATES",
    "TOPIC_ROOT",
    "Codec",
    "HardFrame",
    "Kind",
    "ModelChunk",
    "ModelLimits",
    "ModelRequest",
    "TransferStatus",
    "RefinedResult",
    "RobotStatus",
    "Section",
    "TransferError",
    "WireError",
    "WireLimits",
    "connect_persistent",
    "decode_chunk",
    "decode_hard_frame",
    "decode_transfer_status",
    "decode_refined",
    "decode_request",
    "decode_status",
    "encode_chunk",
    "encode_hard_frame",
    "encode_transfer_status",
    "encode_refined",
    "encode_request",
    "encode_status",
    "fleet_command_topic",
    "hard_topic",
    "make_client",
    "MqttConnection",
    "model_chunk_topic",
    "model_request_topic",
    "model_status_topic",
    "models_manifest_topic",
    "refined_topic",
    "robot_id_from_model_topic",
    "robot_id_from_topic",
    "shared_hard_subscription",
    "status_topic",
    "validate_robot_id",
]
