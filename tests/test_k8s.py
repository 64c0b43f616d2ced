"""deploy/k8s (the kustomize base and its production overlay) against the Kubernetes schemas, the
trust boundaries, the hardening every pod must have, the settings the code reads, and
docker-compose.yml, so that the two deployments cannot drift apart.

kustomize is not a dependency: `render` below implements the part of it the kustomizations use
(resources, namespace, images, strategic-merge patches), and refuses any other field. When
`kubectl` is installed, its built-in kustomize renders both as well and must agree exactly.

The network test computes the graph of allowed (from, to, protocol, port) edges from the
NetworkPolicies, as a cluster enforces them (an edge between two pods needs the egress policy of
the one AND the ingress policy of the other), and compares it with the expected graph."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import ipaddress
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
PRODUCTION = K8S / "overlays" / "production"
OPERATIONS = ROOT / "docs" / "operations.md"
NAMESPACE = "cef"
# The Kubernetes version the manifests are validated for: kubernetes-validate ships its schemas
# with the package (no download), and they are read from there.
KUBERNETES_VERSION = "1.35"
UID = 10001

Doc = dict[str, Any]


@dataclass(frozen=True)
class Workload:
    """A service's pods: its settings prefix, ports, and what the deployment gives it."""

    name: str
    prefix: str
    module: str
    port: int | None  # the app port (`http`); None: no HTTP listener (the workers)
    metrics_port: int
    image: str
    secret: str
    compose_name: str


WORKLOADS = {
    w.name: w
    for w in (
        Workload("web", "CEF_WEB_", "cef_web", 8000, 9000, "cef-web", "cef-web-keys", "web"),
        Workload(
            "tokeniser",
            "CEF_TOKENISER_",
            "cef_tokeniser",
            8001,
            9001,
            "cef-tokeniser",
            "cef-tokeniser-keys",
            "tokeniser",
        ),
        Workload("cef-api", "CEF_API_", "cef_api", 8002, 9002, "cef-api", "cef-api-keys", "cef-api"),
        Workload("audit", "CEF_AUDIT_", "cef_audit", 8003, 9003, "cef-audit", "cef-audit-keys", "audit"),
        # `cef worker` is in the `cef` command, which only the tools image holds; it is the CEF API
        # for its peers (its settings, its key).
        Workload("cef-worker", "CEF_API_", "cef_api", None, 9004, "cef-tools", "cef-api-keys", "cef-api"),
    )
}
MIGRATION = "cef-migrate"
ROTATION = "tokeniser-keys-rotate"  # a suspended CronJob: `cef keys rotate`, started by hand
PREFIX_MODULES = {
    "CEF_WEB_": "cef_web",
    "CEF_TOKENISER_": "cef_tokeniser",
    "CEF_API_": "cef_api",
    "CEF_AUDIT_": "cef_audit",
}

# What the operator creates before applying (docs/operations.md): never in these files.
EXTERNAL_SECRETS = {
    "cef-web-keys": {"web.pem", "pgpass"},
    "cef-web-oidc": {"client-secret"},
    "cef-api-keys": {"cef-api.pem", "pgpass", "queue.key"},
    "cef-tokeniser-keys": {"tokeniser.pem", "master.key", "pgpass"},
    "cef-audit-keys": {"audit.pem", "pgpass"},
    "cef-migrate": {"pgpass"},
}
EXTERNAL_CONFIGMAPS = {"cef-service-jwks": {"cef-api.jwks.json", "tokeniser.jwks.json", "web.jwks.json"}}

# --- rendering a kustomization -------------------------------------------------------------------

KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
# List fields a strategic-merge patch merges item by item (by this key) rather than replaces.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
CLUSTER_SCOPED = {"Namespace"}


def load_documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def strategic_merge(target: Any, patch: Any, field: str | None = None) -> Any:
    """Kubernetes' strategic merge, for the fields the patches use: maps merge key by key, the
    lists of MERGE_KEYS merge item by item (new items first, as kustomize writes them), other
    lists and scalars are replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            merged[key] = strategic_merge(target[key], value, key) if key in target else copy.deepcopy(value)
        return merged
    if isinstance(target, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        patched = {item[key]: item for item in patch}
        existing = {item[key] for item in target}
        added = [copy.deepcopy(item) for item in patch if item[key] not in existing]
        return added + [
            strategic_merge(item, patched[item[key]]) if item[key] in patched else item for item in target
        ]
    return copy.deepcopy(patch)


def _split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # no tag, or the colon was a registry's port
        return image, None
    return name, tag


def _set_images(doc: Doc, images: list[dict[str, str]]) -> None:
    spec = pod_spec(doc)
    if spec is None:
        return
    for container in spec.get("initContainers", []) + spec["containers"]:
        name, tag = _split_image(container["image"])
        for image in images:
            if image["name"] == name:
                name, tag = image.get("newName", name), image.get("newTag", tag)
        container["image"] = f"{name}:{tag}" if tag else name


def render(directory: Path) -> list[Doc]:
    """The documents `kustomize build directory` prints, for the fields these kustomizations use."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: kustomization fields this renderer does not implement: {unknown}"
    docs: list[Doc] = []
    for resource in kustomization["resources"]:
        path = directory / resource
        docs += render(path) if path.is_dir() else load_documents(path)
    for entry in kustomization.get("patches", []):
        assert set(entry) == {"path"}, f"{directory}: only strategic-merge patches from files: {entry}"
        for patch in load_documents(directory / entry["path"]):
            matches = [
                i for i, d in enumerate(docs) if (d["kind"], name_of(d)) == (patch["kind"], name_of(patch))
            ]
            assert len(matches) == 1, (
                f"{entry['path']}: patches {patch['kind']}/{name_of(patch)}, found {len(matches)}"
            )
            docs[matches[0]] = strategic_merge(docs[matches[0]], patch)
    for doc in docs:
        _set_images(doc, kustomization.get("images", []))
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def name_of(doc: Doc) -> str:
    return str(doc["metadata"]["name"])


def pod_template(doc: Doc) -> dict[str, Any] | None:
    """The pod template of a workload (Deployment, Job, CronJob); None for other kinds."""
    if doc["kind"] in ("Deployment", "Job"):
        return dict(doc["spec"]["template"])
    if doc["kind"] == "CronJob":
        return dict(doc["spec"]["jobTemplate"]["spec"]["template"])
    return None


def pod_spec(doc: Doc) -> dict[str, Any] | None:
    template = pod_template(doc)
    return None if template is None else dict(template["spec"])


def pod_labels(doc: Doc) -> dict[str, str]:
    template = pod_template(doc)
    assert template is not None
    return dict(template["metadata"]["labels"])


def identity(doc: Doc) -> str:
    """The name the pods go by in the NetworkPolicies (a maintenance CronJob's pods are the
    migration Job's)."""
    return pod_labels(doc)["app.kubernetes.io/name"]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {name_of(d): d for d in docs if d["kind"] == kind}


RENDERINGS = {"base": BASE, "production": PRODUCTION}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return render(RENDERINGS[request.param])


@pytest.fixture(scope="module")
def production() -> list[Doc]:
    return render(PRODUCTION)


def _key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], name_of(doc)


@pytest.mark.parametrize("which", sorted(RENDERINGS))
def test_the_renderer_agrees_with_kubectl_kustomize(which: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are checked as this module renders them")
    result = subprocess.run(
        [kubectl, "kustomize", str(RENDERINGS[which])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = sorted((d for d in yaml.safe_load_all(result.stdout) if d), key=_key)
    ours = sorted(render(RENDERINGS[which]), key=_key)
    assert [_key(d) for d in ours] == [_key(d) for d in theirs]
    for mine, kustomized in zip(ours, theirs, strict=True):
        assert mine == kustomized, f"{_key(mine)} differs from kubectl kustomize's"


def test_strategic_merge_merges_named_lists_and_replaces_others() -> None:
    target = {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}], "args": ["1", "2"]}
    patch = {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}], "args": ["3"]}
    assert strategic_merge(target, patch) == {
        "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]}],
        "args": ["3"],
    }
    assert _split_image("registry:5000/cef/web") == ("registry:5000/cef/web", None)
    assert _split_image("registry:5000/cef/web:1.2") == ("registry:5000/cef/web", "1.2")


# --- every manifest against the Kubernetes schemas ---------------------------------------------------


def _source_documents() -> Iterator[tuple[str, Doc]]:
    """Every complete manifest in the files (the overlay's patch files are partial: they are
    checked once applied, in the rendered overlay)."""
    patch_files = {
        entry["path"] for entry in yaml.safe_load((PRODUCTION / "kustomization.yaml").read_text())["patches"]
    }
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or (path.parent == PRODUCTION and path.name in patch_files):
            continue
        for index, doc in enumerate(load_documents(path)):
            yield f"{path.relative_to(K8S)}#{index}", doc


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must work offline: any connection attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _validate(doc: Doc, where: str) -> None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")


@pytest.mark.usefixtures("no_network")
def test_every_manifest_file_is_valid_kubernetes() -> None:
    checked = 0
    for where, doc in _source_documents():
        _validate(doc, where)
        checked += 1
    assert checked >= 30


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("which", sorted(RENDERINGS))
def test_every_rendered_manifest_is_valid_kubernetes(which: str) -> None:
    docs = render(RENDERINGS[which])
    for doc in docs:
        _validate(doc, f"{which}: {doc['kind']}/{name_of(doc)}")
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"]["namespace"] == NAMESPACE


def test_strict_validation_refuses_a_misplaced_field() -> None:
    # The schemas catch a misindented selector (matchLabels beside podSelector, not in it).
    import kubernetes_validate

    policy = next(d for d in render(BASE) if d["kind"] == "NetworkPolicy" and name_of(d) == "cef-api")
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][0]["from"][0] = {"podSelector": None, "matchLabels": {"a": "b"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# --- the shape of the deployment -------------------------------------------------------------------


def test_every_part_is_there(rendered: list[Doc]) -> None:
    deployments = by_kind(rendered, "Deployment")
    assert set(deployments) == set(WORKLOADS)
    assert set(by_kind(rendered, "Job")) == {MIGRATION}
    assert set(by_kind(rendered, "CronJob")) == {ROTATION}
    assert by_kind(rendered, "CronJob")[ROTATION]["spec"]["suspend"] is True
    assert identity(by_kind(rendered, "CronJob")[ROTATION]) == MIGRATION
    assert set(by_kind(rendered, "Service")) == set(WORKLOADS) | {"postgres"}
    assert set(by_kind(rendered, "ServiceAccount")) == set(WORKLOADS) | {MIGRATION}
    assert set(by_kind(rendered, "Namespace")) == {NAMESPACE}
    labels = by_kind(rendered, "Namespace")[NAMESPACE]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    # No Secret is ever part of the manifests: the operator creates them (docs/operations.md).
    assert not by_kind(rendered, "Secret")


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return list(spec.get("initContainers", [])) + list(spec["containers"])


def _workloads(docs: list[Doc]) -> dict[str, Doc]:
    return {name_of(d): d for d in docs if pod_spec(d) is not None}


HARDENED = {
    "runAsNonRoot": True,
    "runAsUser": UID,
    "runAsGroup": UID,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _quantity(value: Any) -> float:
    """A Kubernetes quantity (cpu or memory) as a number, to compare requests with limits."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def test_every_pod_is_hardened(rendered: list[Doc]) -> None:
    accounts = by_kind(rendered, "ServiceAccount")
    for name, doc in _workloads(rendered).items():
        spec = pod_spec(doc)
        assert spec is not None
        assert spec["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        # Its own account, with no API token: no CEF process talks to the Kubernetes API.
        assert spec["serviceAccountName"] == identity(doc)
        assert spec["automountServiceAccountToken"] is False
        assert accounts[identity(doc)]["automountServiceAccountToken"] is False
        # Service links would set e.g. CEF_API_PORT=tcp://…, inside the CEF API's settings prefix.
        assert spec["enableServiceLinks"] is False
        for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(forbidden), (name, forbidden)
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert not [v for v in volumes.values() if "hostPath" in v], name
        for container in _containers(spec):
            where = f"{name}/{container['name']}"
            assert container["securityContext"] == HARDENED, where
            resources = container["resources"]
            for kind in ("cpu", "memory"):
                request, limit = resources["requests"][kind], resources["limits"][kind]
                assert 0 < _quantity(request) <= _quantity(limit), (where, kind)
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # The root filesystem is read-only: /tmp is an emptyDir of the pod.
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_probes_and_ports(rendered: list[Doc]) -> None:
    for name, doc in by_kind(rendered, "Deployment").items():
        workload = WORKLOADS[name]
        spec = pod_spec(doc)
        assert spec is not None
        (container,) = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.pop("metrics") == workload.metrics_port
        if workload.port is None:
            # The workers listen on their metrics port only: their probes use it.
            assert ports == {}
            probed = {"metrics"}
        else:
            assert ports == {"http": workload.port}
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            probed = {"http"}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
            assert action is not None, (name, probe)
            assert {action["port"]} == probed, (name, probe)


def _dockerfile_cmd(relative: str) -> list[str]:
    text = re.sub(r"\\\n", " ", (ROOT / relative).read_text())
    (cmd,) = [line.strip()[4:] for line in text.splitlines() if line.strip().startswith("CMD ")]
    return list(json.loads(cmd))


def test_commands_and_images(rendered: list[Doc]) -> None:
    deployments = by_kind(rendered, "Deployment")
    for name, doc in deployments.items():
        workload = WORKLOADS[name]
        spec = pod_spec(doc)
        assert spec is not None
        (container,) = spec["containers"]
        image, _ = _split_image(container["image"])
        assert image.rsplit("/", 1)[-1] == workload.image
        if workload.port is None:
            assert container["command"] == ["cef", "worker"]
        else:
            # What the image runs alone, and what docker-compose.yml runs.
            directory = "cef-api" if workload.module == "cef_api" else workload.module.removeprefix("cef_")
            assert container["command"] == _dockerfile_cmd(f"services/{directory}/Dockerfile")
    job = by_kind(rendered, "Job")[MIGRATION]
    spec = pod_spec(job)
    assert spec is not None
    migrations = [c for c in _containers(spec) if c["name"].startswith("migrate-")]
    # One per service, the audit database first, from the tools image as the compose one-shots.
    assert [c["command"] for c in migrations] == [
        ["cef", "migrate", "--service", s] for s in ("audit", "tokeniser", "cef-api", "web")
    ]
    for container in _containers(spec):
        assert _split_image(container["image"])[0].rsplit("/", 1)[-1] == "cef-tools"
    assert spec["restartPolicy"] == "Never"
    from cef_cli.keys import KindChoice

    rotation = pod_spec(by_kind(rendered, "CronJob")[ROTATION])
    assert rotation is not None
    (container,) = rotation["containers"]
    assert container["command"][:4] == ["cef", "keys", "rotate", "--kind"]
    assert container["command"][4] in {k.value for k in KindChoice}
    assert _split_image(container["image"])[0].rsplit("/", 1)[-1] == "cef-tools"
    assert [c["configMapRef"]["name"] for c in container["envFrom"]] == ["cef-tokeniser-config"]


def test_production_pins_its_images(production: list[Doc]) -> None:
    for name, doc in _workloads(production).items():
        spec = pod_spec(doc)
        assert spec is not None
        for container in _containers(spec):
            _, tag = _split_image(container["image"])
            assert tag not in (None, "latest"), f"{name}/{container['name']}: {container['image']}"


def test_services_select_their_pods(rendered: list[Doc]) -> None:
    workloads = _workloads(rendered)
    for name, service in by_kind(rendered, "Service").items():
        if name == "postgres":
            assert service["spec"]["type"] == "ExternalName"
            continue
        assert service["spec"]["type"] == "ClusterIP"
        labels = pod_labels(workloads[name])
        assert service["spec"]["selector"].items() <= labels.items()
        assert workloads[name]["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        spec = pod_spec(workloads[name])
        assert spec is not None
        container_ports = {p["name"]: p["containerPort"] for p in spec["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert container_ports[port["targetPort"]] == port["port"], (name, port)


def test_autoscalers_target_existing_deployments(rendered: list[Doc]) -> None:
    deployments = by_kind(rendered, "Deployment")
    autoscalers = by_kind(rendered, "HorizontalPodAutoscaler")
    assert set(autoscalers) == {"cef-api", "cef-worker"}
    for hpa in autoscalers.values():
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments
        # The autoscaler owns the count: a replicas field would be reset by every apply.
        assert "replicas" not in deployments[target["name"]]["spec"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        # CPU utilisation is measured against requests.
        spec = pod_spec(deployments[target["name"]])
        assert spec is not None
        assert spec["containers"][0]["resources"]["requests"]["cpu"]
    for name in set(deployments) - set(autoscalers):
        assert deployments[name]["spec"]["replicas"] >= 1


def test_production_survives_a_drain(production: list[Doc]) -> None:
    deployments = by_kind(production, "Deployment")
    autoscalers = {
        hpa["spec"]["scaleTargetRef"]["name"]: hpa
        for hpa in by_kind(production, "HorizontalPodAutoscaler").values()
    }
    budgets = by_kind(production, "PodDisruptionBudget")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        labels = pod_labels(deployments[name])
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert budget["spec"]["maxUnavailable"] == 1
        least = (
            autoscalers[name]["spec"]["minReplicas"]
            if name in autoscalers
            else deployments[name]["spec"]["replicas"]
        )
        assert least >= 2, f"{name}: one pod, so a drain takes the service down"


# --- settings: the names the code reads, the values docker-compose.yml gives ----------------------------


def settings_class(module: str) -> Any:
    return importlib.import_module(f"{module}.config").Settings


def _config_maps(docs: list[Doc]) -> dict[str, dict[str, str]]:
    return {name: dict(d.get("data", {})) for name, d in by_kind(docs, "ConfigMap").items()}


def container_env(docs: list[Doc], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its ConfigMaps' variables, then its own (which win)."""
    maps = _config_maps(docs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, "environment comes from ConfigMaps only"
        env |= maps[source["configMapRef"]["name"]]
    for variable in container.get("env", []):
        assert set(variable) == {"name", "value"}, f"{variable['name']}: a literal value, never a reference"
        env[variable["name"]] = str(variable["value"])
    return env


def _all_containers(docs: list[Doc]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, doc in _workloads(docs).items():
        spec = pod_spec(doc)
        assert spec is not None
        for container in _containers(spec):
            yield name, spec, container


def _unknown_settings(env: dict[str, str], prefix: str) -> list[str]:
    fields = set(settings_class(PREFIX_MODULES[prefix]).model_fields)
    unknown = []
    for variable in env:
        field = variable.removeprefix(prefix).lower()
        if field not in fields:
            unknown.append(variable)
    return unknown


def test_every_variable_names_a_setting_of_its_service(rendered: list[Doc]) -> None:
    checked = 0
    for name, _, container in _all_containers(rendered):
        env = container_env(rendered, container)
        if not env:
            continue  # the init containers that copy the secrets' files
        if name == MIGRATION:
            service = container["name"].removeprefix("migrate-")
            prefix = next(w.prefix for w in WORKLOADS.values() if w.compose_name == service)
        elif name == ROTATION:
            prefix = "CEF_TOKENISER_"
        else:
            prefix = WORKLOADS[name].prefix
        for variable in env:
            assert variable.startswith(prefix), (
                f"{name}/{container['name']} gets {variable}, which it never reads"
            )
        assert _unknown_settings(env, prefix) == [], f"{name}/{container['name']}"
        checked += 1
    assert checked == len(WORKLOADS) + 4 + 1  # the four migrations, the key rotation
    # Every ConfigMap variable, used or not, names a setting.
    for config in _config_maps(rendered).values():
        for variable in config:
            prefix = next(p for p in PREFIX_MODULES if variable.startswith(p))
            assert _unknown_settings({variable: ""}, prefix) == []


def test_an_unknown_variable_is_caught() -> None:
    assert _unknown_settings({"CEF_API_DATABASE_URL": "", "CEF_API_DATABSE_URL": ""}, "CEF_API_") == [
        "CEF_API_DATABSE_URL"
    ]


def _compose_checks() -> ModuleType:
    """tests/test_compose.py, for its reading of docker-compose.yml (variables interpolated as
    `docker compose` does)."""
    spec = importlib.util.spec_from_file_location("cef_compose_checks", ROOT / "tests" / "test_compose.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cef_compose_checks"] = module
    spec.loader.exec_module(module)
    return module


# Variables the pods get that compose does not set, and why.
ADDED = {
    "METRICS_HOST",  # the metrics port is reached from Prometheus's pod, not the loopback
    "METRICS_PORT",
    "QUEUE_KEY_FILE",  # the validation queue's key-encryption key (the workers read the backing data)
    "VALIDATION_PROCESSES",  # a container sees its node's CPUs, not its limit
}
# Variables set to other values than compose's: the site's (overlays/production/site.yaml) and
# the peers' keys as files (base/config.yaml says why).
SITE_OR_TRUST = {"TRUSTED_ISSUERS", "OIDC_CLIENT_ID"}


@pytest.mark.parametrize("name", ["web", "tokeniser", "cef-api", "audit"])
def test_the_environment_is_composes(name: str) -> None:
    compose = _compose_checks().load_compose()
    docs = render(BASE)
    workload = WORKLOADS[name]
    spec = pod_spec(by_kind(docs, "Deployment")[name])
    assert spec is not None
    mine = {k.removeprefix(workload.prefix): v for k, v in container_env(docs, spec["containers"][0]).items()}
    theirs = {
        k.removeprefix(workload.prefix): str(v)
        for k, v in compose["services"][workload.compose_name]["environment"].items()
    }
    assert set(theirs) <= set(mine), f"{name}: compose sets {set(theirs) - set(mine)}, the pods do not"
    assert set(mine) - set(theirs) <= ADDED
    for variable in set(theirs) - SITE_OR_TRUST:
        assert mine[variable] == theirs[variable], f"{workload.prefix}{variable}"
    # The migration's URL is compose's one-shot's, exactly.
    job = pod_spec(by_kind(docs, "Job")[MIGRATION])
    assert job is not None
    (migration,) = [c for c in _containers(job) if c["name"] == f"migrate-{workload.compose_name}"]
    one_shot = compose["services"][_compose_checks().SERVICES[workload.compose_name].migrate]
    assert container_env(docs, migration) == {k: str(v) for k, v in one_shot["environment"].items()}


def _settings_of(
    docs: list[Doc], name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Any, dict[str, Any]]:
    """A workload's settings, built from its pods' environment as the service builds them."""
    spec = pod_spec(by_kind(docs, "Deployment")[name])
    assert spec is not None
    env = container_env(docs, spec["containers"][0])
    import os

    for variable in list(os.environ):
        if variable.startswith("CEF_"):
            monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)  # no .env file
    for variable, value in env.items():
        if value.startswith("/run/secrets/"):
            # A file the settings read when they are built: a stand-in with the same role.
            stand_in = tmp_path / Path(value).name
            stand_in.write_text("stand-in secret\n")
            value = str(stand_in)
        monkeypatch.setenv(variable, value)
    return settings_class(WORKLOADS[name].module)(), spec


def _mounted(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volume a file inside the container lives on."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    best: tuple[str, str] | None = None
    for mount in container.get("volumeMounts", []):
        target = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(target) and (best is None or len(target) > len(best[0])):
            best = (target, mount["name"])
    return volumes[best[1]] if best else None


# Who may call whom with what, as docker-compose.yml and tests/test_compose.py have it.
PEER_SCOPES = {
    "tokeniser": {"cef-api": ["tokenise", "detokenise"]},
    "cef-api": {"web": ["invoices:read", "invoices:submit", "invoices:validate", "reports:read"]},
    "audit": {"cef-api": ["audit:write"], "tokeniser": ["audit:write"], "web": ["audit:write", "audit:read"]},
    "web": {},
}


@pytest.mark.parametrize("name", ["web", "tokeniser", "cef-api", "audit"])
def test_the_settings_parse_and_keys_come_from_secrets(
    rendered: list[Doc], name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings, spec = _settings_of(rendered, name, monkeypatch, tmp_path)
    workload = WORKLOADS[name]
    (container,) = spec["containers"]
    assert settings.environment == "production"
    assert settings.dev_issuer_enabled is False
    assert (settings.service_name, settings.port, settings.host) == (name, workload.port, "0.0.0.0")
    assert (settings.effective_metrics_port, settings.metrics_host) == (workload.metrics_port, "0.0.0.0")
    # The database: the app role, no password in the URL, the pgpass from the service's Secret.
    url = make_url(settings.effective_database_url)
    assert (url.host, url.port, url.username, url.password) == ("postgres", 5432, f"{url.database}_app", None)
    key_files = [str(settings.signing_key_file), str(url.query["passfile"])]
    if name == "tokeniser":
        key_files.append(str(settings.master_key_file))
    if name == "cef-api":
        key_files.append(str(settings.queue_key_file))
    for path in key_files:
        volume = _mounted(spec, container, path)
        assert volume is not None, path
        assert "emptyDir" in volume, f"{path} is not on the copied secrets volume"
        # Copied there by the init container from the service's own Secret, which holds the file.
        (copier,) = spec["initContainers"]
        source = {m["name"]: m["mountPath"] for m in copier["volumeMounts"]}
        assert volume["name"] in source
        secret = next(v for v in spec["volumes"] if "secret" in v and v["name"] in source)["secret"]
        assert secret["secretName"] == workload.secret
        assert Path(path).name in EXTERNAL_SECRETS[workload.secret], path
    assert Path(str(settings.signing_key_file)).name == f"{name}.pem"
    # Trust: the peers' keys as files from the ConfigMap of public keys, each scope-capped as compose.
    issuers = {i.issuer: i for i in settings.trusted_issuers}
    peers = {k: v for k, v in issuers.items() if k in WORKLOADS}
    assert {k: sorted(v.allowed_scopes or []) for k, v in peers.items()} == {
        k: sorted(v) for k, v in PEER_SCOPES[name].items()
    }
    for peer, issuer in peers.items():
        assert issuer.jwks_url is None
        volume = _mounted(spec, container, str(issuer.jwks_file))
        assert volume is not None
        assert volume["configMap"]["name"] == "cef-service-jwks"
        assert Path(str(issuer.jwks_file)).name in {i["path"] for i in volume["configMap"]["items"]}
        assert Path(str(issuer.jwks_file)).name == f"{peer}.jwks.json"
    people = set(issuers) - set(peers)
    if name in ("cef-api", "audit"):
        (idp,) = people
        assert issuers[idp].jwks_url.startswith("https://")
    else:
        # The tokeniser verifies no person's token (and has no route to the identity provider);
        # the web app verifies none at all.
        assert people == set()
    if name == "web":
        assert settings.oidc_client_secret is not None
        assert settings.public_base_url.startswith("https://")
        secret_volume = _mounted(
            spec, container, container_env(rendered, container)["CEF_WEB_OIDC_CLIENT_SECRET_FILE"]
        )
        assert secret_volume is not None
        assert secret_volume["secret"]["secretName"] == "cef-web-oidc"


def test_the_workers_are_the_cef_api(
    rendered: list[Doc], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deployments = by_kind(rendered, "Deployment")
    api, worker = pod_spec(deployments["cef-api"]), pod_spec(deployments["cef-worker"])
    assert api is not None
    assert worker is not None
    api_env = container_env(rendered, api["containers"][0])
    worker_env = container_env(rendered, worker["containers"][0])
    # The CEF API's settings, but for the metrics port and the processes that fit the pod.
    differing = {k for k in api_env.keys() | worker_env.keys() if api_env.get(k) != worker_env.get(k)}
    assert differing <= {"CEF_API_METRICS_PORT", "CEF_API_VALIDATION_PROCESSES"}
    assert worker_env["CEF_API_METRICS_PORT"] == "9004"
    settings, _ = _settings_of(rendered, "cef-worker", monkeypatch, tmp_path)
    assert settings.effective_metrics_port == 9004
    assert make_url(settings.effective_database_url).get_backend_name() == "postgresql"
    cpus = _quantity(worker["containers"][0]["resources"]["limits"]["cpu"])
    assert settings.effective_validation_processes == cpus, "one validation process per CPU of the limit"
    secrets = [
        {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v} for spec in (api, worker)
    ]
    assert secrets[0] == secrets[1] == {"cef-api-keys"}


def test_one_identity_provider_everywhere(
    rendered: list[Doc], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    web, _ = _settings_of(rendered, "web", monkeypatch, tmp_path)
    for name in ("cef-api", "audit"):
        settings, _ = _settings_of(rendered, name, monkeypatch, tmp_path)
        assert web.oidc_issuer in {i.issuer for i in settings.trusted_issuers}, name


def test_peer_urls_name_services(rendered: list[Doc]) -> None:
    services = by_kind(rendered, "Service")
    found = 0
    for _, _, container in _all_containers(rendered):
        for variable, value in container_env(rendered, container).items():
            match = re.fullmatch(r"http://([a-z-]+):(\d+)", value)
            if variable.endswith("_URL") and match:
                host, port = match.group(1), int(match.group(2))
                assert port in {p["port"] for p in services[host]["spec"]["ports"]}, variable
                found += 1
    assert found >= 8


# --- secrets: referenced, never inlined ---------------------------------------------------------------

SECRET_VARIABLE = re.compile(r"(SECRET|PASSWORD|_KEY)$")


def test_secrets_are_referenced_not_inlined(rendered: list[Doc]) -> None:
    text = yaml.safe_dump_all(rendered)
    assert "PRIVATE KEY" not in text
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "a 256-bit key in hex"
    assert "secretKeyRef" not in text  # keys are files, never variables
    used_secrets: set[str] = set()
    for name, spec, container in _all_containers(rendered):
        for variable, value in container_env(rendered, container).items():
            assert not SECRET_VARIABLE.search(variable), (
                f"{name}: {variable} would hold a secret in a variable"
            )
            if variable.endswith("DATABASE_URL"):
                assert make_url(value).password is None
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "secret" in volume or "configMap" in volume:
                assert mount.get("readOnly") is True, f"{name}: {mount['mountPath']}"
    for name, doc in _workloads(rendered).items():
        spec = pod_spec(doc)
        assert spec is not None
        for volume in spec["volumes"]:
            if "secret" in volume:
                secret = volume["secret"]
                used_secrets.add(secret["secretName"])
                keys = {i["key"] for i in secret.get("items", [])} or EXTERNAL_SECRETS[secret["secretName"]]
                assert keys <= EXTERNAL_SECRETS[secret["secretName"]], name
            if "configMap" in volume:
                config = volume["configMap"]
                assert config["name"] in EXTERNAL_CONFIGMAPS
                assert {i["key"] for i in config["items"]} <= EXTERNAL_CONFIGMAPS[config["name"]]
    assert used_secrets == set(EXTERNAL_SECRETS)


def test_the_operations_guide_creates_every_secret() -> None:
    guide = OPERATIONS.read_text()
    for name, keys in {**EXTERNAL_SECRETS, **EXTERNAL_CONFIGMAPS}.items():
        kind = "configmap" if name in EXTERNAL_CONFIGMAPS else "secret generic"
        command = re.search(rf"kubectl [^\n]*create {kind} {name}\b(?:[^\n]*\\\n)*[^\n]*", guide)
        assert command, f"docs/operations.md does not create {name}"
        created = set(re.findall(r"--from-file=([\w.-]+)=", command.group(0)))
        assert created == keys, f"{name}: the guide creates {created}, the pods read {keys}"
    assert "kubectl apply -k deploy/k8s/overlays/production" in guide


# --- the network: allowed edges, exactly ------------------------------------------------------------------

Edge = tuple[str, str, str, int | str]
# Peers outside the namespace, by the selectors that name them.
OUTSIDE = {
    "ingress-controller": (
        {"kubernetes.io/metadata.name": "ingress-nginx"},
        {"app.kubernetes.io/name": "ingress-nginx"},
    ),
    "prometheus": ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"}),
    "kube-dns": ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}),
}
PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
    )
]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not labels.items() >= selector.get("matchLabels", {}).items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if not {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _database_block(docs: list[Doc]) -> str:
    """The address block of the PostgreSQL server (the allow-postgres policy's only peer)."""
    policy = by_kind(docs, "NetworkPolicy")["allow-postgres"]
    ((rule,),) = [policy["spec"]["egress"]]
    ((peer,),) = [rule["to"]]
    assert set(peer) == {"ipBlock"}
    assert "except" not in peer["ipBlock"]
    network = ipaddress.ip_network(peer["ipBlock"]["cidr"])
    assert network.prefixlen >= 24, "the database is one server (or a small subnet), not a network"
    return str(network)


def _peer_names(peer: dict[str, Any] | None, pods: dict[str, dict[str, str]], database: str) -> list[str]:
    if peer is None:
        return ["*anywhere*"]
    if set(peer) == {"podSelector"}:
        return [name for name, labels in pods.items() if _selects(peer["podSelector"], labels)]
    if set(peer) == {"namespaceSelector", "podSelector"}:
        for name, (namespace, labels) in OUTSIDE.items():
            if peer["namespaceSelector"] == {"matchLabels": namespace} and peer["podSelector"] == {
                "matchLabels": labels
            }:
                return [name]
        return [f"*{json.dumps(peer, sort_keys=True)}*"]
    if set(peer) == {"ipBlock"}:
        block = peer["ipBlock"]
        if block["cidr"] == database and "except" not in block:
            return ["postgres"]
        excluded = {ipaddress.ip_network(n) for n in block.get("except", [])}
        if block["cidr"] == "0.0.0.0/0" and excluded >= set(PRIVATE):
            return ["internet"]
        return [f"*ip {block['cidr']}*"]
    return [f"*{json.dumps(peer, sort_keys=True)}*"]


def _ports(rule: dict[str, Any], named: dict[str, tuple[str, int]] | None) -> list[tuple[str, int | str]]:
    if not rule.get("ports"):
        return [("*", "*")]
    result: list[tuple[str, int | str]] = []
    for port in rule["ports"]:
        number: int | str = port.get("port", "*")
        if "endPort" in port:
            number = f"{number}-{port['endPort']}"
        elif isinstance(number, str) and number != "*":
            # A named port is the destination pod's (its container port of that name).
            if named is None or number not in named:
                continue
            number = named[number][1]
        result.append((port.get("protocol", "TCP"), number))
    return result


def _overlap(a: int | str, b: int | str) -> bool:
    return a == b or "*" in (a, b)


def _narrower(out: Edge, into: Edge) -> Edge:
    """What an egress rule and an ingress rule allow together: the more specific of each."""
    protocol = into[2] if out[2] == "*" else out[2]
    port = into[3] if out[3] == "*" else out[3]
    return out[0], out[1], protocol, port


def network_edges(docs: list[Doc]) -> tuple[set[Edge], set[Edge]]:
    """The allowed edges, and the half-declared ones (one end allows, the other does not).

    An edge between two workloads of the namespace is allowed when a policy selecting the source
    allows it as egress AND one selecting the destination allows it as ingress. Peers outside the
    namespace (the database, the identity provider, DNS; the ingress controller, Prometheus) have
    only our end to check."""
    pods: dict[str, dict[str, str]] = {}
    named: dict[str, dict[str, tuple[str, int]]] = {}
    for doc in _workloads(docs).values():
        spec = pod_spec(doc)
        assert spec is not None
        ports = {
            p["name"]: (p.get("protocol", "TCP"), p["containerPort"])
            for c in spec["containers"]
            for p in c.get("ports", [])
        }
        # Workloads that share an identity (the migration and the maintenance jobs) must be alike.
        assert pods.setdefault(identity(doc), pod_labels(doc)) == pod_labels(doc)
        assert named.setdefault(identity(doc), ports) == ports
    database = _database_block(docs)
    policies = list(by_kind(docs, "NetworkPolicy").values())
    egress: set[Edge] = set()
    ingress: set[Edge] = set()
    for name, labels in pods.items():
        selecting = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], labels)]
        # Isolated both ways, else the policies would not be the whole story.
        assert any("Egress" in p["policyTypes"] for p in selecting), f"{name}: egress is not isolated"
        assert any("Ingress" in p["policyTypes"] for p in selecting), f"{name}: ingress is not isolated"
        for policy in selecting:
            for rule in policy.get("egress", []) if "Egress" in policy["policyTypes"] else []:
                for peer in rule.get("to") or [None]:
                    for target in _peer_names(peer, pods, database):
                        for protocol, port in _ports(rule, named.get(target)):
                            egress.add((name, target, protocol, port))
            for rule in policy.get("ingress", []) if "Ingress" in policy["policyTypes"] else []:
                for peer in rule.get("from") or [None]:
                    for source in _peer_names(peer, pods, database):
                        for protocol, port in _ports(rule, named[name]):
                            ingress.add((source, name, protocol, port))
    inside = set(pods)
    outgoing = {e for e in egress if e[1] in inside}
    incoming = {e for e in ingress if e[0] in inside}
    both = {
        _narrower(out, into)
        for out in outgoing
        for into in incoming
        if out[:2] == into[:2] and _overlap(out[2], into[2]) and _overlap(out[3], into[3])
    }
    half = {out for out in outgoing if not any(_narrower(out, into) in both for into in incoming)}
    half |= {into for into in incoming if not any(_narrower(out, into) in both for out in outgoing)}
    outward = {e for e in egress if e[1] not in inside}
    inward = {e for e in ingress if e[0] not in inside}
    return both | outward | inward, half


def expected_edges() -> set[Edge]:
    app = {w.name: w.port for w in WORKLOADS.values() if w.port is not None}
    calls = {
        "web": ["cef-api", "audit"],
        "cef-api": ["tokeniser", "audit"],
        "cef-worker": ["tokeniser", "audit"],  # the CEF API's workers: its key, its peers
        "tokeniser": ["audit"],
    }
    edges: set[Edge] = {("ingress-controller", "web", "TCP", 8000)}
    edges |= {(source, target, "TCP", app[target]) for source, targets in calls.items() for target in targets}
    everyone = [*WORKLOADS, MIGRATION]
    edges |= {(name, "postgres", "TCP", 5432) for name in everyone}
    edges |= {(name, "kube-dns", protocol, 53) for name in everyone for protocol in ("UDP", "TCP")}
    edges |= {(name, "internet", "TCP", 443) for name in ("web", "cef-api", "audit")}
    edges |= {("prometheus", w.name, "TCP", w.metrics_port) for w in WORKLOADS.values()}
    return edges


def test_the_network_allows_exactly_the_trust_boundaries(rendered: list[Doc]) -> None:
    allowed, half = network_edges(rendered)
    assert half == set(), "edges declared at one end only"
    assert allowed - expected_edges() == set(), "allowed, but not a trust boundary"
    assert expected_edges() - allowed == set(), "a trust boundary the policies do not allow"
    (deny,) = [
        p
        for p in by_kind(rendered, "NetworkPolicy").values()
        if p["spec"]["podSelector"] == {} and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ]
    assert "ingress" not in deny["spec"]
    assert "egress" not in deny["spec"]


def _policy(docs: list[Doc], name: str) -> Doc:
    return by_kind(docs, "NetworkPolicy")[name]


def test_an_edge_needs_both_ends() -> None:
    docs = render(BASE)
    _policy(docs, "cef-api")["spec"]["ingress"] = [
        r for r in _policy(docs, "cef-api")["spec"]["ingress"] if r["ports"][0]["port"] != 8002
    ]
    allowed, half = network_edges(docs)
    assert ("web", "cef-api", "TCP", 8002) not in allowed
    assert half == {("web", "cef-api", "TCP", 8002)}


def test_a_wider_rule_shows_as_an_unexpected_edge() -> None:
    docs = render(BASE)
    # A rule without ports, and one to any address: both must show up, not disappear.
    _policy(docs, "allow-postgres")["spec"]["egress"][0].pop("ports")
    _policy(docs, "allow-dns")["spec"]["egress"].append({"ports": [{"protocol": "TCP", "port": 443}]})
    allowed, _ = network_edges(docs)
    assert ("tokeniser", "postgres", "*", "*") in allowed - expected_edges()
    assert ("tokeniser", "*anywhere*", "TCP", 443) in allowed - expected_edges()


def test_an_open_end_is_narrowed_by_the_other() -> None:
    # Egress to the audit service on any port is still only what the audit service admits.
    docs = render(BASE)
    _policy(docs, "tokeniser")["spec"]["egress"][0].pop("ports")
    allowed, half = network_edges(docs)
    assert allowed == expected_edges()
    assert half == set()


def test_the_metadata_service_and_the_cluster_are_not_the_internet(rendered: list[Doc]) -> None:
    (rule,) = _policy(rendered, "allow-identity-provider")["spec"]["egress"]
    (peer,) = rule["to"]
    assert {ipaddress.ip_network(n) for n in peer["ipBlock"]["except"]} == set(PRIVATE)
    assert rule["ports"] == [{"protocol": "TCP", "port": 443}]


# --- the site's values live in one file ---------------------------------------------------------------

EXAMPLE_SITE = {
    "idp.example.nhs.uk": "login.site.test",
    "cef.example.nhs.uk": "cef.site.test",
    "cef-db.example.nhs.uk": "db.site.test",
    "192.0.2.10/32": "198.51.100.7/32",
    "CEF_WEB_OIDC_CLIENT_ID: cef-web\n": "CEF_WEB_OIDC_CLIENT_ID: site-client\n",
}


def test_the_site_file_sets_every_site_value(tmp_path: Path) -> None:
    copy_root = tmp_path / "k8s"
    shutil.copytree(K8S, copy_root)
    site = copy_root / "overlays" / "production" / "site.yaml"
    text = site.read_text()
    for example, ours in EXAMPLE_SITE.items():
        assert example in text, f"site.yaml does not set {example!r}"
        text = text.replace(example, ours)
    site.write_text(text)
    docs = render(copy_root / "overlays" / "production")
    rendered_text = yaml.safe_dump_all(docs, width=10_000)
    for example in ("idp.example.nhs.uk", "cef.example.nhs.uk", "cef-db.example.nhs.uk", "192.0.2.10"):
        assert example not in rendered_text, f"{example} is still in the rendered overlay"
    assert _config_maps(docs)["cef-web-config"]["CEF_WEB_OIDC_CLIENT_ID"] == "site-client"
    assert by_kind(docs, "Service")["postgres"]["spec"]["externalName"] == "db.site.test"
    allowed, _ = network_edges(docs)
    assert allowed == expected_edges()
