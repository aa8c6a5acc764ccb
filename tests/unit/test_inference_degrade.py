"""The degradation policy on virtual time: fair thinning, floor, hysteresis, recovery."""

from __future__ import annotations

import itertools

import pytest

from services.inference.degrade import DegradeConfig, DegradePolicy, Load
from services.inference.settings import InferenceSettings

pytestmark = pytest.mark.unit

INPUT_FPS = 5.0


class Class:
    """``students`` participants sending 5 fps into a worker that costs ``cost_s`` per analysed frame.

    Virtual time in ticks of 0.2 s: every student offers one frame, admitted frames join a FIFO,
    and the worker runs as many queued frames as the tick holds (a saturated loop is busy the
    whole tick); each frame's wait is its time in the queue.
    """

    def __init__(self, policy: DegradePolicy, *, students: int, cost_s: float) -> None:
        self.policy = policy
        self.students = students
        self.cost_s = cost_s
        self.now = 0.0
        self.queue: list[float] = []  # enqueue times
        self.kept: dict[str, int] = {}
        self.loads: list[Load] = []

    def run(self, seconds: float) -> None:
        dt = 1 / INPUT_FPS
        for _ in range(round(seconds * INPUT_FPS)):
            for s in range(self.students):
                key = f"c/s{s}"
                if self.policy.admit(key, self.now, now=self.now):
                    self.kept[key] = self.kept.get(key, 0) + 1
                    self.queue.append(self.now)
            fit = min(len(self.queue), int(dt / self.cost_s + 1e-9))
            done, self.queue = self.queue[:fit], self.queue[fit:]
            self.policy.observe_batch(busy_s=fit * self.cost_s, frames=fit, waits=[self.now - t + 0.05 for t in done])
            self.now = round(self.now + dt, 6)
            load = self.policy.update(now=self.now)
            if load is not None:
                self.loads.append(load)

    @property
    def backlog_s(self) -> float:
        return len(self.queue) * self.cost_s

    def rates(self, seconds: float) -> list[float]:
        """Kept frames per second per student since :meth:`reset`."""
        return [n / seconds for n in self.kept.values()]

    def reset(self) -> None:
        self.kept = {}


def policy(**kw: float) -> DegradePolicy:
    return DegradePolicy(DegradeConfig(**kw), now=0.0)


def test_not_overloaded_keeps_every_frame() -> None:
    cls = Class(policy(), students=10, cost_s=0.01)  # 50 frames/s x 10 ms = half the loop
    cls.run(20)
    assert cls.policy.target is None
    assert all(n == 100 for n in cls.kept.values()) and len(cls.kept) == 10
    assert all(0.4 < load.busy < 0.6 for load in cls.loads)


def test_overload_lowers_every_students_rate_together_and_fits_the_load() -> None:
    cls = Class(policy(min_fps=1.0), students=20, cost_s=0.015)  # full rate needs 1.5 s of work per second
    cls.run(10)
    target = cls.policy.target
    assert target is not None and 1.0 <= target < 3.0
    cls.reset()
    cls.run(20)
    rates = cls.rates(20)
    assert len(rates) == 20
    assert max(rates) - min(rates) <= 0.1  # fair: every student gets the same rate
    assert min(rates) >= 2.0  # 0.75 / (0.015 x 20) = 2.5 fps fits
    assert cls.loads[-1].busy < 0.9 and cls.backlog_s < 0.2  # the backlog drained


def test_floor_holds_under_any_load() -> None:
    cls = Class(policy(min_fps=1.5), students=30, cost_s=0.1)  # hopeless: even the floor does not fit
    cls.run(15)
    assert cls.policy.target == 1.5
    cls.reset()
    cls.run(10)
    assert all(r == pytest.approx(1.5, abs=0.11) for r in cls.rates(10))


def test_recovers_to_full_rate_in_steps_when_load_falls() -> None:
    cls = Class(policy(min_fps=1.0, recover_s=3.0), students=20, cost_s=0.015)
    cls.run(10)
    degraded = cls.policy.target
    assert degraded is not None
    cls.students = 4  # most of the class left: 4 x 5 fps x 15 ms = 0.3 of the loop
    cls.run(60)
    assert cls.policy.target is None
    ups = [load.target for load in cls.loads if load.changed and (load.before or 0) < (load.target or 99)]
    assert len(ups) >= 2  # climbs back step by step, not in one jump
    steps = [b - a for a, b in zip([degraded, *ups[:-1]], [u or 5.0 for u in ups], strict=True)]
    assert all(s <= 0.5 + 1e-9 for s in steps)


def test_hysteresis_holds_between_the_thresholds() -> None:
    # At the rate it settles on, the load sits between "climb" and "overloaded": no flapping.
    cls = Class(policy(min_fps=1.0, recover_s=2.0), students=20, cost_s=0.015)
    cls.run(60)
    changes = [load for load in cls.loads[10:] if load.changed]
    assert len(changes) <= 2
    assert cls.policy.target is not None


def test_a_backlog_alone_counts_as_overload() -> None:
    p = policy(wait_high_s=0.3)
    for i in range(5):
        p.admit("c/a", i * 0.2, now=i * 0.2)
    p.observe_batch(busy_s=0.2, frames=5, waits=[0.8] * 5)  # lightly busy, but frames waited 0.8 s
    load = p.update(now=1.0)
    assert load is not None and load.changed and load.target == pytest.approx(4.0)


def test_thinning_spreads_kept_frames_by_media_time() -> None:
    p = policy()
    p.target = 2.5
    kept = [i for i in range(25) if p.admit("c/a", i * 0.2, now=i * 0.2)]
    assert kept == list(range(0, 25, 2))  # every other frame: 2.5 fps from 5 fps
    p.target = 2.0
    times = [round(t * 0.2, 1) for t in range(25, 50) if p.admit("c/a", t * 0.2, now=t * 0.2)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) <= 0.6 + 1e-9 and len(times) == 10  # 2 fps, no gap longer than a tick + a frame


def test_a_restarted_stream_is_analysed_at_once() -> None:
    p = policy()
    p.target = 1.0
    assert p.admit("c/a", 30.0, now=0.0)
    assert not p.admit("c/a", 30.2, now=0.1)
    assert p.admit("c/a", 0.0, now=0.2)  # media time went back (a new publisher): no long wait


def test_participants_and_sessions_expire() -> None:
    p = policy(active_s=3.0)
    p.admit("s1/a", 0.0, now=0.0)
    p.admit("s1/b", 0.0, now=0.0)
    p.admit("s2/c", 0.0, now=2.0)
    assert p.sessions(now=2.5) == {"s1": 2, "s2": 1}
    assert p.sessions(now=4.0) == {"s2": 1}
    assert p.participants(now=10.0) == 0


def test_settings_build_the_policy_and_reject_a_floor_above_the_full_rate() -> None:
    config = InferenceSettings(min_fps=2.0, degrade_busy=0.8, degrade_wait_ms=300).degrade_config()
    assert (config.min_fps, config.busy_high, config.wait_high_s) == (2.0, 0.8, 0.3)
    assert config.busy_target == pytest.approx(0.6)
    with pytest.raises(ValueError, match="MIN_FPS"):
        InferenceSettings(min_fps=6.0, full_fps=5.0)
    with pytest.raises(ValueError):
        DegradeConfig(min_fps=0.0)
