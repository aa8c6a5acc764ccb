"""WHIP (RFC 9725) on aiohttp + aiortc: one resource per publishing participant.

``POST /whip/{session}/{participant}`` (``application/sdp``, bearer token) answers
``201 Created`` with ``Location`` and the full SDP answer (no trickle: ICE gathering
completes before the answer is sent); ``DELETE`` on the Location ends the session.
Every error is a plain-text line saying what is wrong and what to do.

One publish at a time per participant: a POST takes the participant's publish lock for
closing their old resource and negotiating the new one, so publishing again replaces the
old resource atomically; a POST while another one of the same participant is still being
negotiated gets ``409`` at once (a double click, 20 concurrent POSTs: one resource, never
20). The ``429`` bounds are per process and per session, so one session cannot take every
slot. Every publish gets the participant's next epoch (:mod:`shared.transport.publishes`),
so a reconnect continues their media (seq and event ids never repeat; media time continues).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from services.ingest.aiortc_hooks import (
    AWAITING_KEYFRAME,
    PC_CLOSE_TIMEOUT_S,
    attach_sr_clock,
    bound_jitter_buffer,
    close_bounded,
    dtls_failure,
    last_packet_clock,
    throttle_remb,
)
from services.ingest.lifecycle import LifecycleReporter, PresenceMonitor
from services.ingest.publisher import StreamPublisher
from services.ingest.sampling import AudioChunker, FrameSampler
from services.ingest.sdp import OfferSummary, SdpError, validate_offer
from services.ingest.settings import IngestSettings
from services.ingest.tracks import consume_audio, consume_video
from shared.contracts.events import Role
from shared.contracts.timing import wall_clock
from shared.log import get_logger, pii, spawn
from shared.metrics import Metrics
from shared.settings import CommonSettings
from shared.tokens import TokenError, bearer, verify_token
from shared.transport.factory import Transports
from shared.transport.publishes import Publish

log = get_logger(__name__)

_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
_ANSWER_TIMEOUT_S = 15.0



class WhipError(Exception):
    """An HTTP error with a readable message."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class WhipResource:
    """One publishing participant: its peer connection, consumer tasks and publishers."""

    id: str
    session: str
    participant: str
    role: Role
    pc: RTCPeerConnection
    reporter: LifecycleReporter
    monitor: PresenceMonitor
    publish: Publish
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    publishers: list[StreamPublisher] = field(default_factory=list)
    samplers: dict[str, FrameSampler | AudioChunker] = field(default_factory=dict)
    closed: bool = False
    counted: bool = False
    """In ``resources`` and the publisher gauge (only a negotiated resource is)."""


class WhipService:
    """Registry of WHIP resources and the HTTP handlers that create and end them."""

    def __init__(
        self,
        *,
        settings: IngestSettings,
        common: CommonSettings,
        transports: Transports,
        metrics: Metrics,
        resource_prefix: str = "",
    ) -> None:
        self.settings = settings
        self.resource_prefix = resource_prefix  # names the owning worker in every Location (``w1-...``)
        self.common = common
        self._keyring = common.token_keyring()
        self.transports = transports
        self.metrics = metrics
        self.resources: dict[str, WhipResource] = {}
        self._pending: dict[str, int] = {}  # session -> publishes being negotiated
        self._publishing: set[tuple[str, str]] = set()  # the participants' publish locks (held = in the set)

    # -- helpers -------------------------------------------------------------------------

    def cors(self) -> dict[str, str]:
        return {
            "Access-Control-Allow-Origin": self.settings.cors_origin,
            "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Expose-Headers": "Location, Link, ETag, Accept-Patch, Retry-After",
            "Access-Control-Max-Age": "600",
        }

    def error(self, exc: WhipError) -> web.Response:
        headers = {**self.cors(), **exc.headers}
        return web.Response(status=exc.status, text=exc.message + "\n", content_type="text/plain", headers=headers)

    def _ids(self, request: web.Request) -> tuple[str, str]:
        session, participant = request.match_info["session"], request.match_info["participant"]
        for what, value in (("session", session), ("participant", participant)):
            if not _ID.match(value):
                raise WhipError(400, f"{what} id must be 1-128 characters of letters, digits, '.', '_', '~' or '-'")
        return session, participant

    def _authorize(self, request: web.Request, session: str, participant: str) -> Role:
        try:
            claims = verify_token(bearer(request.headers.get("Authorization")), secret=self._keyring)
        except TokenError as exc:
            raise WhipError(exc.status, str(exc), headers={"WWW-Authenticate": 'Bearer realm="classpulse"'}) from exc
        if claims.role == "viewer":
            raise WhipError(403, "a viewer token cannot publish; ask for a student or teacher token")
        if not claims.can_publish(session, participant):
            raise WhipError(
                403, "token is for another session or participant; ask for a token for this session and participant"
            )
        return "teacher" if claims.role == "teacher" else "student"

    async def _read_offer(self, request: web.Request) -> str:
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/sdp":
            raise WhipError(415, f"Content-Type must be application/sdp (got {ctype or 'none'}); send the SDP offer")
        limit = self.settings.max_sdp_bytes
        if request.content_length is not None and request.content_length > limit:
            raise WhipError(413, f"SDP offer is larger than {limit} bytes; send a plain WebRTC offer")
        body = await request.content.read(limit + 1)
        if len(body) > limit:
            raise WhipError(413, f"SDP offer is larger than {limit} bytes; send a plain WebRTC offer")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WhipError(400, "SDP offer is not UTF-8 text; send the offer from createOffer()") from exc

    # -- handlers ------------------------------------------------------------------------

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={**self.cors(), "Accept-Post": "application/sdp"})

    async def post(self, request: web.Request) -> web.Response:
        try:
            session, participant = self._ids(request)
            role = self._authorize(request, session, participant)
            text = await self._read_offer(request)
            try:
                summary = validate_offer(text)
            except SdpError as exc:
                raise WhipError(400, str(exc)) from exc
            key = (session, participant)
            if key in self._publishing:
                self.metrics.errors_total.labels("ingest", "publish_in_progress").inc()
                raise WhipError(
                    409,
                    "this participant is already publishing (another publish is still being set up); "
                    "wait for it, or DELETE it, then retry",
                    headers={"Retry-After": "2"},
                )
            self._publishing.add(key)  # no await since the check: the lock is taken atomically
            try:
                resource, answer = await self._replace(session, participant, role, text, summary)
            finally:
                self._publishing.discard(key)
        except WhipError as exc:
            return self.error(exc)
        location = f"{request.path.rstrip('/')}/{resource.id}"
        headers = {**self.cors(), "Location": location, "ETag": f'"{resource.id}"'}
        return web.Response(status=201, text=answer, content_type="application/sdp", headers=headers)

    async def _replace(
        self, session: str, participant: str, role: Role, offer: str, summary: OfferSummary
    ) -> tuple[WhipResource, str]:
        """Under the participant's publish lock: end their old resource, check capacity, negotiate."""
        await self.close_participant(session, participant)
        self._admit(session)
        self._pending[session] = self._pending.get(session, 0) + 1
        try:
            try:
                publish = await self.transports.publishes.begin(session, participant)
            except Exception as exc:  # the media store is down: a retry may find it back
                log.warning("whip publish epoch -> unavailable (%s)", type(exc).__name__)
                raise WhipError(503, "cannot reach the media store to start this publish; retry", headers={
                    "Retry-After": "5"}) from exc
            return await self._create(session, participant, role, offer, summary, publish)
        finally:
            left = self._pending[session] - 1
            if left:
                self._pending[session] = left
            else:
                del self._pending[session]

    def _admit(self, session: str) -> None:
        """429 when this process, or this session on it, has no publisher slot left."""
        s = self.settings
        if len(self.resources) + sum(self._pending.values()) >= s.max_publishers:
            self.metrics.errors_total.labels("ingest", "too_many_publishers").inc()
            raise WhipError(
                429,
                f"this ingest server already has {s.max_publishers} publishers; retry later or add an ingest worker",
                headers={"Retry-After": "10"},
            )
        in_session = sum(1 for r in self.resources.values() if r.session == session) + self._pending.get(session, 0)
        if in_session >= s.max_publishers_per_session:
            self.metrics.errors_total.labels("ingest", "too_many_session_publishers").inc()
            raise WhipError(
                429,
                f"this session already has {s.max_publishers_per_session} publishers on this ingest server; "
                "retry later or raise CLASSPULSE_INGEST_MAX_PUBLISHERS_PER_SESSION",
                headers={"Retry-After": "10"},
            )

    async def delete(self, request: web.Request) -> web.Response:
        try:
            session, participant = self._ids(request)
            self._authorize(request, session, participant)
            resource = self.resources.get(request.match_info["resource"])
            if resource is None or resource.session != session or resource.participant != participant:
                raise WhipError(404, "no such WHIP session (already ended?); publish again with POST")
            await self.close_resource(resource, reason="deleted")
        except WhipError as exc:
            return self.error(exc)
        return web.Response(status=200, headers=self.cors())

    async def patch(self, request: web.Request) -> web.Response:
        return self.error(
            WhipError(405, "trickle ICE and ICE restarts are not supported; send a full offer with POST", headers={})
        )

    # -- resources -----------------------------------------------------------------------

    async def _create(
        self, session: str, participant: str, role: Role, offer: str, summary: OfferSummary, publish: Publish
    ) -> tuple[WhipResource, str]:
        rid = self.resource_prefix + uuid.uuid4().hex[:16]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        monitor = PresenceMonitor(
            camera_off_after_s=self.settings.camera_off_after_s,
            mic_muted_after_s=self.settings.mic_muted_after_s,
            has_video=summary.has_video,
            has_audio=summary.has_audio,
            now=wall_clock(),
        )
        reporter = LifecycleReporter(
            bus=self.transports.events,
            session=session,
            participant=participant,
            role=role,
            resource=rid,
            monitor=monitor,
        )
        resource = WhipResource(
            id=rid,
            session=session,
            participant=participant,
            role=role,
            pc=pc,
            reporter=reporter,
            monitor=monitor,
            publish=publish,
        )

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._start_track(resource, track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.info("whip connection -> %s", state, extra=pii(participant=participant, session=session))
            if state == "connected":
                reporter.start()
            elif state == "failed" and (failure := dtls_failure(pc)) is not None:
                self.metrics.errors_total.labels("ingest", "dtls_failed").inc()
                log.warning(
                    "whip dtls -> failed as %s: %s", failure.role, failure.hint, extra=pii(participant=participant)
                )
            if state in ("failed", "closed") and not resource.closed:
                spawn(self.close_resource(resource, reason=state), name=f"whip-close-{rid}")

        try:
            await asyncio.wait_for(self._negotiate(pc, offer), _ANSWER_TIMEOUT_S)
        except TimeoutError as exc:
            await self.close_resource(resource, reason="negotiation timed out")
            raise WhipError(503, "could not gather ICE candidates in time; retry") from exc
        except WhipError:
            await self.close_resource(resource, reason="negotiation failed")
            raise
        except Exception as exc:  # aiortc rejects what our validation let through
            log.info("whip negotiation -> failed (%s)", type(exc).__name__, extra=pii(participant=participant))
            await self.close_resource(resource, reason="negotiation failed")
            raise WhipError(
                400,
                "SDP offer could not be negotiated (its DTLS, ICE or codec lines are inconsistent); "
                "send the offer from createOffer() unchanged",
            ) from exc
        self.resources[rid] = resource
        resource.counted = True
        self.metrics.active_streams.labels("publisher").inc()
        log.info(
            "whip resource -> created (epoch %d)",
            publish.epoch,
            extra=pii(participant=participant, session=session, resource=rid),
        )
        return resource, pc.localDescription.sdp

    async def _negotiate(self, pc: RTCPeerConnection, offer: str) -> None:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
        if answer is None:
            raise WhipError(400, "no answer could be made for this offer; send a standard WebRTC offer")
        await pc.setLocalDescription(answer)  # aiortc gathers ICE here: the answer is complete

    def _start_track(self, resource: WhipResource, track: MediaStreamTrack) -> None:
        s = self.settings
        name = f"{resource.id}-{track.kind}"
        publisher = StreamPublisher(bus=self.transports.media, metrics=self.metrics, name=name)
        publisher.start()
        resource.publishers.append(publisher)
        sender = attach_sr_clock(resource.pc, track)
        throttle_remb(resource.pc, track)
        if track.kind == "video":
            withheld = self.metrics.media_dropped_total.labels(AWAITING_KEYFRAME)
            bound_jitter_buffer(resource.pc, track, capacity=s.video_jitter_packets, on_withheld=withheld.inc)
            packets = last_packet_clock(resource.pc, track)
            if packets is not None:
                resource.monitor.watch_video_packets(packets)  # camera on while packets come, decoded or not
        self.metrics.active_streams.labels(track.kind).inc()
        if track.kind == "video":
            sampler = FrameSampler(
                session=resource.session,
                participant=resource.participant,
                role=resource.role,
                fps=s.analysis_fps,
                width=s.frame_width,
                epoch=resource.publish.epoch,
                media_offset=resource.publish.offset,
                rate=self.transports.source_rate,
            )
            resource.samplers["video"] = sampler
            coro = consume_video(
                track,
                sampler=sampler,
                publisher=publisher,
                observer=resource.monitor,
                metrics=self.metrics,
                max_backlog=s.max_decoded_backlog,
                sender=sender,
            )
        else:
            chunker = AudioChunker(
                session=resource.session,
                participant=resource.participant,
                role=resource.role,
                chunk_s=s.audio_chunk_s,
                epoch=resource.publish.epoch,
                media_offset=resource.publish.offset,
            )
            resource.samplers["audio"] = chunker
            coro = consume_audio(
                track,
                chunker=chunker,
                publisher=publisher,
                observer=resource.monitor,
                metrics=self.metrics,
                max_backlog=s.max_decoded_backlog,
                sender=sender,
            )
        resource.tasks.append(spawn(coro, name=f"consume-{name}"))

    async def close_participant(self, session: str, participant: str, *, before_epoch: int | None = None) -> None:
        """End this participant's resources here (they published again, here or on another worker).

        ``before_epoch``: only resources of an older publish (another worker's newer publish
        replaces ours, never the other way round, however the two requests race).
        """
        for resource in list(self.resources.values()):
            if resource.session == session and resource.participant == participant:
                if before_epoch is None or resource.publish.epoch < before_epoch:
                    await self.close_resource(resource, reason="replaced")

    async def close_resource(self, resource: WhipResource, *, reason: str) -> None:
        """Stop consumers and publishers, close the peer connection, send 'left'."""
        if resource.closed:
            return
        resource.closed = True
        self.resources.pop(resource.id, None)
        for task in resource.tasks:
            task.cancel()
        for task in resource.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for publisher in resource.publishers:
            await publisher.close()
        for kind in resource.samplers:  # each was counted when its track started
            self.metrics.active_streams.labels(kind).dec()
        if resource.counted:  # a failed negotiation never counted as a publisher
            self.metrics.active_streams.labels("publisher").dec()
        try:
            if not await close_bounded(resource.pc, timeout_s=PC_CLOSE_TIMEOUT_S):
                log.warning("peer connection %s -> %s (close took over %.0f s)", "closing", "abandoned",
                            PC_CLOSE_TIMEOUT_S, extra=pii(participant=resource.participant, session=resource.session))
                self.metrics.errors_total.labels("ingest", "pc_close_timeout").inc()
        finally:
            await resource.reporter.close()  # 'left' goes out however the close went
        log.info(
            "whip resource -> closed (%s)",
            reason,
            extra=pii(participant=resource.participant, session=resource.session, resource=resource.id),
        )

    async def close(self) -> None:
        """End every resource (server shutdown)."""
        await asyncio.gather(*(self.close_resource(r, reason="shutdown") for r in list(self.resources.values())))
