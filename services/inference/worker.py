"""The inference worker: media shards -> micro-batches -> engine -> Kafka scores + live bus.

One worker is one member of the media streams' consumer group ``INFERENCE_GROUP`` and owns
media shards by lease (:mod:`services.inference.ownership`); a participant's media always
lands in the same shard, so one participant is processed by one worker at a time:

1. the lease task (:class:`~services.inference.shard_keeper.ShardKeeper`, which owns the leases and the
   participants' state) heartbeats, renews the worker's shard leases every ``lease_renew_ms``,
   acquires the shards the assignment gives it once they are free, and hands over the ones
   it should give up;
2. a reader task reads new entries of the shards it holds (and claims the pending media of a
   shard it just took over, or left pending by a failed batch), restores each participant's
   stored state before its first message, decodes the entries and queues them per participant
   in a bounded :class:`MicroBatcher` (it stops reading while the batcher is full, so backlog
   stays in the bounded streams, where the oldest media is evicted);
3. the batch loop flushes when a batch is full or its oldest item waited its budget, runs
   the engine in a worker thread (one batch at a time), checks the lease of every item's
   shard, publishes every ScoreEvent (stamped with this worker as ``producer``) to Kafka
   ``classpulse.scores`` (keyed by session) and to the live bus, and only then acks the media
   (at-least-once; event ids are stable, so consumers dedupe redeliveries). Before publishing
   it marks the batch's entries "publishing" in the media bus, with the scores about to go out:
   a worker that takes the shard over publishes those recorded scores again (the same events)
   instead of scoring the entries again from another state, so a score is never lost in the
   publish window nor published twice with different values; acks and marks are retried
   while the lease is held; audio chunks of the batch then go to the transcribe stage, if any
   (:mod:`services.inference.transcribe.live`: speech events on ``classpulse.interactions``);
4. the state task (the shard keeper's too) snapshots the participants of held shards every ``snapshot_interval_s``
   (fenced by the lease), and on a hand-over drains the shard, snapshots it and releases it;
   a lost lease drops the shard's participants' state here (the next owner has it).

All four loops run under the service's :class:`~shared.supervise.Supervisor` (tasks
``inference-leases``, ``inference-state``, ``inference-reader``, ``inference-batches``): a
broker error is retried with bounded backoff and reported as the task being down (``/healthz``
503), any other error restarts the loop; a task down for ``task_give_up_s`` ends the process.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.inference.batcher import MicroBatcher
from services.inference.degrade import DegradePolicy, Load
from services.inference.engine import InferenceEngine
from services.inference.handover import StateHandover
from services.inference.ownership import ShardOwnership
from services.inference.recorded import record, recorded
from services.inference.settings import InferenceSettings
from services.inference.shard_keeper import ShardKeeper
from services.inference.transcribe.live import LiveTranscriber
from shared.contracts.codec import DecodeError, decode_media
from shared.contracts.events import ScoreEvent
from shared.contracts.media import AudioChunk, MediaMessage, VideoFrame
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INFERENCE_GROUP, SCORES, EventTopic
from shared.log import get_logger
from shared.metrics import Metrics
from shared.supervise import HealthRegistry, Supervisor, TaskHealth, is_transient, retry_transient
from shared.transport.base import StreamEntry
from shared.transport.factory import Transports
from shared.transport.live import LivePublisher
from shared.transport.shards import participant_key, shard_of
from shared.transport.typed import EventPublisher

log = get_logger(__name__)
STAGE = "inference"
EVICT_INTERVAL_S = 30.0
ENGINE_DRAIN_S = 10.0
"""A cancelled batch waits this long for its engine thread before its participants' states are discarded."""


@dataclass(frozen=True, slots=True)
class _Item:
    entry_id: str
    msg: MediaMessage
    received: float
    claimed: bool
    shard: int = 0


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class InferenceWorker:
    """A consumer-group member that micro-batches media across streams through the engine."""

    def __init__(
        self,
        *,
        engine: InferenceEngine,
        transports: Transports,
        settings: InferenceSettings,
        metrics: Metrics,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        scores_topic: EventTopic[ScoreEvent] = SCORES,
        supervisor: Supervisor | None = None,
        speech: LiveTranscriber | None = None,
        on_rate: Callable[[float | None], None] | None = None,
    ) -> None:
        self.engine = engine
        self._on_rate = on_rate
        """Told the target analysed frame rate whenever it changes (None = every frame): thinning at the source."""
        self.supervisor = supervisor or Supervisor(health=HealthRegistry(service="inference"))
        self.speech = speech
        if speech is not None:  # it segments speech on the engine's VAD windows: silero-vad once per chunk
            engine.keep_vad_windows = True
            speech.vad_windows = engine.take_vad_windows
        self.settings = settings
        self.consumer = consumer or settings.consumer_name or default_consumer_name()
        self._media = transports.media
        self._scores = EventPublisher(bus=transports.events, topic=scores_topic)
        self._live = LivePublisher(bus=transports.live, privacy=transports.policies)
        self._metrics = metrics
        self._clock = clock
        self._batcher: MicroBatcher[_Item] = MicroBatcher(
            max_batch=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000,
            capacity=max(settings.queue_max, settings.batch_max),
            clock=clock,
        )
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._stopping = asyncio.Event()
        self._held: set[str] = set()
        """Entry ids read or claimed and not yet acked (queued or in the running batch)."""
        self._claim_count = max(settings.read_count, settings.queue_max)
        self.batches = 0
        self.published = 0
        self._next_evict = clock() + EVICT_INTERVAL_S
        # Shards and participant state (see the module docstring).
        self.ownership = ShardOwnership(
            store=transports.leases,
            member=self.consumer,
            shards=self._media.shards,
            ttl_ms=settings.lease_ttl_ms,
            clock=clock,
            metrics=metrics,
        )
        self.states = StateHandover(
            engine=engine, store=transports.leases, ownership=self.ownership, settings=settings, metrics=metrics
        )
        self.shards = ShardKeeper(
            ownership=self.ownership, states=self.states, settings=settings, metrics=metrics, clock=clock,
            stopping=self._stopping, drain=self._drain, health=self._health,
            broker_down=self._broker_down,
        )
        self._read_lock = asyncio.Lock()
        """Held by the reader from a read to the end of its enqueue (a hand-over waits for it)."""
        self._batch_done = asyncio.Event()
        self._policy = DegradePolicy(settings.degrade_config(), now=clock())
        self._degrading = settings.degrade and settings.max_lag_ms > 0
        self._sessions: set[str] = set()
        self._rng = random.Random()
        metrics.inference_target_fps.set(settings.full_fps)

    async def run(self) -> None:
        """Run until :meth:`stop` (or cancellation); the engine must be loaded."""
        await self._media.ensure_group(INFERENCE_GROUP)
        log.info("inference worker %s -> %s", "starting", "running", extra={"consumer": self.consumer})
        try:
            await self.shards.tick()  # own shards before the first read
        except Exception as exc:
            if not is_transient(exc):
                raise
        sup = self.supervisor
        tasks = [
            sup.spawn("inference-leases", self.shards.lease_loop),
            sup.spawn("inference-state", self.shards.state_loop),
            sup.spawn("inference-reader", self._read_loop),
        ]
        batches = sup.spawn("inference-batches", self._batch_loop)
        try:
            await batches  # returns once stopped (the running batch finished)
        finally:
            batches.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=5.0)
            await self.shards.leave()
            log.info("inference worker %s -> %s", "running", "stopped", extra={"consumer": self.consumer})

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # -- shard leases and participant state -------------------------------------------------

    def _health(self, task: str) -> TaskHealth:
        return self.supervisor.health.task(task)

    def _broker_down(self, health: TaskHealth, exc: Exception, *, what: str) -> None:
        """A transient broker error a loop retries itself: logged once per outage, counted, task marked down."""
        if not is_transient(exc):
            raise exc
        if not health.down:
            log.warning("%s %s -> %s (broker unreachable)", what, "ok", "retrying", extra={"error": type(exc).__name__})
        self._metrics.errors_total.labels(STAGE, what.replace(" ", "_")).inc()
        health.degraded(exc)

    async def _drain(self, moving: set[int], timeout_s: float) -> None:
        """A hand-over of ``moving``: wait for a read in flight, then until no media of those shards is held
        (queued or in the running batch), at most ``timeout_s``."""
        async with self._read_lock:  # a read in flight has enqueued what it got
            pass
        deadline = self._clock() + timeout_s
        while any(self._shard_of_entry(e) in moving for e in self._held):
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._batch_done.clear()
            self._wake.set()
            try:
                await asyncio.wait_for(self._batch_done.wait(), timeout=min(remaining, 0.1))
            except TimeoutError:
                pass

    def _shard_of_entry(self, entry_id: str) -> int:
        return int(entry_id.partition("/")[0])

    async def _fence(self, items: list[_Item], events: list[ScoreEvent]) -> tuple[list[_Item], list[ScoreEvent]]:
        """Keep what this worker still owns: items and events of shards whose lease lapsed are neither
        published nor acked (the next owner claims the media and scores it from the stored state).

        A lease that lapsed only locally (this worker was slow, e.g. starved while a broker restarted)
        is first confirmed with the store: still ours there, it is kept and nothing is dropped."""
        n = self._media.shards
        self.states.processed(participant_key(i.msg.session, i.msg.participant) for i in items)
        lapsed = {i.shard for i in items if not self.ownership.holds(i.shard)}
        if lapsed:
            try:
                self.shards.lose(await self.ownership.confirm(lapsed))
            except Exception as exc:  # unreachable store: nothing confirmed, the shards stay lapsed
                if not is_transient(exc):
                    raise
            lapsed = {k for k in lapsed if not self.ownership.holds(k)}
        if not lapsed:
            return items, events
        dropped = [i for i in items if i.shard in lapsed]
        self._held.difference_update(i.entry_id for i in dropped)
        self._metrics.errors_total.labels(STAGE, "lease_lapsed").inc(len(dropped))
        kept_events = [e for e in events if shard_of(participant_key(e.session, e.participant), n) not in lapsed]
        return [i for i in items if i.shard not in lapsed], kept_events

    # -- reading ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        s = self.settings
        health = self._health("inference-reader")
        policy = self.supervisor.policy
        failures = 0
        next_claim = self._clock() + s.claim_interval_s
        while not self._stopping.is_set():
            await self._space.wait()
            try:
                async with self._read_lock:
                    if self._clock() >= next_claim:
                        next_claim = self._clock() + s.claim_interval_s
                        for k in self.shards.readable():  # media a failed batch left pending
                            await self._claim(k, min_idle_ms=s.claim_idle_ms)
                    await self._read_once()
            except Exception as exc:  # the media store is unreachable: retry (leases lapse meanwhile)
                self._broker_down(health, exc, what="media read")
                failures += 1
                await asyncio.sleep(policy.backoff(failures, self._rng))
                continue
            if failures:
                failures = 0
                health.ok()

    async def _read_once(self) -> None:
        s = self.settings
        for k in self.shards.claims():
            if self.ownership.holds(k):  # a dead owner's pending media: ours now
                await self._claim(k, min_idle_ms=0)
            self.shards.claimed(k)
        shards = self.shards.readable()
        if not shards:
            await asyncio.sleep(s.read_block_ms / 1000)
            return
        entries = await self._media.read_group(
            INFERENCE_GROUP, self.consumer, shards=shards, count=s.read_count, block_ms=s.read_block_ms
        )
        await self._enqueue(entries)

    async def _claim(self, shard: int, *, min_idle_ms: int) -> None:
        # Scan every pending entry of the shard (the stream is bounded); entries this worker holds are
        # skipped, so its own slow batches are never claimed twice. Held *before* the claim: a batch
        # may ack and let go of its entries while the claim is on its way, after the store returned
        # them (they were still pending then), and they must not be scored a second time.
        held = set(self._held)
        claimed = await self._media.claim_stale(
            INFERENCE_GROUP, self.consumer, shard=shard, min_idle_ms=min_idle_ms, count=self._claim_count
        )
        claimed = [e for e in claimed if e.id not in held and e.id not in self._held]
        if not claimed:
            return
        marked = await self._media.publishing(shard)
        unknown = [e.id for e in claimed if e.id in marked]
        if unknown:  # scored by an earlier owner, maybe published: publish what it scored, never score again
            await self._republish(shard, {marked[i] for i in unknown})
            await self._media.ack(INFERENCE_GROUP, unknown)
            claimed = [e for e in claimed if e.id not in marked]
        if claimed:
            log.info("pending media %s -> %s", "pending", "claimed", extra={"entries": len(claimed), "shard": shard})
            await self._enqueue(claimed, claimed=True)

    async def _republish(self, shard: int, results: set[bytes]) -> None:
        """The scores an earlier owner recorded before it published them: published again as they were
        (same ids and values; consumers drop what already got out)."""
        events, errors = recorded(results)
        for exc in errors:
            log.warning("recorded score rejected: %s", exc)
            self._metrics.errors_total.labels(STAGE, "decode").inc()
        log.info("pending media %s -> %s", "publishing", "republished", extra={"events": len(events), "shard": shard})
        await self._publish(events)
        self._metrics.inference_republished_events_total.inc(len(events))

    async def _enqueue(self, entries: list[StreamEntry], *, claimed: bool = False) -> None:
        if not entries:
            return
        now = wall_clock()
        bad: list[str] = []
        for entry in entries:
            try:
                msg = decode_media(entry.data)
            except DecodeError as exc:
                log.warning("media entry rejected: %s", exc)
                self._metrics.errors_total.labels(STAGE, "decode").inc()
                bad.append(entry.id)
                continue
            self._metrics.observe_hop(msg.timing, transport="media", received=now)
            key = participant_key(msg.session, msg.participant)
            if self.states.needs_restore(key):
                await self.states.restore(msg.session, msg.participant)
            self._held.add(entry.id)
            dropped = self._batcher.put(key, _Item(entry.id, msg, now, claimed, entry.shard))
            if dropped is not None:
                self._metrics.media_dropped_total.labels("inference_queue_full").inc()
                bad.append(dropped.value.entry_id)
        if bad:
            await self._media.ack(INFERENCE_GROUP, bad)
            self._held.difference_update(bad)
        self._metrics.queue_depth.labels("inference_batcher").set(len(self._batcher))
        if self._batcher.full:
            self._space.clear()
        self._wake.set()

    # -- batching --------------------------------------------------------------------------

    async def _batch_loop(self) -> None:
        while not self._stopping.is_set():
            delay = self._batcher.time_to_deadline()
            if delay is None or delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay if delay is not None else 0.5)
                except TimeoutError:
                    pass
            if self._batcher.ready():
                async with self.states.lock:  # snapshots never see half a batch (processed, not acked)
                    await self._run_batch()
                self._batch_done.set()
            self._control()
            if self._clock() >= self._next_evict:
                self._next_evict = self._clock() + EVICT_INTERVAL_S
                evicted = await asyncio.to_thread(self.engine.evict_idle, max_idle_s=self.settings.state_idle_s)
                if evicted:
                    log.info("participant states %s -> %s", "idle", "forgotten", extra={"count": evicted})

    async def _run_batch(self) -> None:
        queued = self._batcher.take()
        self._space.set()
        self._metrics.queue_depth.labels("inference_batcher").set(len(self._batcher))
        if not queued:
            return
        try:
            await self._score([q.value for q in queued], [q.enqueued for q in queued])
        except BaseException:  # e.g. a broker error in an ack: the media stays pending, claimable again
            self._held.difference_update(q.value.entry_id for q in queued)
            self.states.discard(participant_key(q.value.msg.session, q.value.msg.participant) for q in queued)
            raise

    async def _score(self, taken: list[_Item], enqueued: list[float]) -> None:
        started = self._clock()
        now = self._clock()
        for t in enqueued:
            self._metrics.inference_queue_wait_seconds.observe(max(0.0, now - t))
        items, thinned = await self._thin(taken)
        items, stale = await self._drop_stale(items)
        thinned = [*thinned, *stale]  # stale frames existed too: camera on, no step (never "camera off")
        if not items and not thinned:
            return
        frames = [i.msg for i in items if isinstance(i.msg, VideoFrame)]
        waits = self._waits(frames)
        if items:
            self._metrics.batch_size.observe(len(items))
        work = asyncio.ensure_future(
            asyncio.to_thread(
                self.engine.process, [i.msg for i in items], received=[i.received for i in items], skipped=thinned
            )
        )
        try:
            events = await asyncio.shield(work)
        except asyncio.CancelledError:  # the engine thread runs on: its states are discarded once it is done
            await asyncio.wait([work], timeout=ENGINE_DRAIN_S)
            raise
        except Exception:
            log.exception("inference batch failed; its media stays pending for a retry")
            self._metrics.errors_total.labels(STAGE, "batch").inc()
            self._held.difference_update(i.entry_id for i in items)  # claimable again once idle
            self.states.discard(participant_key(i.msg.session, i.msg.participant) for i in taken)
            return
        items, events = await self._fence(items, events)
        if self.speech is not None:  # the transcribe stage gets the scored audio of the shards still held
            self.speech.put([i.msg for i in items if isinstance(i.msg, AudioChunk)])
        events = [ev.model_copy(update={"producer": self.consumer}) for ev in events]
        if events:  # mark with the results: a next owner publishes these, never scores again; re-check the leases
            marks = record(((participant_key(i.msg.session, i.msg.participant), i.entry_id) for i in items), events)
            if not await self._while_held(items, lambda: self._media.mark_publishing(marks)):
                self._metrics.errors_total.labels(STAGE, "mark_lapsed").inc()
            items, events = await self._fence(items, events)
        await self._publish(events)  # waits until the broker acknowledged (retried across a pause)
        ids = [i.entry_id for i in items]
        if not await self._while_held(items, lambda: self._media.ack(INFERENCE_GROUP, ids)):
            self._metrics.errors_total.labels(STAGE, "ack_lapsed").inc()  # the next owner drops them (marked)
        self._held.difference_update(ids)
        for item in items:
            self._metrics.messages_total.labels(STAGE, item.msg.kind).inc()
        for frame in frames:
            self._metrics.inference_analysed_frames_total.labels(frame.session).inc()
        self._policy.observe_batch(busy_s=self._clock() - started, frames=len(frames), waits=waits)
        self.batches += 1

    @staticmethod
    def _waits(frames: list[VideoFrame]) -> list[float]:
        """How long each frame waited between leaving ingest and its batch starting (queue + backlog)."""
        now = wall_clock()
        out = []
        for frame in frames:
            stamp = frame.timing.stage("ingest")
            out.append(max(0.0, now - (stamp.emitted if stamp is not None else frame.timing.capture_ts)))
        return out

    async def _thin(self, items: list[_Item]) -> tuple[list[_Item], list[VideoFrame]]:
        """Keep each participant's frames at the policy's target rate; ack and count the rest.

        Every frame is offered (so the policy knows who is active); frames claimed from a dead
        worker are always kept. Returns the items to analyse and the thinned frames, which the
        engine still sees as "camera on" (no step, no perception).
        """
        now = self._clock()
        kept: list[_Item] = []
        thinned: list[_Item] = []
        for item in items:
            msg = item.msg
            if not isinstance(msg, VideoFrame):
                kept.append(item)
                continue
            admitted = self._policy.admit(f"{msg.session}/{msg.participant}", msg.media_time, now=now)
            (kept if admitted or item.claimed else thinned).append(item)
        if thinned:
            await self._release(thinned, reason="degraded")
        return kept, [i.msg for i in thinned if isinstance(i.msg, VideoFrame)]

    def _control(self) -> None:
        """Let the policy close its window: maybe a new target rate; the load gauges."""
        now = self._clock()
        load = self._policy.update(now=now, adapt=self._degrading)
        if load is None:
            return
        self._metrics.inference_busy_ratio.set(load.busy)
        self._metrics.inference_target_fps.set(self.settings.full_fps if load.target is None else load.target)
        counts = self._policy.sessions(now=now)
        for session in self._sessions - counts.keys():
            self._metrics.inference_participants.remove(session)
        for session, count in counts.items():
            self._metrics.inference_participants.labels(session).set(count)
        self._sessions = set(counts)
        if load.changed:
            _log_load(load)
            if self._on_rate is not None:
                self._on_rate(load.target)

    async def _drop_stale(self, items: list[_Item]) -> tuple[list[_Item], list[VideoFrame]]:
        """Keep latency bounded under overload: frames older than ``max_lag_ms`` are acked unscored.

        Returns the items to analyse and the dropped frames (still "camera on" to the engine, like
        thinned ones). Media claimed from a dead worker is always scored: old by definition, and
        the score log should not lose a stretch of a session because a worker died.
        """
        if self.settings.max_lag_ms <= 0:
            return items, []
        limit = self.settings.max_lag_ms / 1000
        now = wall_clock()
        stale = [i for i in items if i.msg.kind == "video" and not i.claimed and now - i.msg.timing.capture_ts > limit]
        if not stale:
            return items, []
        await self._release(stale, reason="inference_stale")
        gone = {id(i) for i in stale}
        return [i for i in items if id(i) not in gone], [i.msg for i in stale if isinstance(i.msg, VideoFrame)]

    async def _while_held(self, items: list[_Item], op: Callable[[], Awaitable[None]]) -> bool:
        """Run an idempotent media-bus write, retrying broker errors while a lease of ``items`` is held."""
        shards = {i.shard for i in items}
        health = self._health("inference-batches")

        def on_error(exc: BaseException) -> None:
            if isinstance(exc, Exception):
                self._broker_down(health, exc, what="media ack")

        done = await retry_transient(
            op,
            policy=self.supervisor.policy,
            keep_going=lambda: any(self.ownership.holds(k) for k in shards),
            on_error=on_error,
            rng=self._rng,
        )
        if health.down:
            health.ok()
        return done

    async def _release(self, items: list[_Item], *, reason: str) -> None:
        """Ack media that will not be scored and count it as dropped for ``reason``."""
        await self._media.ack(INFERENCE_GROUP, [i.entry_id for i in items])
        self._held.difference_update(i.entry_id for i in items)
        self._metrics.media_dropped_total.labels(reason).inc(len(items))

    async def _publish(self, events: list[ScoreEvent]) -> None:
        """Publish scores (stamped with their producer) and wait until the broker acknowledged them."""
        if not events:
            return
        await asyncio.gather(*(self._scores.publish(ev) for ev in events))
        for ev in events:
            try:
                await self._live.publish(ev)
            except Exception as exc:  # live views are best effort; Kafka has the event
                log.warning("live publish failed: %s", exc)
                self._metrics.errors_total.labels(STAGE, "live_publish").inc()
            self._metrics.observe_trail(ev.timing, stage=STAGE)
        self.published += len(events)


def _log_load(load: Load) -> None:
    def fps(v: float | None) -> str:
        return "full" if v is None else f"{v:g} fps"

    log.info(
        "analysed frame rate %s -> %s",
        fps(load.before),
        fps(load.target),
        extra={
            "busy": round(load.busy, 3),
            "wait_s": round(load.wait_s, 3),
            "cost_ms": None if load.cost_s is None else round(1000 * load.cost_s, 2),
            "participants": load.participants,
        },
    )
