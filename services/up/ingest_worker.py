"""One ingest process of ``classpulse up`` (started by :mod:`services.up.ingest_pool`).

Kept apart from :mod:`services.up.service`, which builds the whole app: an ingest process
imports ingest and the relay only, never the inference engine (and so never torch): ~170 MB
RSS instead of ~700 MB.
"""

from __future__ import annotations

from pathlib import Path

from services.ingest.settings import IngestSettings
from shared.service import ServiceContext


async def serve_ingest_worker(
    settings: IngestSettings, service: ServiceContext, *, index: int, runtime_dir: Path, port: int
) -> None:
    """One ingest process of ``up``: the ingest worker app, its media and events relayed to ``up``."""
    from services.ingest.worker import WorkerIdentity, create_worker_app, serve_worker
    from services.up.ingest_pool import RELAY_SOCKET
    from shared.transport.factory import Transports
    from shared.transport.memory import MemoryLiveBus
    from shared.transport.rate import SourceRate
    from shared.transport.relay import relay_buses

    identity = WorkerIdentity(index=index, runtime_dir=runtime_dir)
    rate = SourceRate()  # the main process tells its analysed frame rate (CLASSPULSE_UP_THIN_AT_SOURCE)
    media, events, publishes = relay_buses(runtime_dir / RELAY_SOCKET, shards=service.common.media_shards, rate=rate)
    transports = Transports(media=media, events=events, live=MemoryLiveBus(), publishes=publishes, source_rate=rate)
    app = create_worker_app(
        identity=identity, settings=settings, common=service.common, transports=transports, metrics=service.metrics
    )
    await serve_worker(app=app, identity=identity, host="127.0.0.1", port=port, service=service)
