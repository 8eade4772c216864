"""Signed rollback commands from the cloud to a fleet's robots (no MQTT here).

A rollback command withdraws the model versions ``target_version + 1`` through
``withdrawn_through`` and sends every robot serving one of them back to
``target_version``, a version it keeps on disk (0 = the model it was installed with).
It is signed with the same Ed25519 keys as the model manifests (segwire.model_manifest)
and checked by the robot against the same trusted key set, and published retained on
``seg/v1/models/<fleet>/command``, so a robot that was offline gets it when it is back.

Wire form: one UTF-8 JSON object with exactly these keys::

    command            str    "rollback"
    fleet              str    the fleet it is for, 1-64 of [A-Za-z0-9_-]
    sequence           int    1..2**63-1; grows with every command to the fleet
    target_version     int    0..2**32-1, the version to go back to
    withdrawn_through  int    > target_version: the highest withdrawn version
    robots             [str]  robot ids it is for; empty: the whole fleet
    issued_at          str    ISO 8601 time with its UTC offset
    reason             str    for people
    key_id             str    which signing key
    signature          str    base64 Ed25519 signature over the canonical bytes

The canonical bytes are as for manifests (segwire.signed_json: every key but ``signature``, sorted, compact).
A robot acts on a command only if its sequence is above the last one it acted on, so a
recorded command cannot be replayed later to undo a newer decision; the same command
delivered again (the retained copy, after a reconnect) is recognised by its signature.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import WireError
from .model_manifest import KEY_ID
from .signed_json import SignedRecordError, dump_json, sign_record, verify_signed_json
from .topics import _check_name, validate_robot_id

COMMANDS = ("rollback",)
MAX_COMMAND_BYTES = 64 * 1024      # checked before the JSON is parsed
MAX_ROBOTS = 1000
_U32_MAX, _I63_MAX = 2**32 - 1, 2**63 - 1


class CommandError(SignedRecordError):
    """A command that must not be acted on. ``reason``: oversized, malformed,
    unknown_key or bad_signature (short codes for counters and status)."""


@dataclass(frozen=True)
class RollbackCommand:
    fleet: str
    sequence: int
    target_version: int
    withdrawn_through: int
    robots: list[str] = field(default_factory=list)
    issued_at: str = ""
    reason: str = ""
    command: str = "rollback"
    key_id: str = ""       # set by sign_command
    signature: str = ""    # set by sign_command

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise CommandError("malformed", f"command must be one of {COMMANDS}, got {self.command!r:.40}")
        try:
            _check_name(self.fleet, "fleet")
            if not isinstance(self.robots, list) or len(self.robots) > MAX_ROBOTS:
                raise CommandError("malformed", f"robots must be a list of at most {MAX_ROBOTS} robot ids")
            for robot_id in self.robots:
                validate_robot_id(robot_id)
        except CommandError:
            raise
        except WireError as e:
            raise CommandError("malformed", str(e)) from None
        _check_int("sequence", self.sequence, 1, _I63_MAX)
        _check_int("target_version", self.target_version, 0, _U32_MAX)
        _check_int("withdrawn_through", self.withdrawn_through, 1, _U32_MAX)
        if self.withdrawn_through <= self.target_version:
            raise CommandError("malformed", f"withdrawn_through {self.withdrawn_through} is not above "
                                            f"target_version {self.target_version}: nothing is withdrawn")
        for name in ("issued_at", "reason", "key_id", "signature"):
            if not isinstance(getattr(self, name), str):
                raise CommandError("malformed", f"{name} must be a string")
        if self.issued_at:
            try:
                stamp = datetime.fromisoformat(self.issued_at)
            except ValueError:
                raise CommandError("malformed", f"issued_at {self.issued_at!r:.60} is not an ISO 8601 time") from None
            if stamp.tzinfo is None:
                raise CommandError("malformed", f"issued_at {self.issued_at!r} lacks a UTC offset")
        if self.key_id and not KEY_ID.fullmatch(self.key_id):
            raise CommandError("malformed", f"key_id {self.key_id!r:.80} must be 1-64 of [A-Za-z0-9_-]")

    def addresses(self, robot_id: str) -> bool:
        return not self.robots or robot_id in self.robots

    def withdraws(self, version: int) -> bool:
        return self.target_version < version <= self.withdrawn_through

    def to_bytes(self) -> bytes:
        return dump_json(dataclasses.asdict(self))


def rollback_command(fleet: str, sequence: int, target_version: int, withdrawn_through: int,
                     robots: list[str] | tuple[str, ...] = (), reason: str = "") -> RollbackCommand:
    """An unsigned command stamped with the current time."""
    return RollbackCommand(fleet=fleet, sequence=sequence, target_version=target_version,
                           withdrawn_through=withdrawn_through, robots=list(robots),
                           issued_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), reason=reason)


def sign_command(command: RollbackCommand, private_key: Ed25519PrivateKey, key_id: str) -> RollbackCommand:
    return sign_record(command, private_key, key_id)


def verify_command(data: bytes, trusted_keys: dict[str, Ed25519PublicKey]) -> RollbackCommand:
    """Parse and authenticate a command received from anywhere; CommandError otherwise."""
    return verify_signed_json(data, trusted_keys, record_type=RollbackCommand, noun="command",
                              max_bytes=MAX_COMMAND_BYTES, error=CommandError)


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError("malformed", f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise CommandError("malformed", f"{name} = {value} is outside {lo}..{hi}")

