"""The controller's process-level duties on a driver that records every call.

Grows before shrinks, grow-only safe mode when planning fails, and paced
restores from live state. A recording driver stands in for libvirt: the order
of two calls within one cycle cannot be observed on real guests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from oslo_config import cfg

from nova_balloon.controller.cycle import Controller, Pacer, owes_memory
from nova_balloon.controller.planner import GuestMemory
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import (
    BalloonStats,
    GuestFacts,
    GuestSample,
    GuestView,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies import Policy
from nova_balloon.virt.driver import Collection
from tests.unit.planning import GiB, MiB, limits, settings

SETTINGS = settings(4.0, limits(max_shrink_kib=512 * MiB), fast_free_kib=1 * GiB)


def sample(uuid: str, actual_kib: int, usable_kib: int | None,
           run_state: RunState = RunState.RUNNING, nova: bool = True) -> GuestSample:
    facts = GuestFacts(uuid=uuid, name=f'g-{uuid}', max_memory_kib=4 * GiB,
                       nova=NovaMetadata('vm', 'm1', 4096, {}) if nova else None,
                       unballoonable=None, stats_period_s=2)
    stats = BalloonStats(actual_kib=actual_kib, usable_kib=usable_kib, last_update=1)
    return GuestSample(facts, stats, run_state, stats_age_s=1.0)


class TargetsPolicy(Policy):
    """Proposes fixed targets per guest."""

    def __init__(self, targets: Mapping[str, int]):
        super().__init__(cfg.ConfigOpts())
        self.targets = targets

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        return {g.uuid: self.targets[g.uuid] for g in guests}


class BrokenPolicy(Policy):
    def __init__(self):
        super().__init__(cfg.ConfigOpts())

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        raise ZeroDivisionError('a policy bug')


class RecordingDriver:
    """Guests as given; records each target set, in order."""

    def __init__(self, samples: list[GuestSample]):
        self.samples = samples
        self.targets: list[tuple[str, int]] = []

    def collect(self) -> Collection:
        return Collection(64 * GiB, 32 * GiB, self.samples)

    def set_target(self, uuid: str, target_kib: int) -> None:
        self.targets.append((uuid, target_kib))

    def set_stats_period(self, uuid: str, period_s: int) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_grows_are_applied_before_shrinks():
    # 'a' (first in collection order) is idle and shrinks; 'b' grows.
    driver = RecordingDriver([sample('a', 4 * GiB, 3 * GiB), sample('b', 2 * GiB, GiB)])
    clock = FakeClock()
    policy = TargetsPolicy({'a': 4 * GiB, 'b': 2 * GiB})
    controller = Controller(driver, policy, SETTINGS, PolicyFile(None), dry_run=False,
                            clock=clock)
    controller.run_cycle()  # The balloons have held still since this cycle.
    clock.now += 10
    driver.targets.clear()
    policy.targets = {'a': 3 * GiB, 'b': 4 * GiB}
    report = controller.run_cycle()
    assert {u for u, _ in driver.targets} == {'a', 'b'}, report.plan
    assert [u for u, _ in driver.targets] == ['b', 'a']


def test_failed_cycles_grow_short_guests_and_shrink_none(caplog: pytest.LogCaptureFixture):
    short = sample('short', 2 * GiB, 100 * MiB)
    roomy = sample('roomy', 2 * GiB, 1536 * MiB)
    full = sample('full', 4 * GiB, 100 * MiB)
    migrating = sample('moving', 2 * GiB, 100 * MiB, RunState.MIGRATING)
    driver = RecordingDriver([short, roomy, full, migrating])
    controller = Controller(driver, BrokenPolicy(), SETTINGS, PolicyFile(None),
                            dry_run=False)
    first = controller.run_cycle()
    assert first.failure and 'a policy bug' in first.failure
    assert driver.targets == [('short', 4 * GiB)]
    assert controller.failed_cycles == 1
    second = controller.run_cycle()
    assert second.failure and controller.failed_cycles == 2
    errors = [r for r in caplog.records if r.levelname == 'ERROR']
    assert len(errors) == 1 and errors[0].exc_info, 'the bug is logged at ERROR once'
    # The policy works again: the count starts over.
    controller.policy = TargetsPolicy({u: 4 * GiB for u in ('short', 'roomy', 'full')})
    assert controller.run_cycle().failure is None
    assert controller.failed_cycles == 0


def test_owed_memory_comes_from_live_state():
    assert owes_memory(sample('a', 2 * GiB, GiB), False) is None
    assert owes_memory(sample('a', 4 * GiB, GiB), False) == 'at its full memory'
    assert 'migrating' in owes_memory(sample('a', 2 * GiB, GiB, RunState.MIGRATING), False)
    assert 'Nova' in owes_memory(sample('a', 2 * GiB, GiB, nova=False), False)
    assert owes_memory(sample('a', 2 * GiB, GiB, nova=False), True) is None


def test_a_shrink_still_under_way_is_owed() -> None:
    # The agent set 3 GiB a moment before it stopped; libvirt still reports
    # the full 4 GiB, and the balloon would settle at 3 GiB with no agent left.
    assert owes_memory(sample('a', 4 * GiB, GiB), False, target_kib=3 * GiB) is None
    assert owes_memory(sample('a', 4 * GiB, GiB), False,
                       target_kib=4 * GiB) == 'at its full memory'
    driver = RecordingDriver([sample('a', 4 * GiB, GiB)])
    controller = Controller(driver, BrokenPolicy(), SETTINGS, PolicyFile(None),
                            dry_run=False)
    controller.memory['a'] = GuestMemory(3 * GiB, 4 * GiB, True)
    assert controller.restore_all(1 << 20) == {'a': 4 * GiB}


def test_restore_all_is_paced_neediest_first_and_covers_guests_it_never_shrank():
    # Nothing in the controller's memory: these were shrunk by an earlier agent.
    driver = RecordingDriver([sample('a', 2 * GiB, 1500 * MiB), sample('b', 3 * GiB, 10 * MiB),
                              sample('c', 1 * GiB, 500 * MiB), sample('full', 4 * GiB, GiB)])
    clock = FakeClock()
    controller = Controller(driver, BrokenPolicy(), SETTINGS, PolicyFile(None),
                            dry_run=False, clock=clock)
    import nova_balloon.controller.cycle as cycle_module
    original = cycle_module.Pacer

    def pacer(rate_kib_s: int, clock_fn=clock) -> Pacer:
        return original(rate_kib_s, clock_fn, clock.sleep)

    cycle_module.Pacer = pacer  # type: ignore[assignment,misc]
    try:
        restored = controller.restore_all(1024)
    finally:
        cycle_module.Pacer = original  # type: ignore[misc]
    assert [u for u, _ in driver.targets] == ['b', 'c', 'a']
    assert set(restored) == {'a', 'b', 'c'}
    # 1 GiB, then 3 GiB given at 1 GiB/s: waits of 1 s and 3 s.
    assert clock.slept == [1.0, 3.0]
    assert all(not controller.memory[u].shrunk for u in restored)


def test_restore_stops_at_the_deadline():
    driver = RecordingDriver([sample('a', 2 * GiB, 10 * MiB), sample('b', 2 * GiB, 20 * MiB)])
    clock = FakeClock()
    pacer = Pacer(1024 * MiB, clock, clock.sleep)
    from nova_balloon.controller.cycle import restore_guests
    restored, left = restore_guests(driver, driver.samples, pacer, deadline=clock.now + 1)
    assert restored == {'a': 4 * GiB}
    assert left == {'b': 'out of time'}
