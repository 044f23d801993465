"""Unit tests of nova_balloon.capacity.record and keeper: a minute of history from a
real plan (the agent's planner on hand-made samples), and the agent's keeper."""

from __future__ import annotations

import logging

from oslo_config import cfg

from nova_balloon.capacity import history, record
from nova_balloon.capacity.history import FlavorUse, Minute
from nova_balloon.capacity.keeper import HistoryKeeper
from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyDefaults
from nova_balloon.model import (
    BalloonStats,
    GuestFacts,
    GuestSample,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies.static import StaticPolicy
from nova_balloon.safety import SafetyLimits

MiB = 1024
LIMITS = SafetyLimits(headroom_kib=64 * MiB, headroom_percent=10.0, max_shrink_kib=128 * MiB,
                      max_shrink_percent=0.0, dead_band_kib=16 * MiB)
SETTINGS = planner.Settings(defaults=PolicyDefaults(overcommit_ratio=1.0, min_memory_mb=0,
                                                    shares=1000),
                            manage_unmanaged_guests=True, limits=LIMITS, interval_s=10.0,
                            stats_period_s=10)
NOW = 1000.0
WALL = 28_000_000 * 60.0 + 30  # half a minute into minute 28,000,000


def sample(uuid: str, ram_mb: int, ratio: str | None, used_mb: int | None,
           flavor: str | None = 'm1.large', stats: bool = True) -> GuestSample:
    nova = None if flavor is None else NovaMetadata(
        f'instance-{uuid}', flavor, ram_mb,
        {'balloon:overcommit_ratio': ratio} if ratio else {})
    facts = GuestFacts(uuid=uuid, name=f'guest-{uuid}', max_memory_kib=ram_mb * MiB,
                       nova=nova, unballoonable=None, stats_period_s=10)
    balloon = BalloonStats(actual_kib=ram_mb * MiB,
                           usable_kib=(ram_mb - used_mb) * MiB if used_mb is not None else None,
                           last_update=100) if stats else BalloonStats()
    return GuestSample(facts, balloon, RunState.RUNNING, stats_age_s=1.0 if stats else None)


def plan_of(*samples: GuestSample) -> planner.Plan:
    host = HostSnapshot(total_kib=65536 * MiB, available_kib=30000 * MiB, now=NOW)
    # Remembered since long before: balloons settled, demand known.
    memory = {s.facts.uuid: planner.GuestMemory(None, s.stats.actual_kib, False,
                                                actual_since=0.0) for s in samples}
    return planner.plan(host, list(samples), StaticPolicy(cfg.ConfigOpts()), {}, memory, SETTINGS)


def test_minute_of_a_plan_worked_by_hand():
    plan = plan_of(
        # ratio 4: floor 1024; demand 500 + headroom max(64, 409) = 909 < floor: 1024.
        sample('a', 4096, '4', 500),
        # ratio 2: floor 2048; demand 3000 + 409 = 3409.
        sample('b', 4096, '2', 3000),
        # ratio 1.0 (the default): never shrunk, needs its RAM.
        sample('c', 2048, None, 100, flavor='m1.small'),
        # ratio 4 but no statistics: its RAM.
        sample('d', 8192, '4', None, stats=False),
        # Outside Nova, at the default ratio 1.0: its RAM comes off the host's usable
        # memory, not into a flavor.
        sample('e', 4096, None, 1000, flavor=None),
    )
    found = record.minute_of_plan(plan, WALL, reserved_mb=512, limits=LIMITS)
    assert found == Minute(28_000_000, 65536 - 4096 - 512, (
        FlavorUse('m1.large', 3, 1024 + 3409 + 8192, 4096 + 4096 + 8192),
        FlavorUse('m1.small', 1, 2048, 2048)))


def test_need_is_within_floor_and_ram():
    assert record.guest_need_kib(4096, 1024, 100, 409) == 1024
    assert record.guest_need_kib(4096, 1024, 4000, 409) == 4096
    assert record.guest_need_kib(4096, 1024, 2000, 409) == 2409
    assert record.guest_need_kib(4096, 1024, None, 409) == 4096


def test_recorder_keeps_the_worst_cycle_of_each_minute():
    recorder = record.MinuteRecorder()

    def at(m: int, need: int) -> Minute:
        return Minute(m, 1000, (FlavorUse('f', 1, need, 1000),))

    assert recorder.add(at(5, 300)) is None
    assert recorder.add(at(5, 600)) is None
    assert recorder.add(at(5, 400)) is None
    assert recorder.add(at(4, 900)) is None  # a clock step back: ignored
    assert recorder.add(at(6, 100)) == at(5, 600)
    assert recorder.add(at(8, 100)) == at(6, 100)


def test_keeper_writes_finished_minutes(tmp_path):
    path = str(tmp_path / 'history')
    clock = [WALL]
    keeper = HistoryKeeper(path, days=1, reserved_mb=512, limits=LIMITS,
                           clock=lambda: clock[0])
    plan = plan_of(sample('a', 4096, '4', 500))
    for step in range(0, 200, 10):  # cycles every 10 s for 200 s
        clock[0] = WALL + step
        keeper.observe(plan)
    written = history.read(path).minutes
    # Minutes 0 (from 30 s), 1 and 2 are over; minute 3 is still open.
    assert [m.minute - 28_000_000 for m in written] == [0, 1, 2]
    assert written[0].flavors == (FlavorUse('m1.large', 1, 1024, 4096),)


def test_keeper_warns_once_and_goes_on_when_it_cannot_write(tmp_path, caplog):
    blocker = tmp_path / 'file'
    blocker.write_text('')
    clock = [WALL]
    # A directory that cannot exist (its parent is a file): fails even for root.
    keeper = HistoryKeeper(str(blocker / 'history'), days=1, reserved_mb=512, limits=LIMITS,
                           clock=lambda: clock[0])
    plan = plan_of(sample('a', 4096, '4', 500))
    with caplog.at_level(logging.WARNING):
        for step in range(0, 300, 10):
            clock[0] = WALL + step
            keeper.observe(plan)
    assert caplog.text.count('Cannot write the capacity history') == 1
