"""When the local supervisor restarts a service (infra/local/supervisor.py), with a fake runner and clock."""

from __future__ import annotations

from contextlib import contextmanager
from itertools import pairwise

from infra.local.supervisor import Supervisor, restart_delay
from ogp.settings import Settings

WATCHED = "ledger-processor"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Every service alive and healthy, except what a test says about WATCHED; restarts are recorded."""

    def __init__(self, clock: Clock):
        self.settings = Settings(environment="test")
        self.clock = clock
        self.alive = True
        self.healthy_now = True
        self.comes_back = lambda: (True, True)  # (alive, healthy) right after a restart
        self.restarts: list[tuple[float, bool]] = []

    @contextmanager
    def locked(self, service, wait=True):
        yield True

    def process(self, service):
        runner = self

        class Proc:
            def pid(self):
                return 4242 if service.name != WATCHED or runner.alive else None

        return Proc()

    def healthy(self, service) -> bool:
        return service.name != WATCHED or self.healthy_now

    def restart(self, service, kill=False, wait=True) -> None:
        assert service.name == WATCHED and wait is False
        self.restarts.append((self.clock.now, kill))
        self.alive, self.healthy_now = self.comes_back()


def watch(seconds: float, runner: FakeRunner, supervisor: Supervisor, clock: Clock) -> None:
    """Check once a second for ``seconds``."""
    for _ in range(int(seconds)):
        supervisor.check()
        clock.now += 1


def test_a_dead_service_is_started_at_once_and_a_crash_loop_backs_off():
    clock = Clock()
    runner = FakeRunner(clock)
    runner.alive = False
    runner.comes_back = lambda: (False, False)  # crashes again at once, every time
    watch(60, runner, Supervisor(runner, clock=clock), clock)
    times = [t for t, _ in runner.restarts]
    assert times[0] == 0
    assert [b - a for a, b in pairwise(times)] == [2, 4, 8, 16]
    assert all(kill is False for _, kill in runner.restarts)


def test_a_stuck_service_is_killed_and_restarted_once_unhealthy_for_the_bound():
    clock = Clock()
    runner = FakeRunner(clock)
    supervisor = Supervisor(runner, unhealthy_after=6, clock=clock)
    watch(5, runner, supervisor, clock)
    runner.healthy_now = False  # frozen, or its loop stopped moving
    stuck_at = clock.now
    watch(10, runner, supervisor, clock)
    assert runner.restarts == [(stuck_at + 6, True)]


def test_a_restarted_service_gets_its_start_grace_and_restarts_count_again_from_zero_once_stable():
    clock = Clock()
    runner = FakeRunner(clock)
    supervisor = Supervisor(runner, unhealthy_after=6, start_grace=20, stable_after=30, clock=clock)
    runner.healthy_now = False
    runner.comes_back = lambda: (True, False)  # running, not answering yet
    watch(31, runner, supervisor, clock)
    assert [t for t, _ in runner.restarts] == [6]  # then 20 s of grace to come up, then 6 s unhealthy
    watch(2, runner, supervisor, clock)
    assert [t for t, _ in runner.restarts] == [6, 32]
    runner.healthy_now = True
    watch(31, runner, supervisor, clock)
    runner.healthy_now = False
    stuck_at = clock.now
    watch(7, runner, supervisor, clock)
    assert runner.restarts[-1] == (stuck_at + 6, True)  # no back-off left over from before the stable spell


def test_restart_delays_grow_to_a_cap():
    assert [restart_delay(n) for n in range(8)] == [0, 2, 4, 8, 16, 32, 60, 60]
