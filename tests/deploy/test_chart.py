"""The Helm chart, rendered by the real Helm engine (helm-python-sdk embeds Helm's Go SDK).

Every rendered manifest is validated against the Kubernetes OpenAPI schemas by
`kubernetes-validate --strict`; the wiring that matters to the broker (probes, settings, secrets,
the migration hook, security contexts, observability assets) is asserted on the parsed objects.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from app.auth import KeyRing
from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "session-broker"
ALL_ON_VALUES = Path(__file__).with_name("values-all-on.yaml")
RELEASE, NAMESPACE = "sb", "brokers"
FULLNAME = "sb-session-broker"

DATABASE_URL = "postgresql://broker:secret@db.example.internal:5432/broker"
API_KEY = {"tenant": "acme", "key": "acme-key-0123456789abcdef"}
# The least a user must supply: a database and one API key (the broker refuses to serve unauthenticated).
REQUIRED = {"database": {"url": DATABASE_URL}, "auth": {"apiKeys": [API_KEY]}}
EXISTING_SECRETS = {
    "database": {"existingSecret": "pg-app", "existingSecretKey": "uri"},
    "auth": {"existingSecret": "broker-keys"},
}

# Kubernetes versions to validate against: the oldest the chart supports (Chart.yaml kubeVersion)
# and the newest kubernetes-validate knows.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

# values.yaml deliberately differs from the application's defaults here (see the comments there).
DELIBERATE_OVERRIDES = {"auto_migrate": False, "log_format": "json"}


def tool(name: str) -> str:
    """A console script installed next to this interpreter; missing tools fail, never skip."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install the test extra)"
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def render(values: dict[str, Any]) -> dict[str, str]:
    with helm_python.Chart.load(CHART_DIR) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc["kind"], doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["kind"], doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


SCENARIOS = {
    "defaults": REQUIRED,
    "all-on": load_yaml(ALL_ON_VALUES),
    "existing-secrets": EXISTING_SECRETS,
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: manifests(render(values)) for name, values in SCENARIOS.items()}


@pytest.fixture(scope="module")
def default_docs(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["defaults"]


@pytest.fixture(scope="module")
def all_on_docs(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["all-on"]


# --- lint and schema validation of the output --------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_helm_lint_is_clean(scenario: str) -> None:
    result = helm_python.lint(CHART_DIR, SCENARIOS[scenario], strict=True, namespace=NAMESPACE)
    assert result["errors"] == []
    # Severity 1 is INFO (e.g. "icon is recommended"); warnings and errors are not accepted.
    assert [m for m in result["messages"] if m["severity"] > 1] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_manifests_pass_kubernetes_validate_strict(
    scenario: str, kube_version: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    # kubernetes-validate ships only the built-in APIs; for a CRD kind it merely warns "couldn't find
    # schema". ServiceMonitor and PrometheusRule are therefore excluded here and checked against
    # hand-written structural schemas in test_custom_resources_match_operator_structure.
    files = []
    for number, doc in enumerate(rendered[scenario]):
        if doc["kind"] in CRD_KINDS:
            continue
        path = tmp_path / f"{number:02d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(str(path))
    assert files
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--no-warn", "-k", kube_version, *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(files), result.stdout


def test_kubernetes_validate_rejects_unknown_fields(
    default_docs: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Control: the validator really runs in strict mode (a typo in a template would be caught)."""
    deployment = json.loads(json.dumps(find(default_docs, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(deployment))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", KUBE_VERSIONS[0], str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "livenessprobe" in result.stdout + result.stderr


# Structural subsets of the Prometheus Operator CRDs (monitoring.coreos.com/v1) for the fields this
# chart emits; additionalProperties false so a misspelt field fails like it would on the API server.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name", "namespace"],
    "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}, "labels": _STR_MAP},
}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": _STR_MAP},
                },
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string"},
                            "limit": {"type": "integer"},
                            "labels": _STR_MAP,
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["expr"],
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string"},
                                        "record": {"type": "string"},
                                        "expr": {"type": ["string", "integer"]},
                                        "for": {"type": "string"},
                                        "keep_firing_for": {"type": "string"},
                                        "labels": _STR_MAP,
                                        "annotations": _STR_MAP,
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_custom_resources_match_operator_structure(all_on_docs: list[dict[str, Any]]) -> None:
    jsonschema.validate(find(all_on_docs, "ServiceMonitor"), SERVICE_MONITOR_SCHEMA)
    jsonschema.validate(find(all_on_docs, "PrometheusRule"), PROMETHEUS_RULE_SCHEMA)


def test_service_monitor_scrapes_metrics_from_the_server_service(all_on_docs: list[dict[str, Any]]) -> None:
    monitor = find(all_on_docs, "ServiceMonitor")
    service = find(all_on_docs, "Service")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheus_rule_wraps_the_rule_file(all_on_docs: list[dict[str, Any]]) -> None:
    rule_file = load_yaml(CHART_DIR / "files" / "prometheus-rules.yaml")
    assert find(all_on_docs, "PrometheusRule")["spec"]["groups"] == rule_file["groups"]


def test_grafana_dashboard_configmap_carries_the_dashboard_file(all_on_docs: list[dict[str, Any]]) -> None:
    dashboard = find(all_on_docs, "ConfigMap", f"{FULLNAME}-dashboard")
    content = (CHART_DIR / "files" / "grafana-dashboard.json").read_text()
    assert dashboard["data"] == {"session-broker.json": content}
    json.loads(dashboard["data"]["session-broker.json"])
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Platform"}


def test_optional_features_are_off_by_default(
    default_docs: list[dict[str, Any]], all_on_docs: list[dict[str, Any]]
) -> None:
    core = {"ConfigMap", "Deployment", "Job", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"}
    optional = {"CronJob", "HorizontalPodAutoscaler", "NetworkPolicy", "PrometheusRule", "ServiceMonitor"}
    assert kinds(default_docs) == core
    assert kinds(all_on_docs) == core | optional


# --- the server Deployment -----------------------------------------------------------------------


def test_probes_hit_healthz_and_readyz_on_8080(default_docs: list[dict[str, Any]]) -> None:
    container = find(default_docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080}
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8080"]
    for probe, path in (
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == 8080


def test_service_targets_the_http_port(all_on_docs: list[dict[str, Any]]) -> None:
    service = find(all_on_docs, "Service")
    deployment = find(all_on_docs, "Deployment")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_graceful_shutdown_budget(default_docs: list[dict[str, Any]]) -> None:
    """preStop sleep + uvicorn's graceful-shutdown timeout must fit in the termination grace period."""
    found = re.search(r'"timeout_graceful_shutdown":\s*(\d+)', (ROOT / "app" / "cli.py").read_text())
    assert found, "app/cli.py no longer sets uvicorn's timeout_graceful_shutdown"
    spec = find(default_docs, "Deployment")["spec"]["template"]["spec"]
    pre_stop = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert int(pre_stop[1]) + int(found.group(1)) < spec["terminationGracePeriodSeconds"]


def test_replicas_topology_and_disruption_budget(default_docs: list[dict[str, Any]]) -> None:
    deployment = find(default_docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = find(default_docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


def test_autoscaler_owns_the_replica_count(all_on_docs: list[dict[str, Any]]) -> None:
    deployment = find(all_on_docs, "Deployment")
    assert "replicas" not in deployment["spec"]
    hpa = find(all_on_docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 8)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert find(all_on_docs, "PodDisruptionBudget")["spec"] == {
        "minAvailable": 2,
        "selector": deployment["spec"]["selector"],
    }


def test_image_defaults_to_app_version_and_digest_pins(
    default_docs: list[dict[str, Any]], all_on_docs: list[dict[str, Any]]
) -> None:
    app_version = load_yaml(CHART_DIR / "Chart.yaml")["appVersion"]
    assert app_version == "0.1.0"
    for docs, image in (
        (default_docs, f"session-broker:{app_version}"),
        (all_on_docs, "registry.example.com/platform/session-broker@sha256:" + "0123456789abcdef" * 4),
    ):
        for _, spec in pod_specs(docs):
            assert {c["image"] for c in spec["containers"]} == {image}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_locked_down(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    specs = list(pod_specs(rendered[scenario]))
    assert {kind for kind, _ in specs} >= {"Deployment", "Job"}
    for kind, spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True, kind
        assert spec["securityContext"]["runAsUser"] == 10001, kind
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, kind
        assert spec["automountServiceAccountToken"] is False, kind
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "limits" in container["resources"] and "requests" in container["resources"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] == "tmp"
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]


def test_checksums_roll_pods_when_settings_change(default_docs: list[dict[str, Any]]) -> None:
    annotations = find(default_docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    changed = find(manifests(render({**REQUIRED, "config": {"logLevel": "DEBUG"}})), "Deployment")
    changed_annotations = changed["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] != changed_annotations["checksum/config"]
    assert annotations["checksum/secret"] == changed_annotations["checksum/secret"]
    rotated = find(
        manifests(render({**REQUIRED, "auth": {"apiKeys": [{**API_KEY, "key": "x" * 20}]}})), "Deployment"
    )
    assert (
        annotations["checksum/secret"]
        != rotated["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]
    )


# --- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_configmap_sets_only_real_settings(scenario: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    data = find(rendered[scenario], "ConfigMap", FULLNAME)["data"]
    fields = set(Settings.model_fields)
    names = [key.removeprefix("SESSION_BROKER_").lower() for key in data]
    assert all(key.startswith("SESSION_BROKER_") for key in data)
    assert [n for n in names if n not in fields] == []
    # Secrets never go in the ConfigMap, and Kubernetes must never fall back to the embedded database.
    assert not {"database_url", "api_keys", "admin_api_keys", "data_dir"} & set(names)
    assert data["SESSION_BROKER_AUTO_MIGRATE"] == "false"


def test_every_env_name_in_pod_specs_is_a_setting(rendered: dict[str, list[dict[str, Any]]]) -> None:
    fields = set(Settings.model_fields)
    for docs in rendered.values():
        for _, spec in pod_specs(docs):
            for container in spec["containers"]:
                for name in env_of(container):
                    if name.startswith("SESSION_BROKER_"):
                        assert name.removeprefix("SESSION_BROKER_").lower() in fields, name


def test_values_defaults_match_the_application(
    default_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SESSION_BROKER_{name.upper()}", raising=False)
    data = find(default_docs, "ConfigMap", FULLNAME)["data"]
    fields = {key.removeprefix("SESSION_BROKER_").lower(): value for key, value in data.items()}
    settings = Settings(**fields)
    for field, text in fields.items():
        default = DELIBERATE_OVERRIDES.get(field, Settings.model_fields[field].default)
        assert getattr(settings, field) == default, (
            f"values.yaml sets {field} to {text!r}; the application's default is {default!r}"
        )


@pytest.mark.parametrize("scenario", ["defaults", "all-on"])
def test_rendered_settings_load_into_the_application(
    scenario: str, rendered: dict[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's environment, rebuilt from the manifests, is accepted by Settings and the KeyRing."""
    docs = rendered[scenario]
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    secrets = secret_data(find(docs, "Secret", FULLNAME))
    environment = dict(find(docs, "ConfigMap", FULLNAME)["data"])
    for name, item in env_of(container).items():
        if "value" in item:
            environment[name] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            environment[name] = secrets[item["valueFrom"]["secretKeyRef"]["key"]]
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(secrets["api-keys"])
    environment["SESSION_BROKER_API_KEYS_FILE"] = str(keys_file)
    for name in list(environment):
        if not name.startswith("SESSION_BROKER_"):
            del environment[name]
    for name in Settings.model_fields:
        monkeypatch.delenv(f"SESSION_BROKER_{name.upper()}", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings(host="0.0.0.0")
    assert settings.database_url is not None
    assert not settings.uses_embedded_database
    assert settings.should_auto_migrate is False
    ring = KeyRing.from_settings(settings)
    assert ring.auth_enabled
    assert "acme" in ring.tenants


def test_purge_runs_in_process_or_in_the_cronjob(
    default_docs: list[dict[str, Any]], all_on_docs: list[dict[str, Any]]
) -> None:
    assert find(default_docs, "ConfigMap", FULLNAME)["data"]["SESSION_BROKER_PURGE_ENABLED"] == "true"
    assert "CronJob" not in kinds(default_docs)
    assert find(all_on_docs, "ConfigMap", FULLNAME)["data"]["SESSION_BROKER_PURGE_ENABLED"] == "false"
    cron = find(all_on_docs, "CronJob")
    assert cron["spec"]["schedule"] == "*/2 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["purge"]
    assert container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    assert env_of(container)["SESSION_BROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": FULLNAME,
        "key": "database-url",
    }


# --- secrets -------------------------------------------------------------------------------------


def test_api_keys_file_is_mounted_from_the_secret(all_on_docs: list[dict[str, Any]]) -> None:
    spec = find(all_on_docs, "Deployment")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    env = env_of(container)
    keys_path = Path(env["SESSION_BROKER_API_KEYS_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(keys_path.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == FULLNAME
    assert volume["secret"]["items"] == [{"key": "api-keys", "path": keys_path.name}]
    assert "SESSION_BROKER_API_KEYS" not in env

    secrets = secret_data(find(all_on_docs, "Secret", FULLNAME))
    assert secrets["api-keys"] == (
        "acme=acme-key-0123456789abcdef\nacme=acme-key-rotated-0123456789\nglobex=globex-key-0123456789abcdef\n"
    )
    assert secrets["admin-api-keys"] == "ops=admin-key-0123456789abcdef"
    assert secrets["database-url"] == "postgresql://broker:secret@pgbouncer.db.svc:6432/broker"
    for name, key in (
        ("SESSION_BROKER_DATABASE_URL", "database-url"),
        ("SESSION_BROKER_ADMIN_API_KEYS", "admin-api-keys"),
    ):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": FULLNAME, "key": key}


def test_existing_secrets_replace_the_chart_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["existing-secrets"]
    assert "Secret" not in kinds(docs)
    spec = find(docs, "Deployment")["spec"]["template"]["spec"]
    env = env_of(spec["containers"][0])
    assert env["SESSION_BROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "uri"}
    assert env["SESSION_BROKER_ADMIN_API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "broker-keys",
        "key": "admin-api-keys",
        "optional": True,
    }
    auth_volume = next(v for v in spec["volumes"] if v["name"] == "auth")
    assert auth_volume["secret"]["secretName"] == "broker-keys"
    job = find(docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(job)["SESSION_BROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-app",
        "key": "uri",
    }


# --- the migration hook ----------------------------------------------------------------------------


def hook_weight(doc: dict[str, Any]) -> int:
    return int(doc["metadata"]["annotations"]["helm.sh/hook-weight"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(
    scenario: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    docs = rendered[scenario]
    job = find(docs, "Job", f"{FULLNAME}-migration")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    spec = job["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["args"] == ["migrate"]
    assert spec["restartPolicy"] == "Never"
    # On a first install the hook runs before the release's ConfigMap, Secret and ServiceAccount
    # exist: everything it references is either a hook of lower weight or user-managed.
    assert "envFrom" not in container
    hooks = {
        (d["kind"], d["metadata"]["name"]): d
        for d in docs
        if "helm.sh/hook" in d["metadata"].get("annotations", {})
    }
    account = spec["serviceAccountName"]
    assert hook_weight(hooks["ServiceAccount", account]) < hook_weight(job)
    reference = env_of(container)["SESSION_BROKER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    if scenario == "existing-secrets":
        assert reference["name"] == "pg-app"
    else:
        secret = hooks["Secret", reference["name"]]
        assert hook_weight(secret) < hook_weight(job)
        assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert reference["key"] in secret["data"]


def test_migration_can_bypass_pgbouncer(all_on_docs: list[dict[str, Any]]) -> None:
    job = find(all_on_docs, "Job")["spec"]["template"]["spec"]["containers"][0]
    secret = secret_data(find(all_on_docs, "Secret", f"{FULLNAME}-migration"))
    assert secret == {"database-url": "postgresql://broker:secret@postgres.db.svc:5432/broker"}
    assert env_of(job)["SESSION_BROKER_DB_PREPARED_STATEMENTS"]["value"] == "false"


def test_network_policy_admits_gateways_and_reaches_the_database(all_on_docs: list[dict[str, Any]]) -> None:
    policy = find(all_on_docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert len(policy["ingress"][0]["from"]) == 2
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (6432, "TCP")}
    job_labels = find(all_on_docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= job_labels.items()


# --- values validation ---------------------------------------------------------------------------


BAD_VALUES = {
    "replicaCount as text": {**REQUIRED, "replicaCount": "two"},
    "unknown top-level key": {**REQUIRED, "replicas": 3},
    "misspelt nested key": {**REQUIRED, "config": {"dbPoolMaxSise": 5}},
    "unknown setting": {**REQUIRED, "config": {"databaseUrl": DATABASE_URL}},
    "boolean as text": {**REQUIRED, "autoscaling": {"enabled": "yes"}},
    "bad enum": {**REQUIRED, "config": {"quotaPolicy": "drop"}},
    "number out of range": {**REQUIRED, "config": {"dbPoolMaxSize": 0}},
    "missing database": {"auth": REQUIRED["auth"]},
    "not a postgres url": {**REQUIRED, "database": {"url": "mysql://db/broker"}},
    "no api keys": {"database": REQUIRED["database"]},
    "short api key": {**REQUIRED, "auth": {"apiKeys": [{"tenant": "acme", "key": "short"}]}},
    "bad tenant name": {**REQUIRED, "auth": {"apiKeys": [{"tenant": "a b", "key": "k" * 20}]}},
    "unknown probe field": {**REQUIRED, "probes": {"liveness": {"path": "/"}}},
    "unknown securityContext field": {**REQUIRED, "containerSecurityContext": {"readOnlyRootFS": True}},
    "bad pdb value": {**REQUIRED, "podDisruptionBudget": {"maxUnavailable": "half"}},
    "pod label hijacks the selector": {**REQUIRED, "podLabels": {"app.kubernetes.io/component": "x"}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_schema_rejects_bad_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(chart.merge_values(values))
    with pytest.raises(helm_python.HelmValuesError):
        render(values)


@pytest.mark.parametrize("values", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_schema_accepts_good_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(CHART_DIR) as chart:
        chart.validate_schema(chart.merge_values(values))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"auth": REQUIRED["auth"]}, "a database is required"),
        ({"database": REQUIRED["database"]}, "API keys are required"),
        ({**REQUIRED, "database": {"url": DATABASE_URL, "existingSecret": "pg"}}, "not both"),
        (
            {**EXISTING_SECRETS, "database": {"existingSecret": "pg", "readUrl": DATABASE_URL}},
            "existingSecretReadKey",
        ),
    ],
    ids=["no database", "no api keys", "url and existingSecret", "readUrl and existingSecret"],
)
def test_templates_fail_on_bad_values_even_without_the_schema(
    values: dict[str, Any], message: str, tmp_path: Path
) -> None:
    """The `fail` guards in _helpers.tpl hold even where a schema is skipped (`--skip-schema-validation`)."""
    chart_copy = Path(shutil.copytree(CHART_DIR, tmp_path / "session-broker"))
    (chart_copy / "values.schema.json").unlink()
    with (
        helm_python.Chart.load(chart_copy) as chart,
        pytest.raises(helm_python.HelmRenderError, match=message),
    ):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_schema_is_valid_and_values_pass_check_jsonschema(tmp_path: Path) -> None:
    """A second, independent JSON Schema implementation agrees with Helm's."""
    schema = CHART_DIR / "values.schema.json"
    meta = subprocess.run(
        [tool("check-jsonschema"), "--check-metaschema", str(schema)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert meta.returncode == 0, meta.stdout + meta.stderr
    with helm_python.Chart.load(CHART_DIR) as chart:
        good = chart.merge_values(REQUIRED)
        bad = chart.merge_values({**REQUIRED, "replicaCount": "two", "config": {"logLevl": "INFO"}})
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    command = [tool("check-jsonschema"), "--schemafile", str(schema)]
    ok = subprocess.run([*command, str(tmp_path / "good.json")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rejected = subprocess.run(
        [*command, str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=60
    )
    assert rejected.returncode == 1
    assert "replicaCount" in rejected.stdout and "logLevl" in rejected.stdout


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path


def test_schema_covers_and_describes_every_value() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    definitions = schema["definitions"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        return definitions[ref.rsplit("/", 1)[1]] if ref else node

    def check_objects(node: dict[str, Any], where: str) -> None:
        node = resolve(node)
        if "items" in node:
            check_objects(node["items"], f"{where}[]")
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
            for key, child in node["properties"].items():
                check_objects(child, f"{where}.{key}")

    check_objects(schema, "values")
    values = load_yaml(CHART_DIR / "values.yaml")
    for path in leaf_paths(values):
        node: dict[str, Any] = schema
        described = False
        for part in path.split("."):
            node = resolve(node)
            if isinstance(node.get("additionalProperties"), dict):
                break  # a string map (labels, annotations): its keys are the user's
            assert part in node.get("properties", {}), f"{path} is not in values.schema.json"
            node = node["properties"][part]
            described = described or "description" in node
        assert described, f"{path} has no description"


def test_readme_documents_every_value() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.MULTILINE))
    values = load_yaml(CHART_DIR / "values.yaml")
    assert sorted(set(leaf_paths(values)) - rows) == []
    assert sorted(rows - set(leaf_paths(values))) == []


def test_notes_render_the_connection_budget() -> None:
    notes = render(load_yaml(ALL_ON_VALUES))["session-broker/templates/NOTES.txt"]
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:80/v1" in notes
    assert "8 pods x 2 worker(s) x 10 (dbPoolMaxSize) = 160" in notes
    assert "CronJob" in notes


YAMLLINT_CONFIG = json.dumps(
    {
        "extends": "default",
        "rules": {
            # Helm output conventions, not defects: long lines (dashboard JSON, URLs), no leading
            # "---", a blank line where a template's first action was trimmed, toYaml's unindented
            # sequences.
            "line-length": "disable",
            "document-start": "disable",
            "empty-lines": {"max-start": 1},
            "indentation": {"spaces": 2, "indent-sequences": "whatever"},
        },
    }
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_yaml_has_no_duplicate_keys_or_syntax_slips(scenario: str, tmp_path: Path) -> None:
    # yaml.safe_load (and kubectl) silently keep the last of two equal keys; yamllint reports them.
    files = []
    for path, text in render(SCENARIOS[scenario]).items():
        if path.endswith(".yaml") and text.strip():
            target = tmp_path / Path(path).name
            target.write_text(text)
            files.append(str(target))
    result = subprocess.run(
        [tool("yamllint"), "--strict", "-f", "parsable", "-d", YAMLLINT_CONFIG, *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_read_url_reaches_the_pods_from_a_secret() -> None:
    standby = "postgresql://broker:secret@db-standby.example.internal:5432/broker"
    docs = manifests(render({**REQUIRED, "database": {"url": DATABASE_URL, "readUrl": standby}}))
    container = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    reference = env_of(container)["SESSION_BROKER_READ_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret_data(find(docs, "Secret", FULLNAME))[reference["key"]] == standby
    own = manifests(
        render(
            {
                **EXISTING_SECRETS,
                "database": {**EXISTING_SECRETS["database"], "existingSecretReadKey": "ro-uri"},
            }
        )
    )
    container = find(own, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["SESSION_BROKER_READ_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "pg-app",
        "key": "ro-uri",
    }
    default = find(manifests(render(REQUIRED)), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "SESSION_BROKER_READ_DATABASE_URL" not in env_of(default)
