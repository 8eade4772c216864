"""The bridge's YAML configuration: the shipped example, and clear errors for bad files."""
from __future__ import annotations

from pathlib import Path

import pytest

from cloud_bridge.config import BridgeConfig, ConfigError, load_bridge_config

EXAMPLE = Path(__file__).resolve().parents[2] / "cloud_bridge" / "bridge.yaml"


def test_shipped_example_is_complete_and_equals_the_defaults():
    assert load_bridge_config(EXAMPLE) == BridgeConfig()
    assert load_bridge_config(None) == BridgeConfig()


@pytest.mark.parametrize("text,message", [
    ("brokr:\n  port: 1\n", "unknown key(s) ['brokr']"),
    ("broker:\n  port: '1883'\n", "broker.port: expected int"),
    ("broker:\n  port: 1883.5\n", "broker.port: expected int"),
    ("workers: 0\n", "workers=0"),
    ("refinement:\n  sam:\n    model_type: vit_x\n", "refinement.sam"),
    ("refinement:\n  regions:\n    method: watershed\n", "refinement.regions"),
    ("refinement:\n  sam:\n    checkpoint: 3\n", "expected a path string"),
    ("broker: [1, 2]\n", "broker must be a mapping"),
    ("workers: [\n", "not valid YAML"),
    ("lifelong:\n  buffer:\n    holdout_every: 1\n", "holdout_every=1"),
    ("lifelong:\n  buffer:\n    label_sources: {human: false, ground_truth: false, sam: false}\n",
     "enable at least one source"),
    ("lifelong:\n  min_new_samples: 0\n", "min_new_samples=0"),
    ("lifelong:\n  train:\n    lr: 0\n", "train.lr=0"),
    ("lifelong:\n  gate:\n    max_drop: 0.1\n", "unknown key(s) ['max_drop'] in lifelong.gate"),
    ("semantics:\n  mode: both\n", "semantics.mode 'both'"),
    ("semantics:\n  cloud_weight: 1.5\n", "cloud_weight must be in [0, 1]"),
    ("refinement:\n  fallback: sam\n", "refinement.fallback 'sam'"),
    ("refinement:\n  depth_regions:\n    hfov_deg: 0.0\n", "hfov_deg"),
    ("lifelong:\n  pseudo_labels:\n    keep_fraction: 0.0\n", "keep_fraction"),
    ("store:\n  backend: mysql\n", "store.backend='mysql'"),
    ("store:\n  retry_s: 0\n", "store.retry_s=0"),
    ("store:\n  postgres:\n    dsn_env: 'MY-VAR'\n", "is not an environment variable name"),
    ("store:\n  postgres:\n    connect_timeout_s: 0\n", "connect_timeout_s=0"),
    ("store:\n  postgres:\n    password: x\n", "unknown key(s) ['password'] in store.postgres"),
    ("http:\n  port: 70000\n", "http.port=70000"),
])
def test_bad_files_are_explained(tmp_path, text, message):
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_bridge_config(path)
    assert message in str(err.value)


def test_floats_accept_integers_and_values_arrive_typed(tmp_path):
    path = tmp_path / "bridge.yaml"
    path.write_text("max_payload_mb: 2\nbroker:\n  port: 1884\nrefinement:\n  sam:\n    checkpoint: /m/sam.pth\n")
    cfg = load_bridge_config(path)
    assert cfg.max_payload_mb == 2.0 and isinstance(cfg.max_payload_mb, float)
    assert cfg.broker.port == 1884 and cfg.refinement.sam.checkpoint == "/m/sam.pth"


def test_missing_file_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="cannot read bridge config"):
        load_bridge_config(tmp_path / "nope.yaml")
