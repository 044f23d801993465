"""What keeps a cycle cheap changes nothing it decides.

The planner's memo (flavor policies, views), remembered records kept while
unchanged, the paused collector, reasons formatted only when read, the
target-only guard.
"""

from __future__ import annotations

import dataclasses
import gc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nova_balloon.controller import cycle, planner
from nova_balloon.flavor_policy import OVERCOMMIT_RATIO, PolicyDefaults, PolicyError, PolicyFile
from nova_balloon.model import Action, BalloonStats, Decision, FlavorPolicy, GuestFacts
from nova_balloon.policies.adaptive import AdaptivePolicy
from nova_balloon.safety.rules import guard, guard_target
from nova_balloon.virt.simulated.hypervisor import SimulatedHypervisor
from tests.unit.test_plan_properties import CONF, SETTINGS, snapshots
from tests.unit.test_planner import HOST, FixedPolicy, sample
from tests.unit.test_planner import SETTINGS as MANAGING
from tests.unit.test_safety import CEILING as VIEW_CEILING
from tests.unit.test_safety import LIMITS, PROPERTY, GiB, cases, view

MiB = 1024
CEILING = 4096 * MiB
DEFAULTS = PolicyDefaults(overcommit_ratio=2.0, min_memory_mb=256, shares=1000)


def test_memo_resolves_once_while_sources_stay_the_same():
    memo = planner.Memo()
    specs = {OVERCOMMIT_RATIO: '4.0'}
    first = memo.bounds('u1', specs, None, DEFAULTS, CEILING)
    assert isinstance(first[0], FlavorPolicy) and first[0].overcommit_ratio == 4.0
    assert first[1] == CEILING // 4
    assert memo.bounds('u1', specs, None, DEFAULTS, CEILING) is first


def test_memo_resolves_again_when_a_source_changes():
    memo = planner.Memo()
    specs = {OVERCOMMIT_RATIO: '4.0'}
    memo.bounds('u1', specs, None, DEFAULTS, CEILING)
    specs[OVERCOMMIT_RATIO] = '3.0'  # changed in place
    assert ratio(memo.bounds('u1', specs, None, DEFAULTS, CEILING)) == 3.0
    entry = {OVERCOMMIT_RATIO: 8}
    assert ratio(memo.bounds('u1', {}, entry, DEFAULTS, CEILING)) == 8.0
    assert ratio(memo.bounds('u1', {}, {OVERCOMMIT_RATIO: 1.5}, DEFAULTS, CEILING)) == 1.5
    assert ratio(memo.bounds('u1', {}, None, DEFAULTS, CEILING)) == 2.0


def ratio(bounds: tuple[FlavorPolicy | PolicyError, int | None]) -> float:
    policy, floor = bounds
    assert isinstance(policy, FlavorPolicy) and floor == int(CEILING / policy.overcommit_ratio)
    return policy.overcommit_ratio


def test_memo_keeps_errors_and_forgets_gone_guests():
    memo = planner.Memo()
    specs = {OVERCOMMIT_RATIO: 'lots'}
    error, floor = memo.bounds('u1', specs, None, DEFAULTS, CEILING)
    assert isinstance(error, PolicyError) and error.__traceback__ is None and floor is None
    assert memo.bounds('u1', specs, None, DEFAULTS, CEILING)[0] is error
    memo.bounds('u2', {}, None, DEFAULTS, CEILING)
    memo.retain({'u2': None})
    assert memo.bounds('u1', specs, None, DEFAULTS, CEILING)[0] is not error


@settings(max_examples=200, deadline=None)
@given(snapshots(), st.integers(1, 6), st.booleans(), st.data())
def test_a_memo_changes_no_plan(snapshot, cycles, adaptive, data):
    """The same cycles planned with and without a memo: the same plans.

    Between cycles some guests' statistics age or change, others stay as they
    were; the proposals come from the default policy or change at random.
    """
    host, samples, memory = snapshot
    memo = planner.Memo()
    policies = AdaptivePolicy(CONF), AdaptivePolicy(CONF)
    memories = memory, memory
    for n in range(cycles):
        if n:
            samples = [data.draw(st.sampled_from([
                s, s._replace(stats_age_s=(s.stats_age_s or 0) + 1),
                s._replace(stats=BalloonStats(
                    actual_kib=data.draw(st.integers(0, s.facts.max_memory_kib)),
                    usable_kib=data.draw(st.integers(0, s.facts.max_memory_kib))))]))
                for s in samples]
        if not adaptive:
            proposals = data.draw(st.dictionaries(
                st.sampled_from([s.facts.uuid for s in samples]),
                st.integers(0, 16 * 1024 * 1024) | st.sampled_from([2**20, 2**21, 2**22])))
            policies = FixedPolicy(proposals), FixedPolicy(proposals)
        now = dataclasses.replace(host, now=host.now + n)
        kept = planner.plan(now, samples, policies[0], {}, memories[0], SETTINGS, memo)
        plain = planner.plan(now, samples, policies[1], {}, memories[1], SETTINGS)
        assert kept.decisions == plain.decisions
        assert kept.views == plain.views
        assert kept.memory == plain.memory
        assert (kept.stats_periods, kept.watching_closely) == (plain.stats_periods,
                                                                plain.watching_closely)
        memories = kept.memory, plain.memory


def test_unchanged_guest_keeps_its_view_and_remembered_record():
    host, samples, policy = HOST, [sample('u0')], FixedPolicy({})
    memo = planner.Memo()
    first = planner.plan(host, samples, policy, {}, {}, MANAGING, memo)
    second = planner.plan(host, samples, policy, {}, first.memory, MANAGING, memo)
    third = planner.plan(host, samples, policy, {}, second.memory, MANAGING, memo)
    assert third.views['u0'] is second.views['u0']
    assert third.memory['u0'] is second.memory['u0']
    moved = [samples[0]._replace(stats=samples[0].stats._replace(
        usable_kib=samples[0].stats.usable_kib - 1))]
    fourth = planner.plan(host, moved, policy, {}, third.memory, MANAGING, memo)
    assert fourth.views['u0'] is not third.views['u0']
    assert fourth.views['u0'].usable_kib == third.views['u0'].usable_kib - 1


def test_same_view_new_proposal_new_decision():
    host, samples = HOST, [sample('u0')]
    memo = planner.Memo()
    memory: dict[str, planner.GuestMemory] = {}
    for _ in range(3):
        held = planner.plan(host, samples, FixedPolicy({'u0': 4 * GiB}), {}, memory, MANAGING,
                            memo)
        memory = held.memory
    proposed = planner.plan(host, samples, FixedPolicy({'u0': 3 * GiB}), {}, memory,
                            MANAGING, memo)
    assert proposed.views['u0'] is held.views['u0']
    assert proposed.decisions != held.decisions
    assert proposed.decisions == planner.plan(host, samples, FixedPolicy({'u0': 3 * GiB}), {},
                                              memory, MANAGING).decisions
    again = planner.plan(host, samples, FixedPolicy({'u0': 3 * GiB}), {}, memory, MANAGING,
                         memo)
    assert again.decisions[0] is proposed.decisions[0]


def test_collector_paused_in_a_cycle_and_back_after_it():
    assert gc.isenabled()
    with cycle._collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collector_left_off_when_it_was_off():
    gc.disable()
    try:
        with cycle._collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


@PROPERTY
@given(cases())
def test_guard_target_is_the_target_of_guard(case):
    guest, proposal, limits = case
    assert guard_target(guest, proposal, limits) == guard(guest, proposal, limits).target_kib


@PROPERTY
@given(cases(shrinkable=True))
def test_guard_target_is_the_target_of_guard_for_shrinkable_guests(case):
    guest, proposal, limits = case
    assert guard_target(guest, proposal, limits) == guard(guest, proposal, limits).target_kib


def test_reason_formatted_when_read():
    """Every note in MiB, as the f-strings formatted it before notes were deferred."""
    guest = view(actual=VIEW_CEILING, usable=VIEW_CEILING - 2000 * 1024,
                 target=VIEW_CEILING - 64 * 1024)
    d = guard(guest, 1 * GiB, LIMITS)
    assert d.reason == ('proposed 1024 MiB, bounds [1024, 4096] MiB; keeps use 2000 MiB + '
                        'headroom 409 MiB; shrink limited to 128 MiB per cycle; balloon '
                        'still moving to 4032 MiB')
    oom = guard(view(actual=3 * GiB, usable=0, target=2 * GiB, deflated_on_oom=True),
                None, LIMITS)
    assert oom.reason == ('proposed 2048 MiB, bounds [1024, 4096] MiB; no shrink: guest '
                          'deflated its balloon on OOM (actual 3072 MiB > target 2048 MiB)')
    held = guard(view(actual=3 * GiB, usable=2 * GiB, target=3 * GiB), 3 * GiB - 1, LIMITS)
    assert held.reason == ('proposed 3071 MiB, bounds [1024, 4096] MiB; change -1 MiB '
                           'inside the dead band')
    unresponsive = guard(view(actual=2 * GiB, unresponsive='stuck {0}'), None, LIMITS)
    assert unresponsive.reason == ('proposed 2048 MiB, bounds [1024, 4096] MiB; '
                                   'unresponsive: stuck {0}; full memory given back')


def test_reason_of_a_decision_without_kib():
    """Strings pass through as they are, braces and all; None reads as None."""
    d = Decision('u', 'g', Action.IGNORE, None, (('{}', 'weird {reason}'),
                                                 ('target {} MiB', None)))
    assert d.reason == 'weird {reason}; target None MiB'



def test_young_collections_grow_with_the_guests():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        cycle._size_collector(100)
        assert gc.get_threshold() == (cycle.YOUNG_GENERATION_MIN, 10, 10)
        cycle._size_collector(5000)
        assert gc.get_threshold() == (cycle.YOUNG_OBJECTS_PER_GUEST * 5000, 10, 10)
        cycle._size_collector(10)
        assert gc.get_threshold() == (cycle.YOUNG_GENERATION_MIN, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_a_cycle_sizes_the_collector_by_its_guests():
    guests = 1000
    facts = [GuestFacts(uuid=f'u{i}', name=f'g{i}', max_memory_kib=GiB, nova=None,
                        unballoonable=None, stats_period_s=1) for i in range(guests)]
    node = SimulatedHypervisor(facts, np.full((10, guests), 256.0 * 1024), 2000 * GiB,
                               np.full(guests, float(GiB)))
    controller = cycle.Controller(node, FixedPolicy({}), MANAGING, PolicyFile(None),
                                  dry_run=False, clock=node.now)
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        controller.run_cycle()
        assert gc.get_threshold() == (cycle.YOUNG_OBJECTS_PER_GUEST * guests, 10, 10)
    finally:
        gc.set_threshold(*before)
