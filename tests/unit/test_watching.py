"""Which guests the agent watches closely, and which balloons it gives up on."""

from __future__ import annotations

import dataclasses

import pytest

from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyDefaults
from nova_balloon.safety import SafetyLimits
from nova_balloon.safety.responsiveness import unresponsive_reason

MIB = 1024
SETTINGS = planner.Settings(
    defaults=PolicyDefaults(2.0, 256, 1000), manage_unmanaged_guests=False,
    limits=SafetyLimits(64 * MIB, 10.0, 128 * MIB, 0.0, 16 * MIB), interval_s=2,
    stats_period_s=10, fast_stats_period_s=1, fast_free_kib=1024 * MIB)


def period(actual_mib: int, usable_mib: int | None, current: int, rate_mib_s: float = 0.0,
           settings: planner.Settings = SETTINGS) -> int:
    """The period of a 4 GiB guest with this balloon, free memory and demand rate."""
    return planner.stats_period_for(actual_mib * MIB, 4096 * MIB,
                                    None if usable_mib is None else usable_mib * MIB,
                                    rate_mib_s * MIB, current, settings)


@pytest.mark.parametrize('actual, usable, current, rate, expected', [
    (2048, 2000, 10, 0, 10),    # plenty of free memory, steady: Nova's slow period
    (2048, 2000, 10, 5, 1),     # demand rising: watched closely
    (2048, 900, 10, 0, 1),      # short of free memory: watched closely
    (2048, None, 10, 0, 1),     # unknown free memory: watched closely
    (2048, 1200, 1, 0, 1),      # watched guests leave only at 1.5 x the line ...
    (2048, 1600, 1, 0, 10),     # ... and not before
    (4096, 100, 10, 5, 10),     # at its ceiling: nothing to give back, no use watching
])
def test_stats_period(actual: int, usable: int | None, current: int, rate: float,
                      expected: int) -> None:
    assert period(actual, usable, current, rate) == expected


def test_fast_period_never_slower_than_the_normal_one() -> None:
    settings = dataclasses.replace(SETTINGS, stats_period_s=1, fast_stats_period_s=5)
    assert period(2048, 10, 1, settings=settings) == 1


def reason(**overrides: object) -> str | None:
    args: dict = dict(now=1000.0, actual_kib=512 * MIB, target_kib=256 * MIB,
                      target_set_at=990.0, actual_since=900.0, stats_age_s=1.0, after_s=60)
    args.update(overrides)
    return unresponsive_reason(**args)


def test_a_balloon_making_progress_responds() -> None:
    assert reason() is None


def test_no_progress_for_longer_than_the_limit() -> None:
    assert 'stuck at 512 MiB for 61 s' in reason(now=1051.0)


def test_progress_restarts_the_clock() -> None:
    assert reason(now=1051.0, actual_since=1000.0) is None


def test_target_reached_is_not_stuck() -> None:
    assert reason(now=5000.0, actual_kib=257 * MIB) is None


def test_frozen_or_missing_statistics() -> None:
    assert 'frozen for 61 s' in reason(stats_age_s=61.0)
    assert 'no balloon statistics' in reason(stats_age_s=None)


def test_a_guest_that_never_reported_is_waiting_for_statistics_not_unresponsive() -> None:
    # First seen at 900 s: waiting until unresponsive_after (60 s) has passed.
    assert reason(stats_age_s=None, stats_missing_since=900.0, now=960.0) is None
    assert 'no balloon statistics' in reason(stats_age_s=None, stats_missing_since=900.0,
                                             now=961.0)
