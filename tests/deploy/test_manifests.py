"""docker-compose, Kubernetes and the Dockerfile agree with each other and with Farebox.

Checked without a Docker engine or a cluster: structure with PyYAML, then the real
validators when installed (Compose v2 `config`, kubernetes-validate, hadolint).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import SecretStr

from service.settings import Settings
from tests.deploy import tools

DEPLOY = tools.DEPLOY
K8S = DEPLOY / "kubernetes"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILE = tools.REPO / "Dockerfile"
FAREBOX_SERVICES = ("farebox-1", "farebox-2")


def _yaml_files() -> list[Path]:
    files = [COMPOSE_FILE, *K8S.glob("*.yaml"), *(DEPLOY / "prometheus").glob("*.yml")]
    files += (DEPLOY / "grafana" / "provisioning").rglob("*.yml")
    return sorted(files)


def _k8s_objects() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def _one(kind: str) -> dict[str, Any]:
    found = [o for o in _k8s_objects() if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _dockerfile_expose() -> int:
    ports = re.findall(r"^EXPOSE\s+(\d+)", DOCKERFILE.read_text(), flags=re.M)
    assert len(ports) == 1, ports
    return int(ports[0])


def _is_setting(env_name: str) -> bool:
    """Whether FAREBOX_<NAME> (or FAREBOX_<SECRET>_FILE) is something Settings reads."""
    fields = Settings.model_fields
    name = env_name.removeprefix("FAREBOX_").lower()
    if name in fields:
        return True
    base = name.removesuffix("_file")
    if not name.endswith("_file") or base not in fields:
        return False
    annotation = fields[base].annotation
    return SecretStr in (get_args(annotation) or (annotation,))


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_loads(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_setting_name_check_is_strict() -> None:
    assert _is_setting("FAREBOX_DATABASE_URL") and _is_setting("FAREBOX_ADMIN_TOKEN_FILE")
    assert not _is_setting("FAREBOX_DATABASE_URL_FILE")  # not a secret field
    assert not _is_setting("FAREBOX_WORKER")


# Kubernetes


def test_every_k8s_object_is_named_and_typed() -> None:
    objects = _k8s_objects()
    kinds = {o.get("kind") for o in objects}
    assert kinds == {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "Job", "ServiceMonitor",
    }  # fmt: skip
    for obj in objects:
        assert obj.get("apiVersion") and obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    assert kustomization["namespace"] == _one("Namespace")["metadata"]["name"]
    image = _one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kustomization["images"]}


def _container() -> dict[str, Any]:
    return _one("Deployment")["spec"]["template"]["spec"]["containers"][0]


def _probe_port(probe: dict[str, Any], container: dict[str, Any]) -> int:
    port = probe["httpGet"]["port"]
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def test_deployment_probes_point_at_health_endpoints_on_the_container_port() -> None:
    c = _container()
    port = _dockerfile_expose()
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert _probe_port(c[probe], c) == port, probe
    config = _one("ConfigMap")["data"]
    assert int(config["FAREBOX_PORT"]) == port
    assert config["FAREBOX_HOST"] == "0.0.0.0"


def test_deployment_runs_hardened_and_drains_before_it_is_killed() -> None:
    dep = _one("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = _container()
    assert dep["spec"]["replicas"] == 3
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert mounts["/tmp"] in empty_dirs  # the CLI's PROMETHEUS_MULTIPROC_DIR lives here
    sleep = c["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep"
    drain = float(_one("ConfigMap")["data"]["FAREBOX_DRAIN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] > drain + float(sleep[1])


def test_service_selects_the_deployment_pods_on_the_container_port() -> None:
    dep, svc = _one("Deployment"), _one("Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    port_names = {p["name"] for p in _container()["ports"]}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in port_names | {_dockerfile_expose()}


def test_pdb_hpa_and_servicemonitor_target_farebox() -> None:
    dep, svc = _one("Deployment"), _one("Service")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    pdb = _one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "farebox",
    }
    assert hpa["spec"]["minReplicas"] >= dep["spec"]["replicas"] - pdb["spec"]["maxUnavailable"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    monitor = _one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    assert all(
        e["port"] in svc_ports and e["path"] == "/metrics" for e in monitor["spec"]["endpoints"]
    )


def test_migration_job_and_pods_use_settings_and_secrets_that_exist() -> None:
    job = _one("Job")
    job_c = job["spec"]["template"]["spec"]["containers"][0]
    assert job_c["args"] == ["migrate"]
    assert job_c["image"] == _container()["image"]
    secret_keys = set(_one("Secret")["stringData"])
    config = _one("ConfigMap")["data"]
    assert config["FAREBOX_AUTO_MIGRATE"] == "false"
    for name in config:
        assert _is_setting(name), name
    for c in (_container(), job_c):
        for env in c.get("env", []):
            assert _is_setting(env["name"]), env["name"]
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == _one("Secret")["metadata"]["name"]
                assert ref["key"] in secret_keys
    secret_volume = next(
        v for v in _one("Deployment")["spec"]["template"]["spec"]["volumes"] if "secret" in v
    )
    mount = next(m for m in _container()["volumeMounts"] if m["name"] == secret_volume["name"])
    for item in secret_volume["secret"]["items"]:
        assert item["key"] in secret_keys
    for name, value in config.items():
        if name.endswith("_FILE"):
            assert value.startswith(mount["mountPath"] + "/"), name
            assert value.rsplit("/", 1)[1] in {i["path"] for i in secret_volume["secret"]["items"]}


def test_secret_values_are_marked_as_placeholders() -> None:
    for key, value in _one("Secret")["stringData"].items():
        assert "PLACEHOLDER" in value, key


@pytest.mark.parametrize("version", ["1.27.0", "1.37.0"])
def test_kubernetes_objects_match_the_api_schemas(version: str) -> None:
    kv = tools.kubernetes_validate()
    checked = 0
    for obj in _k8s_objects():
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: no schema ships with kubernetes-validate
        kv.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 8


def test_kubernetes_validate_rejects_a_typo() -> None:
    kv = tools.kubernetes_validate()
    svc = yaml.safe_load((K8S / "service.yaml").read_text())
    svc["spec"]["selectr"] = svc["spec"].pop("selector")
    with pytest.raises(kv.ValidationError):
        kv.validate(svc, "1.37.0", strict=True)


# docker-compose


def test_compose_dependencies_exist_and_wait_for_the_right_condition() -> None:
    services = _compose()["services"]
    conditions = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        for dep in deps:
            assert dep in services, f"{name} depends on unknown service {dep}"
        if isinstance(deps, dict):
            assert all(d["condition"] in conditions for d in deps.values())
    for name in FAREBOX_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]


def test_compose_ports_match_the_dockerfile_expose() -> None:
    port = _dockerfile_expose()
    services = _compose()["services"]
    for name in FAREBOX_SERVICES:
        svc = services[name]
        assert [int(p) for p in svc["expose"]] == [port]
        assert int(svc["environment"]["FAREBOX_PORT"]) == port
        assert f":{port}/readyz" in " ".join(svc["healthcheck"]["test"])
    assert services["lb"]["ports"][0].endswith(f":{port}")
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server\s+([\w-]+):(\d+)", nginx, flags=re.M)
    assert sorted(upstreams) == sorted((name, str(port)) for name in FAREBOX_SERVICES)
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "farebox")
    targets = job["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:{port}" for name in FAREBOX_SERVICES)


def test_compose_environment_uses_real_settings() -> None:
    for name, svc in _compose()["services"].items():
        for key in svc.get("environment", {}):
            if key.startswith("FAREBOX_"):
                assert _is_setting(key), f"{name}: {key}"


def test_compose_state_survives_restarts() -> None:
    compose = _compose()
    services, volumes = compose["services"], compose["volumes"]
    redis = services["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    for svc, path in (("redis", "/data"), ("postgres", "/var/lib/postgresql/data")):
        mounts = dict(v.split(":", 1) for v in services[svc]["volumes"])
        named = {k for k, v in mounts.items() if v == path}
        assert named and named <= volumes.keys(), svc
        assert services[svc]["healthcheck"]["test"], svc


def test_compose_secrets_and_profiles() -> None:
    compose = _compose()
    services = compose["services"]
    declared = compose["secrets"].keys()
    for name, svc in services.items():
        for secret in svc.get("secrets", []):
            assert secret in declared, f"{name}: {secret}"
    for name in FAREBOX_SERVICES:
        env = services[name]["environment"]
        files = {k: v for k, v in env.items() if k.endswith("_FILE")}
        assert files, name
        for value in files.values():
            assert value.removeprefix("/run/secrets/") in services[name]["secrets"]
        assert float(services[name]["stop_grace_period"].rstrip("s")) > float(
            env["FAREBOX_DRAIN_GRACE_S"]
        )
    assert services["simulator"]["profiles"] == ["sim"]
    assert "--port" in services["simulator"]["command"]
    sim_env = dict(
        line.split("=", 1)
        for line in (DEPLOY / "sim.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert sim_env["COMPOSE_PROFILES"] == "sim"
    port = services["simulator"]["command"][services["simulator"]["command"].index("--port") + 1]
    assert sim_env["FAREBOX_UPSTREAM_URL"].startswith(f"http://simulator:{port}/")
    grafana = services["grafana"]["environment"]
    assert (
        grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"].removeprefix("/run/secrets/")
        in services["grafana"]["secrets"]
    )
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]


def _compose_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tools.compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_docker_compose_config_validates() -> None:
    done = _compose_cmd("config", "--quiet")
    assert done.returncode == 0, done.stderr
    done = _compose_cmd("config", "--services")
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == set(_compose()["services"]) - {"simulator"}
    done = _compose_cmd("--env-file", str(DEPLOY / "sim.env"), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert "simulator" in resolved["services"]
    env = resolved["services"]["farebox-1"]["environment"]
    assert env["FAREBOX_UPSTREAM_URL"] == "http://simulator:9100/v1"


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  a:\n    image: x\n    depends_on: [b]\n")
    done = subprocess.run(
        [*tools.compose(), "-f", str(broken), "config", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0


# Dockerfile


def test_dockerfile_is_multi_stage_non_root_and_checks_offline_tokens() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\w+))?", text, flags=re.M)
    assert [s[1] for s in stages] == ["builder", "runtime"]
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.M)
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^RUN --network=none python -c .*pricing\.tokens", text, flags=re.M)
    health = re.search(r"^HEALTHCHECK .*\n?.*", text, flags=re.M)
    assert health and "/healthz" in text[health.start() : health.start() + 400]
    assert 'ENTRYPOINT ["farebox"]' in text and 'CMD ["serve"]' in text
    ignore = (tools.REPO / ".dockerignore").read_text().splitlines()
    assert ignore[0:1] == ["*"] or "*" in ignore  # allow-list: only what the image needs
    assert {"!pyproject.toml", "!pricing/", "!service/"} <= set(ignore)


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [tools.hadolint(), "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    done = subprocess.run([tools.hadolint(), str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
