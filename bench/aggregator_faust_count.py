"""A faust worker whose agent only counts records (baseline half of bench.aggregator_throughput).

Run by the benchmark as a child process with BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_N,
BENCH_RESULT and BENCH_DIR in the environment; writes {"rate": records/s} to BENCH_RESULT
once BENCH_N records were seen (first to last record).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import faust


def main() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    n = int(os.environ["BENCH_N"])
    result = Path(os.environ["BENCH_RESULT"])
    app = faust.App(
        f"bench-count-{uuid.uuid4().hex[:6]}", broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
        store="memory://", datadir=os.environ["BENCH_DIR"], autodiscover=False, web_enabled=False,
        consumer_auto_offset_reset="earliest", broker_session_timeout=6, broker_rebalance_timeout=6,
        broker_heartbeat_interval=0.5,
    )
    topic = app.topic(os.environ["BENCH_TOPIC"], key_type=bytes, value_type=bytes, key_serializer="raw",
                      value_serializer="raw")
    state = {"count": 0, "first": 0.0, "done": 0}

    async def count(stream: Any) -> None:
        # plain per-event iteration, as the aggregator's agent does (take_events can lose records)
        async for _event in stream.events():
            state["first"] = state["first"] or time.perf_counter()
            state["count"] += 1
            if state["count"] >= n and not state["done"]:
                state["done"] = 1
                rate = n / (time.perf_counter() - state["first"])
                await asyncio.to_thread(result.write_text, json.dumps({"rate": rate}))

    app.agent(topic, name="bench-count")(count)
    faust.Worker(app, loop=loop, quiet=True, override_logging=False, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
