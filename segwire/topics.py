"""MQTT topic names of the segmentation protocol.

Tree (``<robot_id>``: see :func:`validate_robot_id`)::

    seg/v1/<robot_id>/hard      robot -> cloud  hard frames (binary, payload.encode_hard_frame)
    seg/v1/<robot_id>/refined   cloud -> robot  refined labels (binary, payload.encode_refined)
    seg/v1/<robot_id>/status    robot -> all    RobotStatus JSON, retained

Suggested delivery: QoS 1 for all three. ``status`` is published retained, and
the robot registers a retained last will on it at connect time carrying an
``encode_status`` payload with ``state="offline"`` (stamped with the connect
time), so the topic holds exactly one payload format and the newest state
survives a crash. Cloud bridges share the hard-frame load through the shared
subscription :func:`shared_hard_subscription`.

The version in the root follows ``PROTOCOL_VERSION``: a v2 payload goes to a
v2 tree, so old and new robots and bridges can share a broker.

Model push (signed model files, cloud -> robot; segwire.model_manifest for the
manifest, segwire.model_transfer for the messages)::

    seg/v1/models/<fleet>/manifest   cloud -> robots  signed manifest JSON, retained
    seg/v1/models/<fleet>/command    cloud -> robots  signed rollback command JSON, retained
                                                      (segwire.model_command)
    seg/v1/<robot_id>/model/request  robot -> cloud   "send chunks [...] of version V" JSON
    seg/v1/<robot_id>/model/chunk    cloud -> robot   one binary chunk of a model file
    seg/v1/<robot_id>/model/status   robot -> all     TransferStatus JSON, retained

The manifest is retained so a robot that connects later still gets the latest
model; chunks go to one robot at its own request, so a fleet does not receive
every robot's resumed transfer. The command is retained for the same reason: a robot
that was offline when a version was withdrawn still rolls back when it is back. ``models`` is not a valid robot id, which keeps
the fleet sub-tree apart from the robots'. Per-robot sub-topics other than the
ones above are reserved.
"""

from __future__ import annotations

import re

from .errors import WireError

PROTOCOL_VERSION = 1
TOPIC_ROOT = f"seg/v{PROTOCOL_VERSION}"
ALL_HARD = f"{TOPIC_ROOT}/+/hard"
ALL_MODEL_REQUESTS = f"{TOPIC_ROOT}/+/model/request"

_CHANNELS = ("hard", "refined", "status")
_MODEL_CHANNELS = ("request", "chunk", "status")
_RESERVED_IDS = frozenset({"models"})
# No '/', '+', '#' or '$' (topic level, wildcards, broker-internal topics) and
# nothing a shell, a file name or a log line would need to quote.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def validate_robot_id(robot_id: object) -> str:
    """Return ``robot_id`` if it is 1-64 characters of ``[A-Za-z0-9_-]``, else raise WireError."""
    _check_name(robot_id, "robot id")
    if robot_id in _RESERVED_IDS:
        raise WireError(f"robot id {robot_id!r} is reserved for a topic sub-tree")
    return robot_id


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str):
        raise WireError(f"{what} must be a string, got {type(name).__name__}")
    if not _ID.fullmatch(name):
        raise WireError(
            f"{what} {name!r} must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-' "
            "(no MQTT separators or wildcards)"
        )


def hard_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/hard"


def refined_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/refined"


def status_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/status"


def shared_hard_subscription(group: str) -> str:
    """Subscription that spreads every robot's hard frames over the bridges of ``group``."""
    _check_name(group, "shared subscription group")
    return f"$share/{group}/{ALL_HARD}"


def robot_id_from_topic(topic: object) -> str:
    """The robot id of a hard, refined or status topic; WireError for any other topic."""
    if not isinstance(topic, str):
        raise WireError(f"topic must be a string, got {type(topic).__name__}")
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT or parts[3] not in _CHANNELS:
        raise WireError(
            f"topic {topic!r} is not {TOPIC_ROOT}/<robot_id>/{{{','.join(_CHANNELS)}}}"
        )
    return validate_robot_id(parts[2])


def models_manifest_topic(fleet: str = "default") -> str:
    """Where the latest signed manifest of ``fleet`` is retained."""
    _check_name(fleet, "fleet")
    return f"{TOPIC_ROOT}/models/{fleet}/manifest"


def fleet_command_topic(fleet: str = "default") -> str:
    """Where the latest signed rollback command to ``fleet`` is retained."""
    _check_name(fleet, "fleet")
    return f"{TOPIC_ROOT}/models/{fleet}/command"


def model_request_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/model/request"


def model_chunk_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/model/chunk"


def model_status_topic(robot_id: str) -> str:
    return f"{TOPIC_ROOT}/{validate_robot_id(robot_id)}/model/status"


def robot_id_from_model_topic(topic: object) -> str:
    """The robot id of a model request, chunk or status topic; WireError for any other topic."""
    if not isinstance(topic, str):
        raise WireError(f"topic must be a string, got {type(topic).__name__}")
    parts = topic.split("/")
    if (len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[3] != "model"
            or parts[4] not in _MODEL_CHANNELS):
        raise WireError(
            f"topic {topic!r} is not {TOPIC_ROOT}/<robot_id>/model/{{{','.join(_MODEL_CHANNELS)}}}"
        )
    return validate_robot_id(parts[2])
