"""Send a fleet back to an earlier model version: a signed rollback command, retained on
``seg/v1/models/<fleet>/command`` (format and robot-side rules: segwire.model_command).

    python -m cloud_bridge.model_rollback --to 6 --signing-key keys/fleet-2026.key \\
        --model-dir /srv/models [--config cloud_bridge/bridge.yaml] [--fleet default] \\
        [--robot dog-01 ...] [--reason "v7 misses kerbs at night"]

It withdraws every version above the target up to the latest the publisher holds in
``--model-dir``; robots serving one of them go back to the target (a version they keep),
and refuse the withdrawn ones from then on. The next version published (above the
withdrawn ones) is taken as usual. Sequence numbers are kept in
``<model-dir>/rollback-command.json`` and grow with every command, so robots refuse an
old command presented again.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from durable_files import makedirs_durable, write_atomic
from segwire import fleet_command_topic, make_client
from segwire.model_command import CommandError, RollbackCommand, rollback_command, sign_command, verify_command

from .config import BrokerConfig, ConfigError, load_bridge_config

log = logging.getLogger(__name__)

STATE_FILE = "rollback-command.json"
MANIFEST_FILE = "manifest.json"    # the publisher's layout (model_push)


class RollbackError(ValueError):
    """A rollback that cannot be issued (unknown target, nothing to withdraw, no broker)."""


def published_versions(model_dir: str | Path) -> list[int]:
    """The versions the publisher holds complete (a manifest marks a complete version)."""
    model_dir = Path(model_dir)
    return sorted(int(p.parent.name) for p in model_dir.glob(f"*/{MANIFEST_FILE}") if p.parent.name.isdigit())


def next_command(model_dir: str | Path, fleet: str, target: int, robots=(), reason: str = "") -> RollbackCommand:
    """The unsigned command withdrawing every published version above `target`."""
    versions = published_versions(model_dir)
    if target != 0 and target not in versions:
        raise RollbackError(f"version {target} was never published from {model_dir} (published: "
                            f"{versions or 'none'}; 0 = the model the robots were installed with)")
    latest = max(versions, default=0)
    if latest <= target:
        raise RollbackError(f"nothing to withdraw: the latest published version is {latest}, the target {target}")
    last = _last_issued(model_dir)
    return rollback_command(fleet, last.get("sequence", 0) + 1, target, latest, robots, reason)


def _last_issued(model_dir: str | Path) -> dict:
    path = Path(model_dir) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        # Guessing a sequence could reuse one the robots already acted on: stop instead.
        raise RollbackError(f"{path} is unreadable ({e}); fix it or give its last sequence back by hand") from e


def issue_rollback(broker: BrokerConfig, model_dir: str | Path, private_key: Ed25519PrivateKey, key_id: str,
                   fleet: str, target: int, robots=(), reason: str = "", timeout_s: float = 30.0) -> RollbackCommand:
    """Sign and publish (retained, QoS 1) a rollback to `target`; returns once the broker has it."""
    command = sign_command(next_command(model_dir, fleet, target, robots, reason), private_key, key_id)
    # Checked as a robot checks it (a long --reason or robot list can pass the size limit):
    # a command every robot refuses would still replace the retained one they act on.
    try:
        verify_command(command.to_bytes(), {key_id: private_key.public_key()})
    except CommandError as e:
        raise RollbackError(f"robots would refuse this command: {e}") from e
    # Recorded before sending: a crash after the send must not hand out its sequence again.
    makedirs_durable(Path(model_dir))
    write_atomic(Path(model_dir) / STATE_FILE, (json.dumps(dataclasses.asdict(command), indent=2) + "\n").encode())
    publish_retained(broker, fleet_command_topic(fleet), command.to_bytes(), timeout_s)
    log.info("rollback command %d: fleet %r back to version %d, versions %d..%d withdrawn%s", command.sequence,
             fleet, target, target + 1, command.withdrawn_through,
             f" (robots {', '.join(command.robots)})" if command.robots else "")
    return command


def publish_retained(broker: BrokerConfig, topic: str, payload: bytes, timeout_s: float = 30.0) -> None:
    client = make_client(f"model-rollback-{threading.get_native_id()}", broker)
    connected = threading.Event()
    client.on_connect = lambda c, u, flags, rc, props: connected.set() if not rc.is_failure else None
    try:
        client.connect(broker.host, broker.port, keepalive=broker.keepalive_s)
    except OSError as e:
        raise RollbackError(f"cannot reach the broker at {broker.host}:{broker.port}: {e}") from e
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise RollbackError(f"the broker at {broker.host}:{broker.port} did not accept the connection "
                                f"in {timeout_s:g}s")
        info = client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise RollbackError(f"the broker did not acknowledge the command in {timeout_s:g}s")
    finally:
        client.disconnect()
        client.loop_stop()


def main(argv=None) -> int:
    from segwire.model_keys import KeyFileError, load_private_key

    ap = argparse.ArgumentParser(prog="python -m cloud_bridge.model_rollback",
                                 description="Send the fleet back to an earlier model version (signed command).")
    ap.add_argument("--to", type=int, required=True, dest="target",
                    help="the version to go back to (0 = the model the robots were installed with)")
    ap.add_argument("--signing-key", type=Path, required=True, help="the fleet's <key_id>.key")
    ap.add_argument("--key-id", help="default: the key file's name without .key")
    ap.add_argument("--model-dir", type=Path, required=True, help="the publisher's model directory")
    ap.add_argument("--config", type=Path, help="bridge YAML: its broker section (default: 127.0.0.1:1883)")
    ap.add_argument("--fleet", default="default")
    ap.add_argument("--robot", action="append", default=[], help="only this robot (repeatable); default: all")
    ap.add_argument("--reason", default="", help="for people: why")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        broker = dataclasses.replace(load_bridge_config(args.config).broker, client_id="")
        key = load_private_key(args.signing_key)
        key_id = args.key_id or args.signing_key.name.removesuffix(".key")
        command = issue_rollback(broker, args.model_dir, key, key_id, args.fleet, args.target, args.robot,
                                 args.reason)
    except (ConfigError, KeyFileError, RollbackError, CommandError) as e:
        print(f"model_rollback: {e}", file=sys.stderr)
        return 2
    print(f"rollback command {command.sequence} sent to fleet {args.fleet!r}: back to version "
          f"{command.target_version}, versions {command.target_version + 1}..{command.withdrawn_through} withdrawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
