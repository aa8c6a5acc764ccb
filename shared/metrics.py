"""Prometheus metrics shared by every service (names follow Prometheus conventions).

One :class:`Metrics` object per registry. Services take it as a constructor argument;
``default_metrics()`` binds it to prometheus-client's global registry for ``/metrics``.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from shared.contracts.timing import TimingTrail, wall_clock

LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """Every ClassPulse metric, registered on one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.stage_seconds = Histogram(
            "classpulse_stage_seconds",
            "Time a message spent inside one stage (receive -> emit).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.since_capture_seconds = Histogram(
            "classpulse_since_capture_seconds",
            "Latency from media capture to the moment a stage emitted (end to end at the last stage).",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.transport_hop_seconds = Histogram(
            "classpulse_transport_hop_seconds",
            "Time between one stage emitting a message and the next stage receiving it.",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.messages_total = Counter(
            "classpulse_messages_total",
            "Messages handled, by stage and kind.",
            ["stage", "kind"],
            registry=registry,
        )
        self.errors_total = Counter(
            "classpulse_errors_total",
            "Errors, by stage and kind of error.",
            ["stage", "error"],
            registry=registry,
        )
        self.media_dropped_total = Counter(
            "classpulse_media_dropped_total",
            "Media frames or chunks dropped (lossy by design), by reason.",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "classpulse_queue_depth",
            "Items waiting in a queue or stream.",
            ["queue"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "classpulse_inference_batch_size",
            "Items per inference batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.active_streams = Gauge(
            "classpulse_active_streams",
            "Media streams currently published, by kind.",
            ["kind"],
            registry=registry,
        )

        # Class analytics (fed from class aggregates; labelled by session).
        self.class_engagement = Gauge(
            "classpulse_class_engagement",
            "Mean engagement of the class in the latest aggregate window (0..1).",
            ["session"],
            registry=registry,
        )
        self.class_attentive_ratio = Gauge(
            "classpulse_class_attentive_ratio",
            "Share of present participants attentive in the latest aggregate window (0..1).",
            ["session"],
            registry=registry,
        )
        self.class_participants = Gauge(
            "classpulse_class_participants",
            "Participants of a session in the latest aggregate window, by state (total, present).",
            ["session", "state"],
            registry=registry,
        )
        self.class_teacher_talk_share = Gauge(
            "classpulse_class_teacher_talk_share",
            "Teacher's share of talk time in the latest aggregate window (0..1).",
            ["session"],
            registry=registry,
        )
        self.class_questions_total = Counter(
            "classpulse_class_questions_total",
            "Questions asked (chat, Q&A, transcripts) summed over aggregate windows, by session and role.",
            ["session", "role"],
            registry=registry,
        )
        self.class_chat_messages_total = Counter(
            "classpulse_class_chat_messages_total",
            "Written messages (chat, questions, answers) summed over aggregate windows, by session.",
            ["session"],
            registry=registry,
        )
        self.class_participation_equity_gini = Gauge(
            "classpulse_class_participation_equity_gini",
            "Gini of student participation over voice + chat in the latest aggregate window (0 = equal).",
            ["session"],
            registry=registry,
        )
        self.class_response_latency_seconds = Gauge(
            "classpulse_class_response_latency_seconds",
            "Latest teacher question -> first student response delay (s).",
            ["session"],
            registry=registry,
        )
        self.talk_seconds_total = Counter(
            "classpulse_talk_seconds_total",
            "Seconds of talk (own voice activity) summed over aggregate windows, by session and role.",
            ["session", "role"],
            registry=registry,
        )
        self.live_viewers = Gauge(
            "classpulse_live_viewers",
            "Open live feeds (WebSocket/SSE) on the gateway.",
            ["transport"],
            registry=registry,
        )

        # Aggregator.
        self.aggregator_sessions = Gauge(
            "classpulse_aggregator_sessions",
            "Sessions whose aggregation state this aggregator holds in memory.",
            registry=registry,
        )

        # Inference worker.
        self.inference_seconds = Histogram(
            "classpulse_inference_seconds",
            "Inference time per micro-batch, by part (perception, audio, fusion, total).",
            ["part"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_item_seconds = Histogram(
            "classpulse_inference_item_seconds",
            "Inference time per item (batch total / items), by device.",
            ["device"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_queue_wait_seconds = Histogram(
            "classpulse_inference_queue_wait_seconds",
            "Time a media item waited in the worker's micro-batch queue before its batch ran.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_analysed_frames_total = Counter(
            "classpulse_inference_analysed_frames_total",
            "Video frames analysed by the inference worker (perception + a score step), by session.",
            ["session"],
            registry=registry,
        )
        self.inference_participants = Gauge(
            "classpulse_inference_participants",
            "Participants with video the inference worker analyses (sent a frame in the last seconds), by session.",
            ["session"],
            registry=registry,
        )
        self.inference_target_fps = Gauge(
            "classpulse_inference_target_fps",
            "Analysed frames per second per participant the worker aims at (its full rate unless degraded).",
            registry=registry,
        )
        self.inference_busy_ratio = Gauge(
            "classpulse_inference_busy_ratio",
            "Share of the last control window the inference batch loop spent running batches (0..1).",
            registry=registry,
        )
        self.inference_device = Gauge(
            "classpulse_inference_device",
            "1 for the device the fusion model runs on (cpu or cuda).",
            ["device"],
            registry=registry,
        )
        self.perception_batch_size = Histogram(
            "classpulse_inference_perception_batch_size",
            "Frames per perception backend call (one call per round of a micro-batch; each stage runs once per call).",
            ["backend"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.perception_device_seconds = Histogram(
            "classpulse_inference_perception_device_seconds",
            "Wall time of one perception backend call, results back on the host (device time on CUDA), by backend "
            "and device.",
            ["backend", "device"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.analysis_info = Gauge(
            "classpulse_inference_analysis_info",
            "Which perception backend and device this worker analyses with (value 1).",
            ["backend", "device"],
            registry=registry,
        )
        self.inference_gpu_memory_bytes = Gauge(
            "classpulse_inference_gpu_memory_bytes",
            "CUDA memory allocated by the inference worker (only on CUDA).",
            registry=registry,
        )

        # Inference scale-out: shard leases and participant-state hand-over.
        self.inference_owned_shards = Gauge(
            "classpulse_inference_owned_shards",
            "Media shards whose lease this inference worker holds.",
            registry=registry,
        )
        self.inference_lease_events_total = Counter(
            "classpulse_inference_lease_events_total",
            "Shard lease changes of this worker: acquired (free shard), taken_over (a dead owner's expired lease), "
            "released (handed over on rebalance or shutdown), lost (renewal failed; its media is no longer processed), "
            "confirmed (a lease that lapsed locally, the worker being slow, was still its own in the store).",
            ["event"],
            registry=registry,
        )
        self.inference_republished_events_total = Counter(
            "classpulse_inference_republished_events_total",
            "Scores a dead or lapsed owner recorded with its media before publishing them, published again as "
            "they were by the shard's next owner (same ids and values; consumers drop what already got out).",
            registry=registry,
        )
        self.inference_snapshot_seconds = Histogram(
            "classpulse_inference_snapshot_seconds",
            "Time to move participant state: save (snapshot a shard's participants and store them), "
            "restore (load and adopt one participant's snapshot).",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        # Supervision and broker outages (shared.supervise, shared.transport.kafka).
        self.task_restarts_total = Counter(
            "classpulse_task_restarts_total",
            "Supervised background tasks restarted, by task and cause (transient: a broker was unreachable; "
            "crash: any other error).",
            ["task", "cause"],
            registry=registry,
        )
        self.events_unacked = Gauge(
            "classpulse_events_unacked",
            "Events handed to the Kafka producer and not yet acknowledged by the broker (bounded).",
            registry=registry,
        )
        self.event_publish_retries_total = Counter(
            "classpulse_event_publish_retries_total",
            "Event publishes retried because the broker did not acknowledge them in time, by topic.",
            ["topic"],
            registry=registry,
        )
        self.event_publish_waits_total = Counter(
            "classpulse_event_publish_waits_total",
            "Event publishes that waited for room because the unacknowledged-event buffer was full.",
            registry=registry,
        )
        self.event_commits_failed_total = Counter(
            "classpulse_event_commits_failed_total",
            "Consumer offset commits refused (the group rebalanced); the records are read again, consumers dedupe.",
            ["group"],
            registry=registry,
        )
        # Request guard (shared.http_guard): malformed and refused requests are counted, not logged one by one.
        self.malformed_requests_total = Counter(
            "classpulse_malformed_requests_total",
            "Requests answered 4xx because they were malformed (HTTP parse errors, bad ids, values, bodies), "
            "by service and reason; 'internal' counts handler failures answered 500.",
            ["service", "reason"],
            registry=registry,
        )
        self.rate_limited_total = Counter(
            "classpulse_rate_limited_total",
            "Requests answered 429 by a rate limit or viewer cap, by service and limit (token, address, viewers).",
            ["service", "limit"],
            registry=registry,
        )
        # Transcribe stage (speech -> text events).
        self.transcribe_seconds = Histogram(
            "classpulse_transcribe_seconds",
            "Whisper time per speech segment, by device.",
            ["device"],
            buckets=(*LATENCY_BUCKETS, 10.0),
            registry=registry,
        )
        self.transcribe_segments_total = Counter(
            "classpulse_transcribe_segments_total",
            "Speech segments of the transcribe stage, by outcome: text (an event was emitted), empty (no words).",
            ["outcome"],
            registry=registry,
        )
        self.transcribe_speech_seconds_total = Counter(
            "classpulse_transcribe_speech_seconds_total",
            "Seconds of segment audio given to Whisper.",
            registry=registry,
        )
        self.transcribe_delay_seconds = Histogram(
            "classpulse_transcribe_delay_seconds",
            "Delay of a speech event, by span: speech_end (capture of the segment's end -> event published), "
            "segmented (capture of the segment's end -> the segmenter closed it), "
            "queued (segment closed by the segmenter -> a transcribe worker took it).",
            ["span"],
            buckets=(*LATENCY_BUCKETS, 10.0, 30.0),
            registry=registry,
        )

        self.webhook_deliveries_total = Counter(
            "classpulse_webhook_deliveries_total",
            "Webhook deliveries by event and outcome (delivered, retried, dead_lettered, dropped).",
            ["event", "outcome"],
            registry=registry,
        )
        self.webhook_attempts_total = Counter(
            "classpulse_webhook_attempts_total",
            "Webhook HTTP attempts by result (ok, http, timeout, connection).",
            ["result"],
            registry=registry,
        )
        self.webhook_attempt_seconds = Histogram(
            "classpulse_webhook_attempt_seconds",
            "Duration of one webhook HTTP attempt.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=registry,
        )
        self.webhook_delivery_seconds = Histogram(
            "classpulse_webhook_delivery_seconds",
            "From a webhook delivery's creation to its successful attempt (retries included).",
            ["event"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
            registry=registry,
        )
        self.webhook_pending = Gauge(
            "classpulse_webhook_pending",
            "Webhook deliveries waiting for an attempt (every gateway's, as the store holds them).",
            registry=registry,
        )

    def observe_trail(self, trail: TimingTrail, *, stage: str) -> None:
        """Record one stage's time and capture->emit latency from a stamped trail."""
        stamp = trail.stage(stage)
        if stamp is None:
            return
        self.stage_seconds.labels(stage).observe(max(0.0, stamp.emitted - stamp.received))
        self.since_capture_seconds.labels(stage).observe(max(0.0, stamp.emitted - trail.capture_ts))

    def observe_hop(self, trail: TimingTrail, *, transport: str, received: float | None = None) -> None:
        """Record the hop from the last stamped stage's emit to ``received`` (default now)."""
        if not trail.stages:
            return
        now = wall_clock() if received is None else received
        self.transport_hop_seconds.labels(transport).observe(max(0.0, now - trail.stages[-1].emitted))


@lru_cache(maxsize=1)
def default_metrics() -> Metrics:
    """The metrics bound to prometheus-client's global registry (served on ``/metrics``)."""
    return Metrics(REGISTRY)
