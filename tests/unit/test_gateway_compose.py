"""docker-compose.yml stays consistent with the CLI, Prometheus targets and Grafana files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from services.cli import build_parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = (REPO / "docker-compose.yml").read_text()


def _service_commands() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    service = None
    for line in COMPOSE.splitlines():
        if m := re.match(r"^  ([a-z-]+):\s*$", line):
            service = m.group(1)
        elif (m := re.match(r"^    command:\s*(\[.*\])", line)) and service:
            out[service] = json.loads(m.group(1))
    return out


def test_every_classpulse_command_parses() -> None:
    commands = {k: v for k, v in _service_commands().items() if k in ("ingest", "inference", "aggregator", "gateway")}
    assert set(commands) == {"ingest", "inference", "aggregator", "gateway"}
    parser = build_parser()
    for service, argv in commands.items():
        args = parser.parse_args(argv)
        assert args.command == service


def test_prometheus_scrapes_every_service_where_it_listens() -> None:
    config = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    targets = set(re.findall(r'"([a-z]+):(\d+)"', config))
    commands = _service_commands()
    for service, port in targets:
        argv = commands[service]
        flag = "--port" if "--port" in argv else "--metrics-port"
        assert argv[argv.index(flag) + 1] == port, service
        if flag == "--port":
            assert argv[argv.index("--host") + 1] == "0.0.0.0", service
    assert {s for s, _ in targets} == {"ingest", "inference", "transcribe", "aggregator", "gateway"}
    for worker in ("inference", "transcribe"):
        argv = commands[worker]
        assert argv[argv.index("--metrics-host") + 1] == "0.0.0.0", worker
    assert "CLASSPULSE_AGGREGATOR_METRICS_HOST: 0.0.0.0" in COMPOSE


def test_grafana_mounts_existing_provisioning_and_dashboards() -> None:
    for source in re.findall(r"- \./(deploy/grafana/[a-z/]+):", COMPOSE):
        assert (REPO / source).is_dir(), source
    assert list((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
    provider = (REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "classpulse.yml").read_text()
    assert "/var/lib/grafana/dashboards" in provider and "/var/lib/grafana/dashboards:ro" in COMPOSE


def test_every_container_restarts_when_it_exits() -> None:
    services = yaml.safe_load(COMPOSE)["services"]  # resolves the x-classpulse anchor's merge
    assert {"ingest", "inference", "transcribe", "aggregator", "gateway", "kafka", "redis"} <= set(services)
    never = {name for name, s in services.items() if s.get("restart") not in ("unless-stopped", "always", "on-failure")}
    assert not never, f"services without a restart policy: {sorted(never)}"
