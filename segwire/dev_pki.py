"""A development PKI and broker setup for the secured protocol, generated at run time.

    python -m segwire.dev_pki --out DIR --robots dog1 dog2 [--hosts broker.lan 10.0.0.5]

writes into DIR (which must not exist yet or be empty; keep it out of git):

    ca.crt                        the trust anchor: broker, robots and bridges all get it
    server.crt, server.key        the broker's certificate (SAN: localhost, 127.0.0.1, ::1, --hosts)
    clients/<id>.crt, <id>.key    a client certificate per identity (CN = the identity)
    passwords/<id>                the identity's password, one line
    passwd                        mosquitto's password file for all identities
    acl                           deploy/mosquitto/acl
    mosquitto.conf                deploy/mosquitto/mosquitto.conf with DIR's paths and the ports given
    bridge-broker.yaml            the `broker:` section of a cloud bridge config for this broker

Identities: each robot id, `cloud.bridge` and `cloud.model-publisher`. Files holding a
secret are mode 0600, readable by the user that runs the command, which is the user the
generated mosquitto.conf has the broker run as. The CA's private key is not kept: a
copied DIR cannot mint new identities, and adding a robot means generating a new set.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import getpass
import hashlib
import ipaddress
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import WireError
from .topics import validate_robot_id

BRIDGE_IDENTITY = "cloud.bridge"
PUBLISHER_IDENTITY = "cloud.model-publisher"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
# The shipped config's file locations, replaced by the output directory.
SHIPPED_PREFIX = "/etc/mosquitto/seg/"
SHIPPED_PORTS = {"8883": "port", "8884": "mtls_port"}
# mosquitto's PBKDF2-SHA512 format ($7$). The passwords are 32 random bytes, so key
# stretching adds nothing; 101 is mosquitto_passwd's own default.
PBKDF2_ITERATIONS = 101


class PkiError(ValueError):
    """Bad arguments or an output directory that cannot be used."""


@dataclass(frozen=True)
class PkiRequest:
    out: Path
    robots: tuple[str, ...]
    hosts: tuple[str, ...] = ()     # extra names and addresses the broker is reached at
    port: int = 8883                # TLS + password listener
    mtls_port: int = 8884           # TLS + client certificate listener
    bind: str = ""                  # listeners' address; empty: all interfaces
    cert_days: int = 825


@dataclass(frozen=True)
class Identity:
    name: str
    password_file: Path
    cert_file: Path
    key_file: Path


def generate(request: PkiRequest) -> dict[str, Identity]:
    """Write the whole set; returns the identities by name."""
    names = _identity_names(request.robots)
    out = request.out
    if out.exists() and any(out.iterdir()):
        raise PkiError(f"{out} is not empty; pick a new directory (an existing PKI is never overwritten)")
    for sub in ("", "clients", "passwords"):
        (out / sub).mkdir(parents=True, exist_ok=True, mode=0o700)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, request.cert_days)
    _write(out / "ca.crt", _pem(ca_cert))
    server_key = ec.generate_private_key(ec.SECP256R1())
    _write(out / "server.crt", _pem(_leaf_certificate(ca_key, ca_cert, server_key, "seg-broker",
                                                      request.cert_days, server_names=_server_names(request.hosts))))
    _write(out / "server.key", _key_pem(server_key), secret=True)

    identities: dict[str, Identity] = {}
    passwd_lines = []
    for name in names:
        identity = Identity(name, out / "passwords" / name, out / "clients" / f"{name}.crt",
                            out / "clients" / f"{name}.key")
        key = ec.generate_private_key(ec.SECP256R1())
        _write(identity.cert_file, _pem(_leaf_certificate(ca_key, ca_cert, key, name, request.cert_days)))
        _write(identity.key_file, _key_pem(key), secret=True)
        password = secrets.token_urlsafe(32)
        _write(identity.password_file, (password + "\n").encode(), secret=True)
        passwd_lines.append(f"{name}:{mosquitto_password_hash(password)}\n")
        identities[name] = identity
    _write(out / "passwd", "".join(passwd_lines).encode(), secret=True)
    _write(out / "acl", _shipped("acl").encode())
    _write(out / "mosquitto.conf", broker_config(request).encode())
    _write(out / "bridge-broker.yaml", _bridge_broker_yaml(request, identities[BRIDGE_IDENTITY]).encode(),
           secret=True)
    return identities


def mosquitto_password_hash(password: str) -> str:
    """The hash part of a mosquitto password file line (`$7$<iterations>$<salt>$<hash>`)."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def broker_config(request: PkiRequest) -> str:
    """deploy/mosquitto/mosquitto.conf pointed at request.out, with its ports and a log file there."""
    out = str(request.out.resolve()) + "/"
    ports = {"port": request.port, "mtls_port": request.mtls_port}
    lines = []
    for line in _shipped("mosquitto.conf").splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            line = f"listener {ports[SHIPPED_PORTS[words[1]]]} {request.bind}".rstrip()
        elif words[:1] == ["persistence_location"]:
            line = f"persistence_location {out}"
        elif words[:1] == ["log_dest"]:
            line = f"log_dest file {out}mosquitto.log"
        lines.append(line.replace(SHIPPED_PREFIX, out))
    # Started as root, mosquitto switches to the user "mosquitto", which could not read
    # the 0600 files here; the user who generated them can.
    lines.append(f"user {getpass.getuser()}")
    return "\n".join(lines) + "\n"


def _identity_names(robots) -> list[str]:
    if not robots:
        raise PkiError("give at least one robot id (--robots dog1 dog2 ...)")
    for robot in robots:
        try:
            validate_robot_id(robot)
        except WireError as e:
            raise PkiError(str(e)) from e
    if len(set(robots)) != len(robots):
        raise PkiError(f"robot ids repeat: {list(robots)}")
    return [*robots, BRIDGE_IDENTITY, PUBLISHER_IDENTITY]


def _shipped(name: str) -> str:
    path = SHIPPED_DIR / name
    try:
        return path.read_text()
    except OSError as e:
        raise PkiError(f"cannot read the shipped broker file {path} ({e}); run this from a checkout "
                       "of the repository") from e


def _server_names(hosts) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in ("localhost", "127.0.0.1", "::1", *hosts):
        try:
            name = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
                raise PkiError(f"--hosts {host!r} is neither an IP address nor a DNS name") from None
            name = x509.DNSName(host)
        if name not in names:
            names.append(name)
    return names


def _ca_certificate(key, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seg-dog development CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days + 1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _leaf_certificate(ca_key, ca_cert, key, common_name: str, days: int,
                      server_names: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=True,
                                            key_cert_sign=False, crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(server_names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _bridge_broker_yaml(request: PkiRequest, bridge: Identity) -> str:
    host = request.hosts[0] if request.hosts else "127.0.0.1"
    # The shared-subscription group is a secret of the bridges: see deploy/mosquitto/acl.
    section = {"broker": {
        "host": host, "port": request.port, "username": bridge.name, "password_file": str(bridge.password_file),
        "tls": True, "ca_file": str(request.out / "ca.crt"), "share_group": f"bridges-{secrets.token_hex(8)}"}}
    return yaml.safe_dump(section, sort_keys=False)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    # O_EXCL and the mode at creation: a secret is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segwire.dev_pki", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="new or empty directory, outside git")
    parser.add_argument("--robots", nargs="+", required=True, metavar="ROBOT_ID")
    parser.add_argument("--hosts", nargs="*", default=[], metavar="NAME_OR_IP",
                        help="names and addresses robots use to reach the broker (besides localhost)")
    parser.add_argument("--port", type=int, default=8883, help="TLS + password listener")
    parser.add_argument("--mtls-port", type=int, default=8884, help="TLS + client certificate listener")
    parser.add_argument("--bind", default="", help="listeners' address (default: all interfaces)")
    args = parser.parse_args(argv)
    request = PkiRequest(args.out, tuple(args.robots), tuple(args.hosts), args.port, args.mtls_port, args.bind)
    try:
        identities = generate(request)
    except (PkiError, OSError) as e:
        print(f"dev_pki: {e}", file=sys.stderr)
        return 2
    print(f"wrote a development PKI for {', '.join(identities)} to {args.out}\n"
          f"broker:  mosquitto -c {args.out / 'mosquitto.conf'}\n"
          f"bridge:  merge {args.out / 'bridge-broker.yaml'} into the bridge config\n"
          f"robots:  uplink.tls true, uplink.ca_file ca.crt, uplink.username <robot id>, "
          f"uplink.password_file passwords/<robot id>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
