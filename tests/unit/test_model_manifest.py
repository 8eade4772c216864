"""segwire.model_manifest and segwire.model_keys: signing, every rejection, canonical
bytes, key rotation, key files. Pure (no broker), a few seconds.

    .venv/bin/python -m pytest tests/unit/test_model_manifest.py -q
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from segwire import ModelLimits, WireError
from segwire.model_keys import (KeyFileError, generate_keypair, load_private_key, load_trusted_keys, main)
from segwire.model_manifest import ManifestError, ModelManifest, build_manifest, sign_manifest, verify_manifest
from segwire.signed_json import canonical_bytes

SPEC = {"num_classes": 30, "input_height": 480, "input_width": 640, "use_depth": True}
LIMITS = ModelLimits(min_chunk_size=1024)
H = "ab" * 32  # a well-formed digest


@pytest.fixture(scope="module")
def key_a():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def key_b():
    return Ed25519PrivateKey.generate()


def unsigned(**changes) -> ModelManifest:
    fields = dict(version=3, model_sha256=H, size=2500, chunk_size=1024, chunk_sha256=[H, H, H], format="onnx",
                  created_at="2026-11-21T10:00:00+00:00", spec=dict(SPEC), base_version=2, notes="Hund 🐕")
    fields.update(changes)
    return ModelManifest(**fields)


def signed_bytes(key, key_id="cloud-a", **changes) -> bytes:
    return sign_manifest(unsigned(**changes), key, key_id).to_bytes()


def verify(data: bytes, keys: dict, limits: ModelLimits = LIMITS) -> ModelManifest:
    return verify_manifest(data, keys, limits)


def rejected(data: bytes, keys: dict, reason: str, limits: ModelLimits = LIMITS) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        verify(data, keys, limits)
    assert info.value.reason == reason, info.value
    assert isinstance(info.value, WireError)
    return info.value


# --- round trip and canonical form -------------------------------------------------


def test_build_sign_verify_round_trip(tmp_path, key_a):
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(10_000))
    manifest = build_manifest(model, 7, SPEC, chunk_size=4096, base_version=6, notes="week 46")
    assert (manifest.size, manifest.chunk_count, manifest.chunk_length(2)) == (10_000, 3, 10_000 - 8192)
    signed = sign_manifest(manifest, key_a, "cloud-a")
    assert signed.key_id == "cloud-a" and len(base64.b64decode(signed.signature)) == 64
    assert verify(signed.to_bytes(), {"cloud-a": key_a.public_key()}) == signed


def test_canonical_bytes_are_sorted_compact_utf8_without_signature(key_a):
    manifest = sign_manifest(unsigned(chunk_sha256=[H]), key_a, "cloud-a")
    expected = ('{"base_version":2,"chunk_sha256":["' + H + '"],"chunk_size":1024,'
                '"created_at":"2026-11-21T10:00:00+00:00","format":"onnx","key_id":"cloud-a",'
                '"model_sha256":"' + H + '","notes":"Hund 🐕","size":2500,'
                '"spec":{"input_height":480,"input_width":640,"num_classes":30,"use_depth":true},'
                '"version":3}').encode("utf-8")
    assert canonical_bytes(manifest) == expected
    assert canonical_bytes(dataclasses.replace(manifest, signature="")) == expected  # signature is not covered


def test_wire_key_order_and_whitespace_do_not_matter(key_a):
    obj = json.loads(signed_bytes(key_a))
    pretty = json.dumps(dict(reversed(list(obj.items()))), indent=2, ensure_ascii=True).encode()
    assert verify(pretty, {"cloud-a": key_a.public_key()}).notes == "Hund 🐕"


# --- rejections ----------------------------------------------------------------------


def test_oversized_manifest_is_rejected_before_parsing(key_a):
    limits = dataclasses.replace(LIMITS, max_manifest_bytes=1000)
    error = rejected(b"{" * 1001, {"cloud-a": key_a.public_key()}, "oversized", limits)  # not valid JSON either
    assert "1001 bytes" in str(error)


@pytest.mark.parametrize("data", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"version": NaN}',
                                  b'{"a": 1, "a": 2}', b'"text"', b"[" * 100_000])
def test_malformed_json(key_a, data):
    rejected(data, {"cloud-a": key_a.public_key()}, "malformed", dataclasses.replace(LIMITS, max_manifest_bytes=10**6))


@pytest.mark.parametrize("change", [
    {"version": "3"}, {"version": True}, {"version": 0}, {"version": 2.0}, {"size": -1}, {"size": 2500.0},
    {"chunk_size": 0}, {"chunk_sha256": H}, {"chunk_sha256": [H, H, "x"]}, {"chunk_sha256": [H, H, H.upper()]},
    {"model_sha256": H[:-1]}, {"model_sha256": None}, {"format": "pt"}, {"created_at": "yesterday"},
    {"created_at": "2026-11-21T10:00:00"}, {"spec": None}, {"spec": {**SPEC, "extra": 1}},
    {"spec": {k: v for k, v in SPEC.items() if k != "use_depth"}}, {"spec": {**SPEC, "use_depth": 1}},
    {"spec": {**SPEC, "num_classes": True}}, {"spec": {**SPEC, "input_width": 0}}, {"base_version": 0},
    {"base_version": "2"}, {"notes": 5}, {"key_id": "a/b"}, {"key_id": ""}, {"signature": 5},
])
def test_wrongly_typed_fields(key_a, change):
    obj = json.loads(signed_bytes(key_a))
    obj.update(change)
    rejected(json.dumps(obj).encode(), {"cloud-a": key_a.public_key()}, "malformed")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ModelManifest)])
def test_missing_field(key_a, field):
    obj = json.loads(signed_bytes(key_a))
    del obj[field]
    assert field in str(rejected(json.dumps(obj).encode(), {"cloud-a": key_a.public_key()}, "malformed"))


def test_unknown_field_is_refused_not_ignored(key_a):
    # An ignored field would not be covered by the signature's meaning.
    obj = json.loads(signed_bytes(key_a))
    obj["activate_at"] = "now"
    assert "activate_at" in str(rejected(json.dumps(obj).encode(), {"cloud-a": key_a.public_key()}, "malformed"))


def test_unknown_key_id(key_a):
    error = rejected(signed_bytes(key_a, "cloud-x"), {"cloud-a": key_a.public_key()}, "unknown_key")
    assert "cloud-x" in str(error) and "cloud-a" in str(error)


@pytest.mark.parametrize("change", [{"version": 4}, {"notes": "harmless"}, {"size": 2400},
                                    {"chunk_sha256": [H, H, "cd" * 32]}, {"spec": {**SPEC, "num_classes": 19}},
                                    {"base_version": None}])
def test_any_change_after_signing_breaks_the_signature(key_a, change):
    obj = json.loads(signed_bytes(key_a))
    obj.update(change)
    rejected(json.dumps(obj).encode(), {"cloud-a": key_a.public_key()}, "bad_signature")


@pytest.mark.parametrize("signature", ["", "not base64!", base64.b64encode(b"x" * 64).decode(),
                                       base64.b64encode(b"x" * 63).decode()])
def test_bad_signature_values(key_a, signature):
    obj = json.loads(signed_bytes(key_a))
    obj["signature"] = signature
    rejected(json.dumps(obj).encode(), {"cloud-a": key_a.public_key()}, "bad_signature")


def test_signed_by_another_key_under_a_trusted_id(key_a, key_b):
    rejected(signed_bytes(key_b, "cloud-a"), {"cloud-a": key_a.public_key()}, "bad_signature")


@pytest.mark.parametrize("change, reason", [
    ({"size": 3073}, "inconsistent"),                        # needs 4 chunks, lists 3
    ({"size": 2048}, "inconsistent"),                        # needs 2
    ({"size": 0, "chunk_sha256": []}, "inconsistent"),
    ({"size": 1025 * 1024 * 3, "chunk_size": 1024 * 1024, "chunk_sha256": [H] * 4}, "too_large"),
    ({"size": 2500, "chunk_size": 1000}, "chunk_size"),      # below the minimum
    ({"size": 9 * 2**20, "chunk_size": 3 * 2**20}, "chunk_size"),  # above the maximum
    ({"base_version": 3}, "inconsistent"),
    ({"version": 2**32, "base_version": None}, "inconsistent"),
])
def test_signed_but_outside_limits_or_inconsistent(key_a, change, reason):
    limits = dataclasses.replace(LIMITS, max_model_bytes=3 * 2**20, max_chunk_size=2 * 2**20)
    rejected(signed_bytes(key_a, **change), {"cloud-a": key_a.public_key()}, reason, limits)


def test_default_limits():
    limits = ModelLimits()
    assert (limits.max_manifest_bytes, limits.max_model_bytes) == (256 * 1024, 512 * 2**20)
    # The largest model in the smallest default chunks still fits a manifest.
    manifest = unsigned(size=limits.max_model_bytes, chunk_size=256 * 1024, chunk_sha256=[H] * 2048,
                        signature="A" * 88, key_id="k" * 64, notes="n" * 1000)
    assert len(manifest.to_bytes()) < limits.max_manifest_bytes


def test_not_bytes_is_malformed(key_a):
    rejected("{}", {"cloud-a": key_a.public_key()}, "malformed")


# --- key rotation --------------------------------------------------------------------


def test_key_rotation_two_trusted_keys_then_retire_the_old_one(key_a, key_b):
    old, new = signed_bytes(key_a, "cloud-a"), signed_bytes(key_b, "cloud-b", version=4, base_version=3)
    both = {"cloud-a": key_a.public_key(), "cloud-b": key_b.public_key()}
    assert verify(old, both).version == 3
    assert verify(new, both).version == 4
    retired = {"cloud-b": key_b.public_key()}
    assert verify(new, retired).key_id == "cloud-b"
    rejected(old, retired, "unknown_key")


def test_resigning_keeps_the_content(key_a, key_b):
    manifest = sign_manifest(unsigned(), key_a, "cloud-a")
    resigned = sign_manifest(manifest, key_b, "cloud-b")
    assert dataclasses.replace(resigned, key_id="", signature="") == dataclasses.replace(manifest, key_id="",
                                                                                          signature="")
    assert verify(resigned.to_bytes(), {"cloud-b": key_b.public_key()}) == resigned


# --- key files -------------------------------------------------------------------------


def test_generate_keypair_files_and_modes(tmp_path):
    old_umask = os.umask(0)  # the key must be 0600 whatever the umask
    try:
        private_path, public_path = generate_keypair(tmp_path / "keys", "cloud-2026a")
    finally:
        os.umask(old_umask)
    assert private_path.name == "cloud-2026a.key" and public_path.name == "cloud-2026a.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_path.stat().st_mode) == 0o644
    assert private_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert not [p for p in private_path.parent.iterdir() if p.name.endswith(".tmp")]
    key = load_private_key(private_path)
    trusted = load_trusted_keys(tmp_path / "keys")
    assert list(trusted) == ["cloud-2026a"]
    manifest = sign_manifest(unsigned(), key, "cloud-2026a")
    assert verify(manifest.to_bytes(), trusted) == manifest


def test_generate_never_overwrites(tmp_path):
    private_path, _ = generate_keypair(tmp_path, "k1")
    before = private_path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path, "k1")
    assert private_path.read_bytes() == before


@pytest.mark.parametrize("key_id", ["", "../evil", "a/b", "x" * 65, "key.id"])
def test_generate_refuses_bad_key_ids(tmp_path, key_id):
    with pytest.raises(KeyFileError):
        generate_keypair(tmp_path, key_id)
    assert list(tmp_path.iterdir()) == []


def test_private_key_readable_by_others_is_refused(tmp_path):
    private_path, _ = generate_keypair(tmp_path, "k1")
    private_path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_private_key(private_path)


def test_wrong_key_files(tmp_path):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "ec.key").chmod(0o600)
    (tmp_path / "ec.pub").write_bytes(ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_private_key(tmp_path / "ec.key")
    with pytest.raises(KeyFileError, match="not an Ed25519 public key"):
        load_trusted_keys([tmp_path / "ec.pub"])
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_trusted_keys([tmp_path / "junk.pub"])
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "missing.key")


def test_load_trusted_keys_from_files_and_directories(tmp_path):
    _, pub_a = generate_keypair(tmp_path / "a", "cloud-a")
    _, pub_b = generate_keypair(tmp_path / "b", "cloud-b")
    assert sorted(load_trusted_keys([pub_a, str(pub_b)])) == ["cloud-a", "cloud-b"]
    assert sorted(load_trusted_keys([tmp_path / "a", pub_b])) == ["cloud-a", "cloud-b"]
    with pytest.raises(KeyFileError, match="given twice"):
        load_trusted_keys([pub_a, tmp_path / "a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyFileError, match="no trusted public keys"):
        load_trusted_keys(tmp_path / "empty")
    badly_named = tmp_path / "cloud.a.pub"
    badly_named.write_bytes(pub_a.read_bytes())
    with pytest.raises(KeyFileError, match="named <key_id>.pub"):
        load_trusted_keys([badly_named])


def test_cli_generate(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "keys"), "--key-id", "cloud-2026a"]) == 0
    out = capsys.readouterr().out
    assert "cloud-2026a.key" in out and "fingerprint: sha256:" in out
    assert stat.S_IMODE((tmp_path / "keys" / "cloud-2026a.key").stat().st_mode) == 0o600
    assert main(["generate", "--out", str(tmp_path / "keys"), "--key-id", "cloud-2026a"]) == 1
    assert "exists" in capsys.readouterr().err
