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

The canonical bytes are as for manifests (every key but ``signature``, sorted, compact).
A robot acts on a command only if its sequence is above the last one it acted on, so a
recorded command cannot be replayed later to undo a newer decision; the same command
delivered again (the retained copy, after a reconnect) is recognised by its signature.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import WireError
from .model_manifest import KEY_ID
from .payload import _load_json
from .topics import _check_name, validate_robot_id

COMMANDS = ("rollback",)
MAX_COMMAND_BYTES = 64 * 1024      # checked before the JSON is parsed
MAX_ROBOTS = 1000
_U32_MAX, _I63_MAX = 2**32 - 1, 2**63 - 1


class CommandError(WireError):
    """A command that must not be acted on. ``reason``: oversized, malformed,
    unknown_key or bad_signature (short codes for counters and status)."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


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
        return _dump(dataclasses.asdict(self))


def rollback_command(fleet: str, sequence: int, target_version: int, withdrawn_through: int,
                     robots: list[str] | tuple[str, ...] = (), reason: str = "") -> RollbackCommand:
    """An unsigned command stamped with the current time."""
    return RollbackCommand(fleet=fleet, sequence=sequence, target_version=target_version,
                           withdrawn_through=withdrawn_through, robots=list(robots),
                           issued_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), reason=reason)


def _canonical(command: RollbackCommand) -> bytes:
    fields = dataclasses.asdict(command)
    del fields["signature"]
    return _dump(fields)


def sign_command(command: RollbackCommand, private_key: Ed25519PrivateKey, key_id: str) -> RollbackCommand:
    unsigned = dataclasses.replace(command, key_id=key_id, signature="")
    signature = private_key.sign(_canonical(unsigned))
    return dataclasses.replace(unsigned, signature=base64.b64encode(signature).decode("ascii"))


def verify_command(data: bytes, trusted_keys: dict[str, Ed25519PublicKey]) -> RollbackCommand:
    """Parse and authenticate a command received from anywhere; CommandError otherwise."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CommandError("malformed", f"command must be bytes, got {type(data).__name__}")
    if len(data) > MAX_COMMAND_BYTES:
        raise CommandError("oversized", f"command is {len(data)} bytes, above the limit {MAX_COMMAND_BYTES}")
    try:
        obj = _load_json(bytes(data), "command")
    except WireError as e:
        raise CommandError("malformed", str(e)) from None
    names = {f.name for f in dataclasses.fields(RollbackCommand)}
    # Every key is required and no other is allowed: all accepted bytes are signed.
    if set(obj) != names:
        missing, unknown = sorted(names - set(obj)), sorted(set(obj) - names)
        raise CommandError("malformed", "command " + "; ".join(
            part for part in (missing and f"lacks {', '.join(missing)}",
                              unknown and f"has unknown key(s) {', '.join(unknown)}") if part))
    command = RollbackCommand(**obj)
    if not command.key_id:
        raise CommandError("malformed", "command is not signed (empty key_id)")
    public_key = trusted_keys.get(command.key_id)
    if public_key is None:
        raise CommandError("unknown_key", f"signed with key {command.key_id!r}, which this robot does not trust "
                                          f"(trusted: {', '.join(sorted(trusted_keys)) or 'none'})")
    try:
        public_key.verify(base64.b64decode(command.signature, validate=True), _canonical(command))
    except (binascii.Error, ValueError):
        raise CommandError("bad_signature", "signature is not base64") from None
    except InvalidSignature:
        raise CommandError("bad_signature", f"the signature does not verify under key {command.key_id!r}: "
                                            "the command was altered or signed by another key") from None
    return command


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError("malformed", f"{name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise CommandError("malformed", f"{name} = {value} is outside {lo}..{hi}")


def _dump(obj: dict) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
