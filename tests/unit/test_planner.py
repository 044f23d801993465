"""Unit tests of nova_balloon.controller.planner: classify, make_view and plan."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pytest
from oslo_config import cfg

from nova_balloon import flavor_policy
from nova_balloon.conf import balloon
from nova_balloon.controller import planner
from nova_balloon.controller.planner import (
    GuestMemory,
    Settings,
    actual_since,
    classify,
    make_view,
    plan,
)
from nova_balloon.flavor_policy import PolicyDefaults
from nova_balloon.model import (
    Action,
    BalloonStats,
    GuestFacts,
    GuestSample,
    GuestView,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies import Policy
from nova_balloon.safety import SafetyLimits
from tests.unit.planning import CEILING, LIMITS, SETTINGS, GiB, MiB

NOW = 1000.0
HOST = HostSnapshot(total_kib=64 * GiB, available_kib=32 * GiB, now=NOW)
# The agent first saw the balloon at its size long before the statistics
# (taken at NOW - age): the balloon has settled and demand is known.
SETTLED = 900.0


def mem(target: int | None, actual: int | None, shrunk: bool,
        since: float | None = SETTLED) -> GuestMemory:
    return GuestMemory(target_kib=target, actual_kib=actual, shrunk=shrunk, actual_since=since)


def core(m: GuestMemory) -> tuple:
    """The fields these tests are about: target, actual, shrunk, actual_since."""
    return (m.target_kib, m.actual_kib, m.shrunk, m.actual_since)


def nova(specs: dict[str, str] | None = None, flavor: str = 'm1.large') -> NovaMetadata:
    return NovaMetadata(instance_name='instance-0001', flavor_name=flavor,
                        flavor_memory_mb=4096, extra_specs=specs)


def sample(uuid: str = 'u1', *, meta: NovaMetadata | None = None, no_nova: bool = False,
           unballoonable: str | None = None, period: int | None = None,
           run_state: RunState = RunState.RUNNING, age: float | None = 1.0,
           stats: BalloonStats | None = None) -> GuestSample:
    facts = GuestFacts(uuid=uuid, name=f'guest-{uuid}', max_memory_kib=CEILING,
                       nova=None if no_nova else (meta or nova({})),
                       unballoonable=unballoonable, stats_period_s=period)
    if stats is None:
        stats = BalloonStats(actual_kib=CEILING, usable_kib=3 * GiB, unused_kib=2 * GiB,
                             available_kib=CEILING, swap_in_kib=0, major_faults=0,
                             last_update=12345)
    return GuestSample(facts=facts, stats=stats, run_state=run_state, stats_age_s=age)


class FixedPolicy(Policy):
    """Returns the proposals it was built with and records what it was shown.

    It isolates the planner from the default policy: the tests check how the
    planner classifies, builds views and applies the safety rules, not what
    AdaptivePolicy happens to propose.
    """

    def __init__(self, proposals: Mapping[str, int]):
        super().__init__(cfg.ConfigOpts())
        self.proposals = dict(proposals)
        self.calls: list[list[GuestView]] = []

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        self.calls.append(list(guests))
        return self.proposals


# -- classify -----------------------------------------------------------------------

def test_classify_managed_guest():
    item = classify(sample(), {}, SETTINGS)
    assert item.ignore_reason is None
    assert item.floor_kib == 2 * GiB
    assert item.ceiling_kib == CEILING
    assert item.policy.overcommit_ratio == 2.0 and item.policy.shares == 1000


def test_classify_unballoonable():
    reason = 'no balloon device (memballoon model none)'
    item = classify(sample(unballoonable=reason), {}, SETTINGS)
    assert item.ignore_reason == reason
    assert item.policy is None and item.floor_kib is None


def test_classify_unballoonable_wins_over_run_state():
    item = classify(sample(unballoonable='hugepage memory backing',
                           run_state=RunState.PAUSED), {}, SETTINGS)
    assert item.ignore_reason == 'hugepage memory backing'


@pytest.mark.parametrize('run_state, reason', [
    (RunState.PAUSED, 'not running (paused)'),
    (RunState.OTHER, 'not running (other)'),
    (RunState.MIGRATING, 'migration in progress'),
])
def test_classify_not_running(run_state, reason):
    assert classify(sample(run_state=run_state), {}, SETTINGS).ignore_reason == reason


def test_classify_no_nova_metadata_not_managed_by_default():
    item = classify(sample(no_nova=True), {}, SETTINGS)
    assert 'no Nova metadata' in item.ignore_reason
    assert 'manage_unmanaged_guests' in item.ignore_reason


def test_classify_no_nova_metadata_managed_when_asked():
    settings = dataclasses.replace(SETTINGS, manage_unmanaged_guests=True)
    item = classify(sample(no_nova=True), {'m1.large': {'balloon:overcommit_ratio': 4}},
                    settings)
    assert item.ignore_reason is None
    assert item.floor_kib == 2 * GiB  # defaults: 4 GiB / 2.0, no flavor to look up


def test_classify_no_nova_metadata_with_default_ratio_one_not_reclaimable():
    settings = dataclasses.replace(
        SETTINGS, manage_unmanaged_guests=True,
        defaults=PolicyDefaults(overcommit_ratio=1.0, min_memory_mb=256, shares=1000))
    item = classify(sample(no_nova=True), {}, settings)
    assert item.ignore_reason.startswith('not reclaimable')


@pytest.mark.parametrize('key, value', [
    ('balloon:overcommit_ratio', 'abc'),
    ('balloon:min_memory_mb', '-1'),
    ('balloon:shares', '0'),
    ('balloon:enabled', 'maybe'),
    ('balloon:min_memory_mb', '8192'),  # above the 4096 MiB flavor
])
def test_classify_invalid_extra_spec(key, value):
    item = classify(sample(meta=nova({key: value})), {}, SETTINGS)
    assert item.ignore_reason.startswith('invalid flavor policy: ')
    assert key in item.ignore_reason
    assert value in item.ignore_reason
    assert item.policy is None


def test_classify_enabled_false():
    item = classify(sample(meta=nova({'balloon:enabled': 'false'})), {}, SETTINGS)
    assert item.ignore_reason == 'balloon:enabled=false'
    assert item.policy is not None and item.policy.enabled is False
    assert item.floor_kib == 2 * GiB


def test_classify_ratio_one_not_reclaimable():
    item = classify(sample(meta=nova({'balloon:overcommit_ratio': '1.0'})), {}, SETTINGS)
    assert item.ignore_reason == 'not reclaimable: floor equals flavor RAM (ratio 1)'
    assert item.floor_kib == item.ceiling_kib == CEILING


def test_classify_min_memory_equal_to_ram_not_reclaimable():
    item = classify(sample(meta=nova({'balloon:min_memory_mb': '4096'})), {}, SETTINGS)
    assert item.ignore_reason.startswith('not reclaimable')
    assert item.floor_kib == CEILING


def test_classify_policy_file_by_flavor_name():
    policy_file = {'m1.large': {'balloon:overcommit_ratio': 4, 'balloon:shares': 7},
                   'm1.small': {'balloon:overcommit_ratio': 1.0}}
    item = classify(sample(meta=nova(None)), policy_file, SETTINGS)
    assert item.ignore_reason is None
    assert item.floor_kib == 1 * GiB  # 4 GiB / 4
    assert item.policy.shares == 7


def test_classify_extra_specs_beat_policy_file():
    policy_file = {'m1.large': {'balloon:overcommit_ratio': 4}}
    item = classify(sample(meta=nova({'balloon:overcommit_ratio': '1.0'})), policy_file,
                    SETTINGS)
    assert item.ignore_reason.startswith('not reclaimable')


# -- stats_fresh -------------------------------------------------------------------

@pytest.mark.parametrize('period, age, fresh', [
    (None, 6.0, True),      # settings: 2 * 2 + 2 = 6
    (None, 6.001, False),
    (None, 0.0, True),
    (None, -2.0, True),     # clock skew down to one interval
    (None, -2.001, False),
    (None, None, False),
    (10, 22.0, True),       # the guest's own period: 2 * 10 + 2 = 22
    (10, 22.5, False),
    (1, 4.0, True),         # 2 * 1 + 2
    (1, 4.5, False),
])
def test_stats_fresh(period, age, fresh):
    assert planner.stats_fresh(sample(period=period, age=age), SETTINGS) is fresh


# -- make_view ---------------------------------------------------------------------

def view_of(s: GuestSample, memory: GuestMemory | None = None, now: float = NOW) -> GuestView:
    item = classify(s, {}, SETTINGS)
    assert item.ignore_reason is None
    return make_view(item, memory, actual_since(s, memory, now), SETTINGS, now)


def test_make_view_fields():
    s = sample(meta=nova({'balloon:shares': '42'}), age=1.0)
    v = view_of(s, mem(3 * GiB, CEILING, True))
    assert (v.uuid, v.name) == ('u1', 'guest-u1')
    assert (v.ceiling_kib, v.floor_kib, v.shares) == (CEILING, 2 * GiB, 42)
    assert v.actual_kib == CEILING
    assert v.target_kib == 3 * GiB
    assert v.usable_kib == 3 * GiB
    assert v.demand_kib == 1 * GiB  # actual 4 GiB - usable 3 GiB
    assert (v.swap_in_kib, v.major_faults) == (0, 0)
    assert v.stats_fresh is True
    assert v.balloon_moving is False
    assert v.deflated_on_oom is False  # above the target, but not rising


def test_make_view_first_sight_counts_as_moving():
    """Without memory the agent cannot know the stats match the balloon size."""
    v = view_of(sample())
    assert v.target_kib is None
    assert v.balloon_moving is True
    assert v.usable_kib == 3 * GiB
    assert v.demand_kib is None
    assert v.deflated_on_oom is False


def test_make_view_adopted_memory_without_since_counts_as_moving():
    v = view_of(sample(), mem(3 * GiB, None, True, since=None))
    assert v.balloon_moving is True and v.demand_kib is None
    assert v.target_kib == 3 * GiB


def test_make_view_balloon_size_changed_counts_as_moving():
    v = view_of(sample(), mem(3 * GiB, 3 * GiB, True))
    assert v.balloon_moving is True and v.demand_kib is None


@pytest.mark.parametrize('since, moving', [
    (998.0, True),    # stats at 999.0 <= 998.0 + 1 s report lag
    (997.5, False),   # stats at 999.0 > 998.5
    (NOW, True),
])
def test_make_view_moving_boundary(since, moving):
    v = view_of(sample(age=1.0), mem(None, CEILING, False, since=since))
    assert v.balloon_moving is moving
    assert v.demand_kib == (None if moving else 1 * GiB)


def test_make_view_unknown_stats_age_counts_as_moving_and_stale():
    v = view_of(sample(age=None), mem(None, CEILING, False))
    assert v.balloon_moving is True and v.stats_fresh is False and v.demand_kib is None


def test_make_view_stale():
    assert view_of(sample(age=100.0), mem(None, CEILING, False)).stats_fresh is False


@pytest.mark.parametrize('stats', [
    BalloonStats(actual_kib=2 * GiB, usable_kib=2 * GiB + 1),          # usable > actual
    BalloonStats(actual_kib=2 * GiB, usable_kib=-1),
    BalloonStats(actual_kib=2 * GiB, usable_kib=GiB, unused_kib=-5),
    BalloonStats(actual_kib=2 * GiB, usable_kib=GiB, available_kib=-1),
    BalloonStats(actual_kib=2 * GiB, usable_kib=GiB, swap_in_kib=-1),
    BalloonStats(actual_kib=2 * GiB, usable_kib=GiB, major_faults=-1),
    BalloonStats(actual_kib=2 * GiB),                                  # usable missing
])
def test_make_view_invalid_stats(stats):
    v = view_of(sample(stats=stats), mem(None, 2 * GiB, False))
    assert v.balloon_moving is False
    assert v.usable_kib is None
    assert v.demand_kib is None
    assert v.actual_kib == 2 * GiB


def test_make_view_missing_actual_falls_back_to_ceiling():
    v = view_of(sample(stats=BalloonStats(usable_kib=GiB)), mem(None, None, False))
    assert v.actual_kib == CEILING
    assert v.usable_kib is None and v.demand_kib is None


def test_make_view_usable_equal_to_actual_is_valid():
    v = view_of(sample(stats=BalloonStats(actual_kib=2 * GiB, usable_kib=2 * GiB)),
                mem(None, 2 * GiB, False))
    assert (v.usable_kib, v.demand_kib) == (2 * GiB, 0)


def _actual(kib: int) -> BalloonStats:
    return BalloonStats(actual_kib=kib, usable_kib=kib // 2)


@pytest.mark.parametrize('actual, memory, deflated', [
    (3 * GiB, mem(2 * GiB, 2 * GiB, True), True),               # rose above target
    (2 * GiB + 2 * MiB + 1, mem(2 * GiB, 2 * GiB, True), True),  # just past the tolerance
    (2 * GiB + 2 * MiB, mem(2 * GiB, 2 * GiB, True), False),     # rounding of the size
    (3 * GiB, mem(2 * GiB, 3 * GiB, True), False),              # above target, not rising
    (3 * GiB, mem(2 * GiB, 3 * GiB + MiB, True), False),        # still coming down
    (2 * GiB, mem(2 * GiB, 1 * GiB, True), False),              # rose to the target: a grow
    (3 * GiB, mem(2 * GiB, None, True), False),                 # adopted: no previous actual
    (3 * GiB, mem(None, 2 * GiB, False), False),                # no target
    (3 * GiB, None, False),
])
def test_make_view_deflated_on_oom(actual, memory, deflated):
    assert view_of(sample(stats=_actual(actual)), memory).deflated_on_oom is deflated


# -- plan ------------------------------------------------------------------------------

def test_plan_managed_shrink_remembered():
    # floor 2 GiB; keep = 1 GiB + 419430; max shrink: 4 GiB - 128 MiB wins.
    policy = FixedPolicy({'u1': 2 * GiB})
    result = plan(HOST, [sample()], policy, {}, {'u1': mem(None, CEILING, False)}, SETTINGS)
    [d] = result.decisions
    assert (d.uuid, d.action, d.target_kib) == ('u1', Action.SHRINK, CEILING - 128 * MiB)
    assert set(result.memory) == {'u1'}
    assert core(result.memory['u1']) == core(mem(CEILING - 128 * MiB, CEILING, True))
    assert set(result.views) == {'u1'}
    assert [g.uuid for g in policy.calls[0]] == ['u1']


def test_plan_first_sight_no_shrink():
    result = plan(HOST, [sample()], FixedPolicy({'u1': 2 * GiB}), {}, {}, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.HOLD, CEILING)
    assert core(result.memory['u1']) == core(mem(CEILING, CEILING, False, since=NOW))


def test_plan_no_further_shrink_while_balloon_moves():
    s = sample(stats=BalloonStats(actual_kib=CEILING - 64 * MiB, usable_kib=3 * GiB))
    memory = {'u1': mem(CEILING - 128 * MiB, CEILING, True)}
    result = plan(HOST, [s], FixedPolicy({'u1': 2 * GiB}), {}, memory, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.HOLD, CEILING - 128 * MiB)
    # The new size is remembered from now on.
    assert core(result.memory['u1']) == core(mem(CEILING - 128 * MiB, CEILING - 64 * MiB,
                                                 True, since=NOW))


def test_plan_grow_to_ceiling_clears_shrunk():
    s = sample(stats=BalloonStats(actual_kib=3 * GiB, usable_kib=100 * MiB))
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    result = plan(HOST, [s], FixedPolicy({'u1': 10 * GiB}), {}, memory, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)
    assert core(result.memory['u1']) == core(mem(CEILING, 3 * GiB, False))


def test_plan_grow_below_ceiling_is_still_shrunk():
    s = sample(stats=BalloonStats(actual_kib=3 * GiB, usable_kib=100 * MiB))
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    result = plan(HOST, [s], FixedPolicy({'u1': 3 * GiB + 512 * MiB}), {}, memory, SETTINGS)
    assert core(result.memory['u1']) == core(mem(3 * GiB + 512 * MiB, 3 * GiB, True))


def test_plan_hold_keeps_target_and_shrunk_flag():
    s = sample(stats=BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB))
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    result = plan(HOST, [s], FixedPolicy({}), {}, memory, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)
    assert core(result.memory['u1']) == core(mem(3 * GiB, 3 * GiB, True))


def test_plan_deflated_guest_grown_to_actual():
    s = sample(stats=BalloonStats(actual_kib=3 * GiB + 512 * MiB, usable_kib=50 * MiB))
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    result = plan(HOST, [s], FixedPolicy({'u1': 3 * GiB}), {}, memory, SETTINGS)
    assert result.views['u1'].deflated_on_oom is True
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB + 512 * MiB)
    assert core(result.memory['u1']) == core(mem(3 * GiB + 512 * MiB, 3 * GiB + 512 * MiB,
                                                 True, since=NOW))


@pytest.mark.parametrize('ignored', [
    dict(meta=nova({'balloon:enabled': 'false'})),
    dict(meta=nova({'balloon:overcommit_ratio': '1.0'})),
    dict(meta=nova({'balloon:shares': 'x'})),
    dict(no_nova=True),
])
def test_plan_ignored_guest_shrunk_earlier_restored(ignored):
    s = sample(stats=BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB), **ignored)
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    policy = FixedPolicy({'u1': 1 * GiB})
    result = plan(HOST, [s], policy, {}, memory, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)
    assert d.reason.startswith('restoring full memory 4096 MiB: ')
    assert core(result.memory['u1']) == core(mem(CEILING, 3 * GiB, False))
    assert result.views == {}
    assert policy.calls == []  # no managed guest: the policy is not asked


@pytest.mark.parametrize('ignored', [
    dict(run_state=RunState.PAUSED),
    dict(run_state=RunState.MIGRATING),
])
def test_plan_ignored_guest_that_cannot_be_restored_now_stays_owed(ignored):
    s = sample(stats=BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB), **ignored)
    memory = {'u1': mem(3 * GiB, 3 * GiB, True)}
    result = plan(HOST, [s], FixedPolicy({}), {}, memory, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib) == (Action.IGNORE, None)
    assert core(result.memory['u1']) == core(mem(3 * GiB, 3 * GiB, True))


def test_plan_ignored_guest_never_shrunk_is_left_alone():
    s = sample(meta=nova({'balloon:enabled': 'false'}))
    result = plan(HOST, [s], FixedPolicy({}), {}, {}, SETTINGS)
    [d] = result.decisions
    assert (d.action, d.target_kib, d.reason) == (Action.IGNORE, None, 'balloon:enabled=false')
    assert core(result.memory['u1']) == core(mem(None, CEILING, False, since=NOW))


def test_plan_mixed_guests_only_managed_reach_policy():
    samples = [sample('a'), sample('b', run_state=RunState.PAUSED),
               sample('c', meta=nova({'balloon:overcommit_ratio': '4'}))]
    memory = {u: mem(None, CEILING, False) for u in 'abc'}
    # c: floor 1 GiB; proposal 1 GiB; max shrink from 4 GiB wins.
    policy = FixedPolicy({'c': 1 * GiB, 'b': 1 * GiB, 'nobody': 1})
    result = plan(HOST, samples, policy, {}, memory, SETTINGS)
    assert sorted(g.uuid for g in policy.calls[0]) == ['a', 'c']
    by_uuid = {d.uuid: d for d in result.decisions}
    assert by_uuid['a'].action is Action.HOLD
    assert by_uuid['b'].action is Action.IGNORE
    assert (by_uuid['c'].action, by_uuid['c'].target_kib) == (Action.SHRINK,
                                                              CEILING - 128 * MiB)
    assert set(result.memory) == {'a', 'b', 'c'}
    assert set(result.classified) == {'a', 'b', 'c'}


def test_plan_forgets_guests_that_are_gone():
    memory = {'gone': mem(1 * GiB, 1 * GiB, True)}
    result = plan(HOST, [sample()], FixedPolicy({}), {}, memory, SETTINGS)
    assert set(result.memory) == {'u1'}


# -- Settings.from_conf ---------------------------------------------------------------

def test_settings_from_conf_defaults():
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    conf([])
    s = Settings.from_conf(conf.balloon)
    assert s.defaults == PolicyDefaults(overcommit_ratio=1.0, min_memory_mb=256, shares=1000)
    assert s.manage_unmanaged_guests is False
    assert s.limits == SafetyLimits(headroom_kib=64 * MiB, headroom_percent=10.0,
                                    max_shrink_kib=128 * MiB, max_shrink_percent=10.0,
                                    dead_band_kib=16 * MiB)
    assert (s.interval_s, s.stats_period_s, s.fast_stats_period_s) == (2, 10, 1)
    assert s.fast_free_kib == 1024 * MiB


# -- once per sample, in guest time -------------------------------------------

def seen_after(memory: GuestMemory | None, *, usable: int, at: int, actual: int = 3 * GiB,
               age: float = 1.0, since: float = SETTLED) -> GuestView:
    """The view of a 4 GiB guest at 3 GiB whose sample (taken at guest time ``at``)
    shows ``usable`` free, after ``memory``."""
    stats = BalloonStats(actual_kib=actual, usable_kib=usable, unused_kib=usable,
                         available_kib=actual, swap_in_kib=0, major_faults=0, last_update=at)
    item = classify(sample(stats=stats, age=age), {}, SETTINGS)
    return make_view(item, memory, since, SETTINGS, NOW)


def after(view: GuestView, memory: GuestMemory | None = None) -> GuestMemory:
    """What the planner remembers once it held the guest with this view."""
    decision = planner.guard(view, None, LIMITS)
    item = classify(sample(stats=BalloonStats(actual_kib=view.actual_kib,
                                              usable_kib=view.usable_kib,
                                              last_update=view.sampled_at)), {}, SETTINGS)
    return planner._remember(item, memory, decision, view, SETTLED, SETTINGS, NOW)


def test_rates_are_per_second_of_guest_time_and_a_trend_is_two_rises():
    first = seen_after(None, usable=2 * GiB, at=100)
    assert first.new_sample and first.demand_bound_kib == 1 * GiB
    assert first.demand_rate_kib_s == 0.0
    # 100 MiB more used in the 2 s between the samples: 50 MiB/s; one rise is no trend.
    second = seen_after(after(first), usable=2 * GiB - 100 * MiB, at=102)
    assert second.demand_rate_kib_s == 50 * MiB and second.trend_rate_kib_s == 0.0
    # Then 30 MiB in 1 s: the trend is the slower of the two, 30 MiB/s.
    third = seen_after(after(second, after(first)), usable=2 * GiB - 130 * MiB, at=103)
    assert (third.demand_rate_kib_s, third.trend_rate_kib_s) == (30 * MiB, 30 * MiB)


def test_a_sample_seen_again_is_not_new_and_keeps_its_rates():
    first = seen_after(None, usable=2 * GiB, at=100)
    second = seen_after(after(first), usable=2 * GiB - 100 * MiB, at=102)
    again = seen_after(after(second, after(first)), usable=2 * GiB - 100 * MiB, at=102)
    assert not again.new_sample
    assert (again.demand_bound_kib, again.demand_rate_kib_s) == (1124 * MiB, 50 * MiB)


def test_while_the_balloon_grows_a_sample_bounds_demand_by_the_target():
    # Growing from 2 GiB to 3 GiB; libvirt may learn of the move after the
    # guest's statistics show it: the guest may have had up to 3 GiB.
    memory = GuestMemory(target_kib=3 * GiB, actual_kib=2 * GiB, shrunk=True,
                         actual_since=NOW, target_set_at=NOW - 2)
    view = seen_after(memory, usable=1536 * MiB, at=100, actual=2 * GiB, since=NOW)
    assert view.demand_kib is None and view.new_sample
    assert view.demand_bound_kib == 3 * GiB - 1536 * MiB


def test_while_a_shrink_is_under_way_the_sample_waits_for_the_balloon_to_settle():
    # Shrinking from 3 GiB to 2 GiB: the guest's free memory may show the
    # shrink before libvirt's balloon size does; no rise from it.
    first = after(seen_after(None, usable=2 * GiB, at=100))
    shrinking = first._replace(target_kib=2 * GiB)
    view = seen_after(shrinking, usable=1 * GiB, at=102, since=NOW)
    assert view.demand_kib is None and not view.new_sample
    assert (view.demand_bound_kib, view.demand_rate_kib_s) == (1 * GiB, 0.0)


def test_a_guest_without_statistics_yet_is_waiting_for_them_then_managed():
    # First seen at NOW - 30 s without statistics: not unresponsive, never shrunk.
    no_stats = BalloonStats(actual_kib=CEILING)
    first = plan(HOST, [sample(stats=no_stats, age=None)], FixedPolicy({'u1': 2 * GiB}),
                 {}, {'u1': mem(None, CEILING, False, since=NOW - 30)}, SETTINGS)
    view = first.views['u1']
    assert view.unresponsive is None
    assert first.decisions[0].action is Action.HOLD
    assert "waiting for the guest's first balloon statistics" in first.decisions[0].reason
    # Its first sample, taken after the agent first saw it: managed at once.
    stats = BalloonStats(actual_kib=CEILING, usable_kib=3 * GiB, last_update=12345)
    second = plan(dataclasses.replace(HOST, now=NOW + 1), [sample(stats=stats, age=0.5)],
                  FixedPolicy({'u1': 2 * GiB}), {}, first.memory, SETTINGS)
    assert second.decisions[0].action is Action.SHRINK


def test_statistics_that_never_come_make_the_balloon_unresponsive():
    no_stats = BalloonStats(actual_kib=CEILING)
    out = plan(HOST, [sample(stats=no_stats, age=None)], FixedPolicy({}), {},
               {'u1': mem(None, CEILING, False, since=NOW - 61)}, SETTINGS)
    assert 'no balloon statistics' in out.views['u1'].unresponsive


# -- the host as it can count on its memory ---------------------------------------

def test_untouched_balloon_memory_is_not_free_for_the_host():
    # Free page reporting and lazy allocation: a 3 GiB balloon of which the
    # guest occupies 1 GiB leaves 2 GiB in MemAvailable that the guest may
    # take back at any moment.
    stats = BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB, last_update=1, rss_kib=1 * GiB)
    unknown = BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB, last_update=1)
    assert planner.untouched_kib([sample(stats=stats), sample('u2', stats=unknown)]) == 2 * GiB
    policy = FixedPolicy({})
    out = plan(dataclasses.replace(HOST, available_kib=2 * GiB + 100 * MiB), [sample(stats=stats)],
               policy, {}, {}, dataclasses.replace(SETTINGS, host_critical_kib=512 * MiB))
    # 100 MiB the host can count on: below its critical level.
    assert out.host_critical


def view_for_reclaim(uuid: str, target: int, demand: int) -> GuestView:
    return GuestView(uuid=uuid, name=uuid, ceiling_kib=CEILING, floor_kib=1 * GiB, shares=1000,
                     actual_kib=target, target_kib=target, usable_kib=target - demand,
                     demand_kib=demand, swap_in_kib=0, major_faults=0, stats_fresh=True,
                     balloon_moving=False, deflated_on_oom=False)


def test_a_critical_host_takes_memory_back_whatever_the_policy_proposes():
    # Spare above use + headroom (10 % of 4 GiB) and the floor: a 1 GiB,
    # b 512 MiB (floor-bound c has none); 300 MiB short: taken 2:1.
    headroom = int(CEILING * 0.1)
    a = view_for_reclaim('a', 3 * GiB, 2 * GiB - headroom)
    b = view_for_reclaim('b', 3 * GiB, 2560 * MiB - headroom)
    c = view_for_reclaim('c', 1 * GiB, 100 * MiB)
    out = planner.reclaim_for_host([a, b, c], {'a': 3 * GiB, 'b': 4 * GiB}, 300 * MiB, LIMITS)
    assert 3 * GiB - out['a'] == pytest.approx(200 * MiB, abs=2 * MiB)
    assert 3 * GiB - out['b'] == pytest.approx(100 * MiB, abs=2 * MiB)
    assert 'c' not in out
    # Never below what the guest may keep, however short the host.
    out = planner.reclaim_for_host([a, b], {}, 64 * GiB, LIMITS)
    assert (out['a'], out['b']) == (2 * GiB, 2560 * MiB)


def test_a_critical_host_reclaims_even_under_a_policy_that_never_shrinks():
    stats = BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB, last_update=1, rss_kib=3 * GiB)
    settings = dataclasses.replace(SETTINGS, host_critical_kib=1 * GiB)
    out = plan(dataclasses.replace(HOST, available_kib=512 * MiB), [sample(stats=stats)],
               FixedPolicy({}), {}, {'u1': mem(3 * GiB, 3 * GiB, True)}, settings)
    assert out.host_critical and out.decisions[0].action is Action.SHRINK


def test_host_critical_free_mb_0_turns_critical_mode_off():
    # Balloons committed beyond the host: its free memory is below zero.
    stats = BalloonStats(actual_kib=3 * GiB, usable_kib=2 * GiB, last_update=1, rss_kib=1 * GiB)
    host = dataclasses.replace(HOST, total_kib=2 * GiB, available_kib=1 * GiB)
    out = plan(host, [sample(stats=stats)], FixedPolicy({}), {},
               {'u1': mem(3 * GiB, 3 * GiB, True)}, SETTINGS)
    assert out.host.free_kib < 0
    assert not out.host_critical and out.decisions[0].action is Action.HOLD


def test_statistics_missing_for_a_moment_are_awaited_not_unresponsive():
    # The guest reported statistics 10 s ago (QEMU reports none for a moment
    # after the agent changed its stats period): waiting, never shrunk.
    no_stats = BalloonStats(actual_kib=3 * GiB)
    memory = GuestMemory(target_kib=3 * GiB, actual_kib=3 * GiB, shrunk=True,
                         actual_since=SETTLED, sampled_at=100, stats_seen_at=NOW - 10)
    out = plan(HOST, [sample(stats=no_stats, age=None)], FixedPolicy({'u1': 2 * GiB}), {},
               {'u1': memory}, SETTINGS)
    assert out.views['u1'].unresponsive is None
    assert out.decisions[0].action is Action.HOLD
    assert out.memory['u1'].stats_seen_at == NOW - 10
    # Still none a minute later: the balloon no longer answers.
    later = dataclasses.replace(HOST, now=NOW + 51)
    out = plan(later, [sample(stats=no_stats, age=None)], FixedPolicy({}), {}, out.memory,
               SETTINGS)
    assert 'no balloon statistics' in out.views['u1'].unresponsive


# -- a contended host -------------------------------------------------------------

RATIO_4 = nova({'balloon:overcommit_ratio': '4.0'})  # floor 1 GiB: headroom binds


class SharingPolicy(FixedPolicy):
    """FixedPolicy that shares memory out under contention, as the default policy."""

    shares_headroom_when_contended = True


def stats_of(actual: int, usable: int) -> BalloonStats:
    return BalloonStats(actual_kib=actual, usable_kib=usable, unused_kib=usable,
                        available_kib=CEILING, swap_in_kib=0, major_faults=0,
                        last_update=12345)


def contention_plan(policy_class: type[FixedPolicy], free: int) -> planner.Plan:
    """An idle guest (use 1 GiB in 1500 MiB: headroom 409.6 MiB keeps 1433.6 MiB)
    and a short one (100 MiB free of 2 GiB: it lacks 1948 + 409.6 - 2048 = 309.6
    MiB); the policy would take the idle one to 1 GiB and grow the short one."""
    idle = sample('idle', meta=RATIO_4, stats=stats_of(1500 * MiB, 476 * MiB))
    short = sample('short', meta=RATIO_4, stats=stats_of(2 * GiB, 100 * MiB))
    memory = {'idle': mem(1500 * MiB, 1500 * MiB, True), 'short': mem(2 * GiB, 2 * GiB, True)}
    policy = policy_class({'idle': 1 * GiB, 'short': 2 * GiB + 310 * MiB})
    return plan(dataclasses.replace(HOST, available_kib=free), [idle, short], policy, {},
                memory, dataclasses.replace(SETTINGS, contended_headroom_percent=2.0))


def target_of(out: planner.Plan, uuid: str) -> int | None:
    return next(d.target_kib for d in out.decisions if d.uuid == uuid)


def test_a_contended_host_lowers_the_headroom_of_the_others():
    # 200 MiB free, 309.6 MiB lacking: the idle guest keeps use plus 2 % of
    # 4 GiB (81.9 MiB), not 409.6 MiB, so it shrinks by the whole 128 MiB step.
    out = contention_plan(SharingPolicy, free=200 * MiB)
    assert out.host_contended and not out.host_critical
    assert out.lacking_kib == pytest.approx(309.6 * MiB, abs=1)
    assert target_of(out, 'idle') == 1500 * MiB - 128 * MiB


def test_a_host_with_room_for_what_guests_lack_is_not_contended():
    out = contention_plan(SharingPolicy, free=1 * GiB)
    assert not out.host_contended
    assert target_of(out, 'idle') == int(1 * GiB + 0.1 * CEILING)


def test_a_policy_that_does_not_share_keeps_the_headroom_on_a_contended_host():
    # The baselines stand for other systems: no contention handling of ours.
    out = contention_plan(FixedPolicy, free=200 * MiB)
    assert not out.host_contended
    assert target_of(out, 'idle') == int(1 * GiB + 0.1 * CEILING)


def test_contended_headroom_at_headroom_percent_turns_it_off():
    idle = sample('idle', meta=RATIO_4, stats=stats_of(1500 * MiB, 476 * MiB))
    short = sample('short', meta=RATIO_4, stats=stats_of(2 * GiB, 100 * MiB))
    out = plan(dataclasses.replace(HOST, available_kib=200 * MiB), [idle, short],
               SharingPolicy({'idle': 1 * GiB}), {},
               {'idle': mem(1500 * MiB, 1500 * MiB, True), 'short': mem(2 * GiB, 2 * GiB, True)},
               dataclasses.replace(SETTINGS, contended_headroom_percent=10.0))
    assert not out.host_contended
    assert target_of(out, 'idle') == int(1 * GiB + 0.1 * CEILING)


# -- flavor policies, parsed once -------------------------------------------------

DEFAULTS = SETTINGS.defaults


def test_a_set_of_balloon_keys_is_resolved_once():
    # Two guests' metadata, equal balloon keys, other keys differing: one parse.
    first = {'balloon:overcommit_ratio': '4.0', 'hw:cpu_policy': 'dedicated'}
    second = {'balloon:overcommit_ratio': '4.0', 'hw:mem_page_size': 'large'}
    planner.bounds(first, None, DEFAULTS, 4 * GiB)
    hits = planner._resolved.cache_info().hits
    assert planner.bounds(second, None, DEFAULTS, 4 * GiB) == \
        planner.bounds(first, None, DEFAULTS, 4 * GiB)
    assert planner._resolved.cache_info().hits == hits + 2
    policy, floor = planner.bounds(second, None, DEFAULTS, 4 * GiB)
    assert policy.overcommit_ratio == 4.0 and floor == 1 * GiB


def test_a_value_that_cannot_be_a_cache_key_is_still_judged():
    # A list in the policy file is not hashable: resolved afresh, refused all the same.
    policy, floor = planner.bounds(None, {'balloon:shares': [1000]}, DEFAULTS, 4 * GiB)
    assert isinstance(policy, flavor_policy.PolicyError) and floor is None
    assert 'balloon:shares' in str(policy)


def test_a_busy_guest_at_its_full_memory_lacks_nothing_a_balloon_can_give():
    # 100 MiB free of its whole 4 GiB: short, but it cannot grow; the host is
    # not contended for it and the idle guest keeps its full headroom.
    idle = sample('idle', meta=RATIO_4, stats=stats_of(1500 * MiB, 476 * MiB))
    full = sample('full', meta=RATIO_4, stats=stats_of(CEILING, 100 * MiB))
    memory = {'idle': mem(1500 * MiB, 1500 * MiB, True), 'full': mem(CEILING, CEILING, False)}
    out = plan(dataclasses.replace(HOST, available_kib=200 * MiB), [idle, full],
               SharingPolicy({'idle': 1 * GiB}), {}, memory,
               dataclasses.replace(SETTINGS, contended_headroom_percent=2.0))
    assert out.lacking_kib == 0 and not out.host_contended
    assert target_of(out, 'idle') == int(1 * GiB + 0.1 * CEILING)
