"""The ingest service's main coroutine (booted by ``shared.service``): one process, one worker
of ``--workers N``, or the supervisor of N workers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.ingest.settings import IngestSettings
from shared.service import ServiceContext
from shared.transport.factory import build_transports


@dataclass(frozen=True, kw_only=True)
class IngestPlan:
    """The ingest settings plus what the command line decided: where to listen and in which role."""

    settings: IngestSettings
    host: str
    port: int
    workers: int
    worker_index: int | None  # set: this process is one worker started by the supervisor
    runtime_dir: Path | None


async def serve_ingest(plan: IngestPlan, service: ServiceContext) -> None:
    """Serve WHIP ingest until SIGINT/SIGTERM in the role the plan says."""
    if plan.worker_index is not None:
        await _worker(plan, service, index=plan.worker_index)
    elif plan.workers > 1:
        from services.ingest.supervisor import WorkerSupervisor

        supervisor = WorkerSupervisor(
            workers=plan.workers, host=plan.host, port=plan.port, runtime_dir=plan.runtime_dir
        )
        service.on_stop(supervisor.stop)
        await supervisor.run()
    else:
        await _single_process(plan, service)


async def _single_process(plan: IngestPlan, service: ServiceContext) -> None:
    from services.ingest.app import create_ingest_app
    from shared.serving import serve_app

    transports = build_transports(service.common, metrics=service.metrics, client_id="classpulse-ingest")
    app = create_ingest_app(
        settings=plan.settings, common=service.common, transports=transports, metrics=service.metrics,
        health=service.health,
    )
    await serve_app(
        app, host=plan.host, port=plan.port, banner=lambda url: f"ingest listening on {url}/join", service=service
    )


async def _worker(plan: IngestPlan, service: ServiceContext, *, index: int) -> None:
    from services.ingest.worker import WorkerIdentity, create_worker_app, serve_worker

    assert plan.runtime_dir is not None  # checked with the flags
    identity = WorkerIdentity(index=index, runtime_dir=plan.runtime_dir)
    transports = build_transports(service.common, metrics=service.metrics, client_id=f"classpulse-ingest-{index}")
    app = create_worker_app(
        identity=identity,
        settings=plan.settings,
        common=service.common,
        transports=transports,
        metrics=service.metrics,
        health=service.health,
    )
    await serve_worker(app=app, identity=identity, host=plan.host, port=plan.port, service=service)
