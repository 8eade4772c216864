"""The deployment files are valid: deploy/k8s against the Kubernetes API schemas bundled
in kubernetes-validate (strict: unknown fields refused), deploy/compose against the
Compose specification's JSON schema (as bundled in check-jsonschema), and the bridge and
trainer configs inside both are accepted by the bridge's own config loader.

`docker compose config` would also check the compose file; it is not installed on the
machines this suite runs on, so the published schema stands in for it.
"""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from cloud_bridge.config import load_bridge_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30.0"   # the oldest Kubernetes these manifests are meant for (CronJob, StatefulSet GA long before)


def k8s_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def test_every_expected_kubernetes_object_is_there():
    kinds = {name.split(":", 1)[1] for name, _ in k8s_documents()}
    for expected in ("Namespace/seg-dog", "ConfigMap/seg-config", "Deployment/seg-mosquitto",
                     "Service/seg-mosquitto", "StatefulSet/seg-postgres", "Service/seg-postgres",
                     "StatefulSet/seg-bridge", "CronJob/seg-trainer", "Secret/seg-db", "Secret/seg-signing-key",
                     "PersistentVolumeClaim/seg-models"):
        assert expected in kinds, expected


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_kubernetes_manifests_validate_against_the_api_schemas(version):
    errors = []
    for name, doc in k8s_documents():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


def test_a_broken_manifest_is_caught():
    """The validator does refuse things: a misspelt field and a wrong type."""
    bridge = next(doc for name, doc in k8s_documents() if name.endswith("StatefulSet/seg-bridge"))
    broken = json.loads(json.dumps(bridge))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = json.loads(json.dumps(bridge))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_bridge_workloads_have_gpus_probes_and_secrets():
    docs = dict(k8s_documents())
    bridge = docs["bridge.yaml:StatefulSet/seg-bridge"]["spec"]["template"]["spec"]["containers"][0]
    assert bridge["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(bridge)
    assert bridge["readinessProbe"]["httpGet"]["path"] == "/readyz"
    trainer = docs["trainer.yaml:CronJob/seg-trainer"]["spec"]
    assert trainer["concurrencyPolicy"] == "Forbid"
    assert trainer["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] == 1
    secrets = {doc["metadata"]["name"] for name, doc in docs.items() if doc["kind"] == "Secret"}
    for name, doc in docs.items():
        for volume in _volumes(doc):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets | {"seg-broker-files"}, (name, volume)
    for name, doc in docs.items():   # placeholders only: no secret value is committed
        if doc["kind"] == "Secret":
            assert all(v == "REPLACE-ME" or k == "dsn" for k, v in doc["stringData"].items()), name


def _volumes(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    pod = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template", {})).get("spec", {})
    return pod.get("volumes", [])


def load_mounted(text: str, tmp_path: Path, name: str):
    """load_bridge_config on a config whose secret files are mounted in the container:
    stand-ins for them under tmp_path (the loader checks that they can be read)."""
    data = yaml.safe_load(text)
    for section, key in (("broker", "password_file"), ("broker", "ca_file"), ("store", None)):
        node = data.get(section, {})
        if section == "store":
            node, key = node.get("postgres", {}), "password_file"
        if node.get(key):
            stand_in = tmp_path / name / node[key].lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("stand-in\n")
            node[key] = str(stand_in)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_bridge_config(path)


def test_the_configs_inside_the_manifests_load(tmp_path):
    config_map = dict(k8s_documents())["config.yaml:ConfigMap/seg-config"]["data"]
    sources = {f"k8s-{key}": config_map[key] for key in ("bridge.yaml", "trainer.yaml")}
    sources.update({f"compose-{p.name}": p.read_text()
                    for p in (DEPLOY / "compose" / "bridge.yaml", DEPLOY / "compose" / "trainer.yaml")})
    for name, text in sources.items():
        config = load_mounted(text, tmp_path, name)
        assert config.store.backend == "postgres" and config.store.postgres.password_file, name
        assert config.broker.tls and config.broker.password_file, name
    # The compose broker config and the cluster's are the same settings.
    compose_conf = [line for line in (DEPLOY / "compose" / "mosquitto.conf").read_text().splitlines()
                    if line and not line.startswith("#")]
    assert compose_conf == config_map["mosquitto.conf"].splitlines()


def compose_schema() -> dict:
    schema = importlib.resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(schema.read_text())


def test_compose_file_validates_against_the_compose_specification():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)
    # References the schema cannot check: every secret, config and volume used is defined.
    for name, service in compose["services"].items():
        for kind in ("secrets", "configs"):
            for ref in service.get(kind, []):
                source = ref if isinstance(ref, str) else ref["source"]
                assert source in compose[kind], f"{name}: {kind} {source} is not defined"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith(".") or source in compose["volumes"], f"{name}: volume {source}"
    assert {"mosquitto", "postgres", "bridge-1", "bridge-2", "trainer"} <= set(compose["services"])
    bridge = compose["services"]["bridge-1"]
    assert bridge["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # A broken file is refused.
    broken = json.loads(json.dumps(compose))
    broken["services"]["postgres"]["restart"] = ["always"]
    assert list(validator.iter_errors(broken))
