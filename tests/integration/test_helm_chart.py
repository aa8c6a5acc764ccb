"""The Helm chart, rendered by the real `helm template`, runs what docker-compose.yml runs.

Commands the CLI parses (compose's command lines), ports that agree with probes, Services and
Prometheus annotations, probe paths the real apps answer, settings every service accepts, pods
that restart, are probed, bounded and non-root, and the optional parts (GPU, Ingress, node
network, UDP port range) rendered as asked. Schema validity is `deploy/helm/validate.sh`'s job
(kubeconform, in ./dev test); this module checks what a schema cannot know.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from services.cli import build_parser, register_all_settings
from services.gateway.app import create_gateway_app
from services.gateway.settings import GatewaySettings
from services.ingest.app import create_ingest_app
from services.ingest.settings import IngestSettings
from shared.metrics import Metrics
from shared.service import MetricsServer, ServiceContext, serve_metrics
from shared.settings import (
    ENV_ROOT,
    RESERVED_PREFIXES,
    CommonSettings,
    SettingsError,
    check_environment,
    registered_settings,
)
from shared.transport.factory import build_transports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "classpulse"
SERVICES = ("ingest", "inference", "transcribe", "aggregator", "gateway")
KUBE = "1.30.0"
Doc = dict[str, Any]


def _helm() -> str:
    helm = os.environ.get("CLASSPULSE_TEST_HELM")
    if not helm or not os.access(helm, os.X_OK):
        pytest.fail(
            "helm is not configured: set CLASSPULSE_TEST_HELM (./dev test builds helm and sets it)", pytrace=False
        )
    return helm


def _helm_template(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_helm(), "template", "t", str(CHART), "--kube-version", KUBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


TOKEN_SECRET = "test-only-token-secret-0123456789abcdef"


def render(*args: str) -> list[Doc]:
    """Rendered manifests; the required token secret is set unless a values file or ``args`` bring one."""
    if not any(a == "-f" or a.startswith("secret.") for a in args):
        args = ("--set", f"secret.tokenSecret={TOKEN_SECRET}", *args)
    done = _helm_template(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def default() -> list[Doc]:
    return render()


@pytest.fixture(scope="module")
def full() -> list[Doc]:
    return render("-f", str(CHART / "ci" / "full-values.yaml"))


@pytest.fixture(scope="module")
def port_range() -> list[Doc]:
    return render("-f", str(CHART / "ci" / "port-range-values.yaml"))


def one(docs: list[Doc], kind: str, component: str | None = None) -> Doc:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (component is None or d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
    ]
    assert len(found) == 1, (kind, component, [d["metadata"]["name"] for d in found])
    return found[0]


def workloads(docs: list[Doc]) -> dict[str, Doc]:
    out = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    assert set(out) == set(SERVICES)
    return out


def pod(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def container(workload: Doc) -> Doc:
    containers = pod(workload)["containers"]
    assert len(containers) == 1
    c: Doc = containers[0]
    return c


def flag(argv: list[str], name: str) -> str:
    assert name in argv, (name, argv)
    return argv[argv.index(name) + 1]


def listen_port(component: str, argv: list[str]) -> int:
    return int(flag(argv, "--port" if component in ("ingest", "gateway") else "--metrics-port"))


def compose_commands() -> dict[str, list[str]]:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    return {name: services[name]["command"] for name in SERVICES}


def pod_env(docs: list[Doc], workload: Doc) -> dict[str, str]:
    """What the pod's process sees: ConfigMap and Secret (envFrom), then the container's env."""
    env: dict[str, str] = {}
    names = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    for source in container(workload)["envFrom"]:
        ref = source.get("configMapRef") or source["secretRef"]
        if ref["name"] in names:  # an existingSecret is not rendered
            doc = names[ref["name"]]
            env.update(doc.get("data") or doc.get("stringData") or {})
    env.update({e["name"]: e["value"] for e in container(workload).get("env", [])})
    return env


def test_commands_are_composes_and_the_cli_parses_them(default: list[Doc], full: list[Doc]) -> None:
    parser = build_parser()
    compose = compose_commands()
    for docs in (default, full):
        for component, workload in workloads(docs).items():
            argv = container(workload)["args"]
            assert argv[: len(compose[component])] == compose[component], component
            assert parser.parse_args(argv).command == component
    assert flag(container(workloads(full)["ingest"])["args"], "--workers") == "auto"


def test_ports_probes_services_and_scrape_annotations_agree(default: list[Doc], full: list[Doc]) -> None:
    for docs in (default, full):
        for component, workload in workloads(docs).items():
            c = container(workload)
            argv = c["args"]
            port = listen_port(component, argv)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert list(ports.values()) == [port], component
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert ports[c[probe]["httpGet"]["port"]] == port, (component, probe)
            annotations = workload["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(port), component
            assert annotations["prometheus.io/path"] == "/metrics"
            # reachable from other pods: every listener on 0.0.0.0
            if component in ("ingest", "gateway"):
                assert flag(argv, "--host") == "0.0.0.0"
            elif component in ("inference", "transcribe"):
                assert flag(argv, "--metrics-host") == "0.0.0.0"
            else:
                assert pod_env(docs, workload)["CLASSPULSE_AGGREGATOR_METRICS_HOST"] == "0.0.0.0"
        for service in (d for d in docs if d["kind"] == "Service"):
            component = service["metadata"]["labels"]["app.kubernetes.io/component"]
            names = {p["name"] for p in container(workloads(docs)[component])["ports"]}
            assert {p["targetPort"] for p in service["spec"]["ports"]} <= names, component
            assert (
                service["spec"]["selector"].items()
                <= workloads(docs)[component]["spec"]["template"]["metadata"]["labels"].items()
            )


@pytest.fixture
async def ingest_and_gateway() -> AsyncIterator[dict[str, TestClient[Any, Any]]]:
    common = CommonSettings()
    metrics = Metrics(CollectorRegistry())
    ingest = create_ingest_app(
        settings=IngestSettings(), common=common, transports=build_transports(common, metrics=metrics), metrics=metrics
    )
    gateway = create_gateway_app(
        settings=GatewaySettings(),
        common=common,
        transports=build_transports(common, metrics=metrics),
        metrics=metrics,
    )
    async with TestClient(TestServer(ingest)) as i, TestClient(TestServer(gateway)) as g:
        yield {"ingest": i, "gateway": g}


async def test_probe_paths_are_answered_by_the_real_services(
    default: list[Doc], ingest_and_gateway: dict[str, TestClient[Any, Any]]
) -> None:
    for component, workload in workloads(default).items():
        path = container(workload)["livenessProbe"]["httpGet"]["path"]
        assert {container(workload)[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe")} == {path}
        if component in ingest_and_gateway:
            response = await ingest_and_gateway[component].get(path)
            assert response.status == 200, (component, path)
        else:  # inference, transcribe and aggregator: the boot path's metrics + health server (shared.service)
            context = ServiceContext(name=component, common=CommonSettings(), metrics=Metrics(CollectorRegistry()))
            server = serve_metrics(MetricsServer(port=0), context)
            assert server is not None
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{server.server_port}{path}") as r:
                        assert r.status == 200, (component, path)
            finally:
                server.shutdown()
                server.server_close()


def _accept(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every service's boot check and settings classes accept ``env`` (as run_service does)."""
    register_all_settings()
    for name in list(os.environ):
        if name.upper().startswith(ENV_ROOT) and not name.upper().startswith(RESERVED_PREFIXES):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check_environment()
    for cls in registered_settings():
        cls()  # values within their bounds


def test_every_service_accepts_every_pods_settings(
    default: list[Doc], full: list[Doc], port_range: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    for docs in (default, full, port_range):
        for workload in workloads(docs).values():
            env = pod_env(docs, workload)
            assert env["CLASSPULSE_TRANSPORT"] == "distributed"
            with monkeypatch.context() as m:
                _accept({k: v for k, v in env.items() if k.startswith(ENV_ROOT)}, m)
    secret = one(default, "Secret")["stringData"]
    assert set(secret) == {"CLASSPULSE_REDIS_URL", "CLASSPULSE_TOKEN_SECRET"}
    assert secret["CLASSPULSE_TOKEN_SECRET"] == TOKEN_SECRET


def test_a_misspelt_setting_in_config_reaches_the_services_check(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render("--set", "config.CLASSPULSE_INGEST_MAX_PUBLISHER=10")
    env = pod_env(docs, workloads(docs)["gateway"])
    with pytest.raises(
        SettingsError, match=re.escape("MAX_PUBLISHER (did you mean CLASSPULSE_INGEST_MAX_PUBLISHERS?)")
    ):
        _accept(env, monkeypatch)


def test_every_pod_restarts_is_probed_bounded_and_runs_non_root(default: list[Doc], full: list[Doc]) -> None:
    for docs in (default, full):
        for component, workload in workloads(docs).items():
            spec, c = pod(workload), container(workload)
            assert spec["restartPolicy"] == "Always", component
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), component
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), (component, bound)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["runAsUser"] != 0
            assert spec["automountServiceAccountToken"] is False
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            # a read-only root needs a writable /tmp (HOME, matplotlib, ingest's worker registry)
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
            assert {"HOME": "/tmp"}.items() <= {e["name"]: e["value"] for e in c["env"]}.items()


def test_aggregator_keeps_its_rocksdb_dir_on_a_volume(default: list[Doc], full: list[Doc]) -> None:
    for docs, claimed in ((default, True), (full, False)):
        aggregator = workloads(docs)["aggregator"]
        assert aggregator["kind"] == "StatefulSet"
        data_dir = pod_env(docs, aggregator)["CLASSPULSE_AGGREGATOR_DATA_DIR"]
        mount = next(m for m in container(aggregator)["volumeMounts"] if m["mountPath"] == data_dir)
        claims = [t["metadata"]["name"] for t in aggregator["spec"].get("volumeClaimTemplates", [])]
        volumes = {v["name"]: v for v in pod(aggregator)["volumes"]}
        if claimed:
            assert claims == [mount["name"]] and mount["name"] not in volumes
        else:
            assert not claims and "emptyDir" in volumes[mount["name"]]
        assert aggregator["spec"]["serviceName"] == one(docs, "Service", "aggregator")["metadata"]["name"]


def test_optional_parts_render_as_asked(default: list[Doc], full: list[Doc], port_range: list[Doc]) -> None:
    # GPU inference
    inference = workloads(full)["inference"]
    assert inference["spec"]["replicas"] == 4
    assert container(inference)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_env(full, inference)["CLASSPULSE_INFERENCE_DEVICE"] == "cuda"
    assert pod(inference)["runtimeClassName"] == "nvidia"
    assert pod(inference)["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "nvidia.com/gpu" not in container(workloads(default)["inference"])["resources"]["limits"]
    transcribe = workloads(full)["transcribe"]
    assert transcribe["spec"]["replicas"] == 2
    assert container(transcribe)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod_env(full, transcribe)["CLASSPULSE_TRANSCRIBE_DEVICE"] == "cuda"
    assert "nvidia.com/gpu" not in container(workloads(default)["transcribe"])["resources"]["limits"]
    # Ingress: WHIP + join page to ingest, the rest to the gateway, on ports the Services have
    assert not [d for d in default if d["kind"] == "Ingress"]
    rule = one(full, "Ingress")["spec"]["rules"][0]
    routes = {p["path"]: p["backend"]["service"] for p in rule["http"]["paths"]}
    assert set(routes) == {"/whip", "/join", "/"}
    for path, component in (("/whip", "ingest"), ("/join", "ingest"), ("/", "gateway")):
        service = one(full, "Service", component)
        assert routes[path]["name"] == service["metadata"]["name"]
        assert routes[path]["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    # ingest on the node network: one pod per node, DNS still the cluster's
    ingest = workloads(full)["ingest"]
    assert pod(ingest)["hostNetwork"] is True and pod(ingest)["dnsPolicy"] == "ClusterFirstWithHostNet"
    anti = pod(ingest)["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["topologyKey"] == "kubernetes.io/hostname"
    assert anti["labelSelector"]["matchLabels"].items() <= ingest["spec"]["template"]["metadata"]["labels"].items()
    assert "hostNetwork" not in pod(workloads(default)["ingest"])
    # your own Secret: none rendered, every pod reads it
    assert not [d for d in full if d["kind"] == "Secret"]
    for workload in workloads(full).values():
        assert {"secretRef": {"name": "classpulse-env"}} in container(workload)["envFrom"]
    # a bounded ephemeral UDP range on the pod network; scrape annotations off
    ingest = workloads(port_range)["ingest"]
    assert pod(ingest)["securityContext"]["sysctls"] == [
        {"name": "net.ipv4.ip_local_port_range", "value": "40000 40999"}
    ]
    assert pod(ingest)["securityContext"]["runAsNonRoot"] is True
    assert one(port_range, "Secret")["stringData"]["CLASSPULSE_TOKEN_SECRET"] == "a-long-random-secret-from-your-vault"
    for workload in workloads(port_range).values():
        assert "prometheus.io/scrape" not in workload["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ingest.udpPortRange=40000-40999"], "/ingest/udpPortRange"),
        (["--set", "ingest.udpPortRange=41000 40000"], "FIRST must be >= 1024 and below LAST"),
        (["--set", "ingest.hostNetwork=true", "--set", "ingest.udpPortRange=40000 40999"], "cannot be used with"),
        (["--set", "inference.replica=3"], "additional properties 'replica' not allowed"),
        (["--set", "config.CLASSPULSE_REDIS_URL=redis://x"], "config.CLASSPULSE_REDIS_URL is a secret"),
        (["--set", "config.CLASSPULSE_TRANSPORT=memory"], "config.CLASSPULSE_TRANSPORT is set by the chart"),
        (["--set", "config.LOG_LEVEL=DEBUG"], "'LOG_LEVEL' does not match pattern '^CLASSPULSE_"),
        (["--set", "kafka.bootstrap=kafka"], "/kafka/bootstrap"),
        ([], "secret.tokenSecret is required"),
        (["--set", "secret.tokenSecret=short"], "at least 32 characters"),
    ],
)
def test_bad_values_fail_with_a_readable_error(args: list[str], message: str) -> None:
    secret_case = not args or any(a.startswith("secret.") for a in args)
    done = _helm_template(*(args if secret_case else ["--set", f"secret.tokenSecret={TOKEN_SECRET}", *args]))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
