"""Ed25519 keys that sign model manifests: generate, load, trust.

    python -m segwire.model_keys generate --out DIR --key-id cloud-2026a

writes ``DIR/<key_id>.key`` (the private key, PEM PKCS8, mode 0600: it stays on the
publishing host) and ``DIR/<key_id>.pub`` (the public key, PEM: it goes to every
robot's trusted-key directory). The file name is the key id that manifests carry.
Rotation: see segwire.model_manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from durable_files import makedirs_durable, write_atomic

from .model_manifest import KEY_ID

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


class KeyFileError(ValueError):
    """A key file that is missing, unreadable, of the wrong kind or too widely readable."""


def generate_keypair(directory: str | os.PathLike, key_id: str) -> tuple[Path, Path]:
    """Create ``<key_id>.key`` (0600) and ``<key_id>.pub`` in ``directory``; never overwrites."""
    _check_key_id(key_id)
    directory = Path(directory)
    private_path = directory / f"{key_id}{PRIVATE_SUFFIX}"
    public_path = directory / f"{key_id}{PUBLIC_SUFFIX}"
    for path in (private_path, public_path):
        if path.exists():  # replacing a signing key would orphan every robot that trusts it
            raise FileExistsError(f"{path} exists; pick another key id")
    makedirs_durable(directory)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    # The mode is set when the temp file is created, so the key is never readable by others.
    write_atomic(private_path, private_pem, mode=0o600)
    write_atomic(public_path, public_pem, mode=0o644)
    return private_path, public_path


def load_private_key(path: str | os.PathLike) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read private key {path}: {e}") from e
    if os.name == "posix" and mode & 0o077:
        raise KeyFileError(f"private key {path} is readable by group or others (mode {mode & 0o777:o}); "
                           f"chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:  # TypeError: encrypted key
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike) -> Ed25519PublicKey:
    path = Path(path)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as e:
        raise KeyFileError(f"cannot read public key {path}: {e}") from e
    except ValueError as e:
        raise KeyFileError(f"{path} is not a PEM public key: {e}") from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 public key")
    return key


def load_trusted_keys(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> dict[str, Ed25519PublicKey]:
    """The keys a robot accepts manifests from, by key id: every ``*.pub`` in a directory,
    or the given ``<key_id>.pub`` files (a mix of both is fine)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    files: list[Path] = []
    for source in sources:
        files += sorted(source.glob(f"*{PUBLIC_SUFFIX}")) if source.is_dir() else [source]
    keys: dict[str, Ed25519PublicKey] = {}
    for path in files:
        key_id = path.name.removesuffix(PUBLIC_SUFFIX)
        if path.name == key_id or not KEY_ID.fullmatch(key_id):
            raise KeyFileError(f"{path}: a trusted key file is named <key_id>{PUBLIC_SUFFIX}, "
                               f"key id 1-64 of [A-Za-z0-9_-]")
        if key_id in keys:
            raise KeyFileError(f"key id {key_id!r} is given twice ({path})")
        keys[key_id] = load_public_key(path)
    if not keys:  # a robot trusting nothing would reject every model: a setup error
        raise KeyFileError(f"no trusted public keys (*{PUBLIC_SUFFIX}) in {', '.join(map(str, sources))}")
    return keys


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw public key, for people comparing keys across machines."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"key id {key_id!r} must be 1-64 of [A-Za-z0-9_-] (it is a file name)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segwire.model_keys", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="create <key_id>.key (0600) and <key_id>.pub")
    generate.add_argument("--out", required=True, help="directory for the two files")
    generate.add_argument("--key-id", required=True, help="1-64 of [A-Za-z0-9_-]; manifests name it")
    args = parser.parse_args(argv)
    try:
        private_path, public_path = generate_keypair(args.out, args.key_id)
    except (KeyFileError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"private key: {private_path} (keep on the publishing host)")
    print(f"public key:  {public_path} (add to every robot's trusted keys)")
    print(f"fingerprint: sha256:{fingerprint(load_public_key(public_path))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
