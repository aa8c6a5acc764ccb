"""Text as a fusion modality: its own block and contributions, bit-identical scores without interactions."""

from __future__ import annotations

import asyncio
from contextlib import suppress

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch import Tensor

from services.inference import fusion
from services.inference.engine import InferenceEngine
from services.inference.interactions import InteractionIntake
from services.inference.settings import InferenceSettings
from shared.contracts.events import ScoreEvent
from shared.contracts.interactions import InteractionEvent
from shared.contracts.media import MediaMessage
from shared.contracts.timing import wall_clock
from shared.contracts.topics import INTERACTIONS
from shared.metrics import Metrics
from shared.signals import INPUTS
from shared.transport.memory import MemoryEventBus
from shared.transport.typed import EventPublisher

from .test_inference_engine import NoFaces, media

pytestmark = pytest.mark.unit

CORE = [i for i, s in enumerate(INPUTS) if not s.optional]


def _pre_text_forward(model: fusion.FusionModel, x: Tensor, m: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The fusion forward pass as it was before the text signals, on the core signals only."""
    idx = torch.tensor(CORE)
    p = {k: t.detach() for k, t in model.state_dict().items()}
    centre, log_scale, direction = p["centre"][idx], p["log_scale"][idx], p["direction"][idx]
    missing, time_logits = p["missing_logit"][idx], p["time_logits"][:, idx].contiguous()
    head_w, head_b = p["head_w"][:, idx].contiguous(), p["head_b"]
    x, m = x[..., idx].contiguous(), m[..., idx].contiguous()
    gate = torch.sigmoid(direction * (x - centre) / torch.exp(log_scale))
    evidence = m * gate + (1 - m) * torch.sigmoid(missing)
    logits = time_logits.unsqueeze(0) + torch.log(v.clamp_min(1e-6))[:, None, None, :]
    pooled = torch.einsum("bhft,btf->bhf", torch.softmax(logits, dim=-1), evidence)
    head_logit = (pooled * head_w).sum(-1) + head_b
    probs = torch.sigmoid(head_logit)
    e = fusion.HEADS.index("engagement")
    lin = head_logit[:, e] - head_b[e]
    base = torch.sigmoid(head_b[e])
    slope = torch.where(lin.abs() > 1e-6, (probs[:, e] - base) / lin, base * (1 - base))
    coverage = (m.mean(-1) * v).sum(-1) / v.sum(-1).clamp_min(1.0)
    decisive = (2 * probs[:, [0, 1, 2]] - 1).abs().mean(-1)
    conf = torch.sigmoid(p["conf_w"][0] * coverage + p["conf_w"][1] * decisive + p["conf_b"])
    return probs, conf, pooled[:, e, :] * head_w[e] * slope[:, None]


def _inputs(batch: int = 128, window: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(batch, window, fusion.N_SIGNALS, generator=g) * 25
    m = (torch.rand(batch, window, fusion.N_SIGNALS, generator=g) > 0.3).float()
    v = torch.ones(batch, window)
    v[: batch // 2, :3] = 0
    return x, m, v


def test_without_interactions_the_model_computes_exactly_the_pre_text_model() -> None:
    model = fusion.FusionModel(window=8).eval()
    x, m, v = _inputs()
    m[..., fusion.OPTIONAL] = 0.0
    x[..., fusion.OPTIONAL] = 123.0  # unmeasured values are ignored
    with torch.inference_mode():
        out = model(x, m, v)
        probs, conf, contrib = _pre_text_forward(model, x, m, v)
    assert torch.equal(out.probs, probs) and torch.equal(out.confidence, conf)
    assert torch.equal(out.contributions[:, CORE], contrib)
    assert torch.all(out.contributions[:, list(fusion.OPTIONAL)] == 0.0)


def test_an_asked_question_raises_engagement_through_its_own_contribution() -> None:
    model = fusion.FusionModel(window=8).eval()
    x, m, v = _inputs(batch=16)
    m[..., fusion.OPTIONAL] = 0.0
    asked = (x.clone(), m.clone())
    asked[0][..., fusion.IDX["asked_question"]] = 1.0
    asked[1][..., fusion.IDX["asked_question"]] = 1.0
    asked[1][..., fusion.IDX["chat_activity"]] = 1.0  # measured: no chat messages (0) is no evidence
    asked[0][..., fusion.IDX["chat_activity"]] = 0.0
    with torch.inference_mode():
        before, after = model(x, m, v), model(*asked, v)
    e = fusion.HEADS.index("engagement")
    assert torch.all(after.probs[:, e] > before.probs[:, e])
    assert torch.all(after.contributions[:, fusion.IDX["asked_question"]] > 0.01)
    assert torch.all(after.contributions[:, fusion.IDX["chat_activity"]].abs() < 1e-3)
    total = after.contributions.sum(-1)
    no_evidence = torch.sigmoid(model.head_b[e])
    assert torch.allclose(total, after.probs[:, e] - no_evidence, atol=1e-5)  # contributions sum to the lift


def _engine() -> InferenceEngine:
    e = InferenceEngine(settings=InferenceSettings(), backend=NoFaces())
    e.load()
    return e


def _question(eid: str, participant: str, *, ts: float, kind: str = "chat", text: str = "can we use calculators"):
    return InteractionEvent(
        event_id=eid, session="s", participant=participant, kind=kind, ts=ts, text=text  # type: ignore[arg-type]
    ).derived(keep_text=False)


def _scores(events: list[ScoreEvent], participant: str) -> list[dict[str, object]]:
    return [e.model_dump(exclude={"timing"}) for e in events if e.participant == participant]


def _run(engine: InferenceEngine, msgs: list[MediaMessage]) -> list[ScoreEvent]:
    received = [wall_clock()] * len(msgs)
    return [*engine.process(msgs, received=received), *engine.flush()]


def test_engine_fuses_a_question_for_its_participant_and_leaves_the_others_bit_identical() -> None:
    msgs = sorted([*media(2.0, 2.0, "alice"), *media(2.0, 2.0, "bob")], key=lambda m: m.media_time)
    plain = _run(_engine(), msgs)
    engine = _engine()
    assert engine.add_interaction(_question("q1", "alice", ts=wall_clock() - 1.0))  # before any media of alice
    assert not engine.add_interaction(_question("q1", "alice", ts=wall_clock() - 1.0))  # a repeat
    fused = _run(engine, msgs)
    assert _scores(fused, "bob") == _scores(plain, "bob")
    alice = [e for e in fused if e.participant == "alice"]
    alice_plain = [e for e in plain if e.participant == "alice"]
    assert alice and all(e.contributions["asked_question"] > 0.0 for e in alice)
    assert all(a.engagement > b.engagement for a, b in zip(alice, alice_plain, strict=True))
    assert all("asked_question" not in e.contributions for e in plain)


def test_text_features_travel_with_the_participant_snapshot() -> None:
    msgs = media(1.0, 1.0, "alice")
    engine = _engine()
    _run(engine, msgs[:4])
    engine.add_interaction(_question("q1", "alice", ts=wall_clock() - 1.0))
    other = _engine()
    other.restore(engine.snapshot("s", "alice"))
    later = _run(other, msgs[4:])
    assert later and all(e.contributions.get("asked_question", 0.0) > 0.0 for e in later)
    assert not other.add_interaction(_question("q1", "alice", ts=wall_clock() - 1.0))  # ids travel too


def test_a_question_older_than_its_horizon_counts_no_more() -> None:
    engine = _engine()
    engine.add_interaction(_question("q1", "alice", ts=wall_clock() - 600.0, text="ok thanks"))
    events = _run(engine, media(1.0, 1.0, "alice"))
    assert events and all(e.contributions.get("asked_question", 0.0) == 0.0 for e in events)


async def test_intake_feeds_the_engine_from_the_topic() -> None:
    bus = MemoryEventBus()
    await bus.start()
    engine = _engine()
    intake = InteractionIntake(bus=bus, engine=engine, metrics=Metrics(CollectorRegistry()), group="inference-text")
    task = asyncio.create_task(intake.run())
    await intake.ready.wait()
    await EventPublisher(bus=bus, topic=INTERACTIONS).publish(_question("q1", "alice", ts=wall_clock()))
    await bus.publish(INTERACTIONS.name, "s", b"not json")
    for _ in range(100):
        if intake.taken:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    await bus.close()
    assert intake.taken == 1
    events = _run(engine, media(1.0, 1.0, "alice"))
    assert all(e.contributions["asked_question"] > 0 for e in events)
    assert np.isfinite([e.engagement for e in events]).all()
