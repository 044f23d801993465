"""The pure part of the notifications: which state changes a cycle's plan makes.

Plans come from the real planner (classify, make_view, plan); states and
events from nova_balloon.notifications.events. No broker is needed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from nova_balloon.controller import planner
from nova_balloon.controller.planner import GuestMemory
from nova_balloon.model import (
    BalloonStats,
    GuestFacts,
    GuestSample,
    GuestView,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.notifications import events as ev
from nova_balloon.notifications.events import (
    EventType,
    GuestFigures,
    GuestState,
    HostFigures,
    Priority,
)
from nova_balloon.policies import Policy
from tests.unit.planning import CEILING, MiB, limits, settings

HOST_NAME = 'compute-1'
LIMITS = limits(max_shrink_kib=4096 * MiB)
HEADROOM = int(CEILING * LIMITS.headroom_percent / 100)
SETTINGS = settings(safety=LIMITS, host_critical_kib=512 * MiB)
NOW = 1000.0


class TargetPolicy(Policy):
    """Proposes the targets it is given: the planner and the safety rules do the rest."""

    def __init__(self, targets: Mapping[str, int]):
        self.targets = targets

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        return {g.uuid: self.targets[g.uuid] for g in guests if g.uuid in self.targets}


def sample(uuid: str = 'u1', *, actual: int = CEILING, usable: int | None = 2048 * MiB,
           age: float | None = 1.0, run_state: RunState = RunState.RUNNING,
           last_update: int = 500) -> GuestSample:
    facts = GuestFacts(uuid=uuid, name=f'instance-{uuid}', max_memory_kib=CEILING,
                       nova=NovaMetadata(instance_name=f'web-{uuid}', flavor_name='m1.large',
                                         flavor_memory_mb=4096, extra_specs={}),
                       unballoonable=None, stats_period_s=2)
    stats = BalloonStats(actual_kib=actual, usable_kib=usable, unused_kib=usable,
                         available_kib=actual, swap_in_kib=0, major_faults=0,
                         last_update=last_update)
    return GuestSample(facts=facts, stats=stats, run_state=run_state, stats_age_s=age)


def settled(target: int | None, actual: int, shrunk: bool, **kw: object) -> GuestMemory:
    """What the agent remembers of a guest whose balloon settled long ago."""
    return GuestMemory(target_kib=target, actual_kib=actual, shrunk=shrunk, actual_since=100.0,
                       target_set_at=100.0, **kw)  # type: ignore[arg-type]


def plan_of(samples: list[GuestSample], memory: Mapping[str, GuestMemory],
            targets: Mapping[str, int] | None = None,
            available: int = 32768 * MiB) -> planner.Plan:
    host = HostSnapshot(total_kib=65536 * MiB, available_kib=available, now=NOW)
    return planner.plan(host, samples, TargetPolicy(targets or {}), {}, memory, SETTINGS)


def state(reclaimed: bool = False, short: str | None = None,
          unresponsive: str | None = None) -> GuestState:
    return GuestState(reclaimed=reclaimed, short=short, unresponsive=unresponsive)


FIGURES = GuestFigures(uuid='u1', name='instance-u1', display_name='web-u1', flavor='m1.large',
                       ceiling_kib=CEILING, floor_kib=CEILING // 2, target_kib=None,
                       balloon_kib=CEILING, free_kib=2048 * MiB)


def figures(uuid: str) -> GuestFigures:
    return FIGURES._replace(uuid=uuid, name=f'instance-{uuid}')


def unexpected(uuid: str) -> GuestFigures:
    raise AssertionError(f'figures of {uuid} read although its state held')


def kinds(events: list[ev.Event]) -> list[EventType]:
    return [e.event_type for e in events]


# Transitions, from state to state.

@pytest.mark.parametrize('before, after, expected', [
    (dict(reclaimed=False), dict(reclaimed=True), EventType.GUEST_RECLAIMED),
    (dict(reclaimed=True), dict(reclaimed=False), EventType.GUEST_RESTORED),
    (dict(short=None), dict(short='low'), EventType.GUEST_SHORT),
    (dict(short='low'), dict(short=None), EventType.GUEST_COVERED),
    (dict(unresponsive=None), dict(unresponsive='stuck'), EventType.GUEST_UNRESPONSIVE),
    (dict(unresponsive='stuck'), dict(unresponsive=None), EventType.GUEST_RESPONDING),
])
def test_each_guest_transition_sends_its_event_once(before, after, expected):
    first = {'u1': state(**before)}
    second = {'u1': state(**after)}
    events = ev.guest_events(first, second, figures, HOST_NAME)
    assert kinds(events) == [expected]
    # The state holds: no repeat, cycle after cycle, and no figures read.
    assert ev.guest_events(second, second, unexpected, HOST_NAME) == []
    assert ev.guest_events(second, {'u1': state(**after)}, unexpected, HOST_NAME) == []


def test_priorities():
    warnings = {EventType.GUEST_SHORT, EventType.GUEST_UNRESPONSIVE, EventType.HOST_CRITICAL}
    for kind in EventType:
        expected = Priority.WARNING if kind in warnings else Priority.INFO
        assert ev.Event(kind, {}).priority is expected, kind
    assert Priority.WARNING.value == 'WARN'  # as oslo.messaging's Notifier.warn sends it


def test_a_reason_changing_while_short_is_no_new_event():
    first = {'u1': state(short='180 MiB free')}
    assert ev.guest_events(first, {'u1': state(short='deflated on OOM')}, figures,
                           HOST_NAME) == []


def test_a_guest_first_seen_is_compared_with_the_nominal_state():
    assert ev.guest_events({}, {'u1': state()}, unexpected, HOST_NAME) == []
    events = ev.guest_events({}, {'u1': state(reclaimed=True, short='low',
                                               unresponsive='stuck')}, figures, HOST_NAME)
    assert kinds(events) == [EventType.GUEST_RECLAIMED, EventType.GUEST_SHORT,
                             EventType.GUEST_UNRESPONSIVE]


def test_a_guest_that_left_is_forgotten_silently():
    assert ev.guest_events({'u1': state(reclaimed=True)}, {}, unexpected, HOST_NAME) == []


def test_guest_payload_in_mib_with_the_reason():
    seen = FIGURES._replace(target_kib=3000 * MiB + 512, balloon_kib=3000 * MiB,
                            free_kib=100 * MiB)
    events = ev.guest_events({}, {'u1': state(short='100 MiB free')}, lambda uuid: seen,
                             HOST_NAME)
    payload = events[0].payload
    assert payload['nova_object.name'] == 'BalloonGuestPayload'
    assert payload['nova_object.namespace'] == 'nova_balloon'
    assert payload['nova_object.version'] == '1.0'
    assert payload['nova_object.data'] == {
        'host': HOST_NAME, 'uuid': 'u1', 'name': 'instance-u1', 'display_name': 'web-u1',
        'flavor': 'm1.large', 'memory_mb': 4096, 'floor_mb': 2048, 'target_mb': 3000,
        'balloon_mb': 3000, 'free_mb': 100, 'reason': '100 MiB free'}


HOST = HostFigures(total_kib=65536 * MiB, available_kib=1400 * MiB,
                   untouched_kib=1024 * MiB, critical_kib=512 * MiB, guests_reclaimed=2,
                   reclaimed_kib=3072 * MiB)


def host_figures() -> HostFigures:
    return HOST


def test_host_critical_then_normal_once_each():
    assert ev.host_events(False, False, host_figures, HOST_NAME) == []
    events = ev.host_events(False, True, host_figures, HOST_NAME)
    assert kinds(events) == [EventType.HOST_CRITICAL]
    assert events[0].payload['nova_object.data'] == {
        'host': HOST_NAME, 'total_mb': 65536, 'available_mb': 1400, 'untouched_mb': 1024,
        'free_mb': 376, 'critical_free_mb': 512, 'guests_reclaimed': 2, 'reclaimed_mb': 3072}
    assert ev.host_events(True, True, host_figures, HOST_NAME) == []
    assert kinds(ev.host_events(True, False, host_figures, HOST_NAME)) == [
        EventType.HOST_NORMAL]


def test_restored_on_stop_only_for_guests_seen_reclaimed():
    states = {'u1': state(reclaimed=True), 'u2': state(), 'u3': state(reclaimed=True)}
    seen = FIGURES._replace(target_kib=2048 * MiB, balloon_kib=2048 * MiB)
    events = ev.restored_on_stop(states, {'u1': CEILING, 'u2': CEILING, 'gone': CEILING},
                                 lambda uuid: seen, HOST_NAME)
    assert kinds(events) == [EventType.GUEST_RESTORED]
    data = events[0].payload['nova_object.data']
    assert (data['uuid'], data['target_mb'], data['balloon_mb']) == ('u1', 4096, 2048)


def test_agent_payloads():
    start = ev.agent_event(EventType.AGENT_START, HOST_NAME, '1.2.3', 'adaptive', 2, False, True)
    stop = ev.agent_event(EventType.AGENT_STOP, HOST_NAME, '1.2.3', 'adaptive', 2, False, True,
                          5)
    assert start.payload['nova_object.data']['guests_restored'] is None
    assert stop.payload['nova_object.data'] == {
        'host': HOST_NAME, 'version': '1.2.3', 'policy': 'adaptive', 'interval_s': 2,
        'dry_run': False, 'restore_on_stop': True, 'guests_restored': 5}
    assert ev.publisher_id(HOST_NAME) == 'nova-balloon:compute-1'


# States, from the planner's plans.

def test_reclaimed_by_a_shrink_and_restored_by_a_growth_to_the_ceiling():
    memory = {'u1': settled(None, CEILING, False)}
    shrink = plan_of([sample()], memory, {'u1': 3072 * MiB})
    states = ev.guest_states(shrink, {}, LIMITS)
    assert states['u1'].reclaimed
    [reclaimed] = ev.guest_events({}, states, lambda u: ev.guest_figures(shrink, u), HOST_NAME)
    assert reclaimed.event_type is EventType.GUEST_RECLAIMED
    assert reclaimed.payload['nova_object.data'] == {
        'host': HOST_NAME, 'uuid': 'u1', 'name': 'instance-u1', 'display_name': 'web-u1',
        'flavor': 'm1.large', 'memory_mb': 4096, 'floor_mb': 2048, 'target_mb': 3072,
        'balloon_mb': 4096, 'free_mb': 2048, 'reason': None}

    memory = {'u1': settled(3072 * MiB, 3072 * MiB, True)}
    smaller = plan_of([sample(actual=3072 * MiB, usable=1024 * MiB)], memory,
                      {'u1': 2560 * MiB})
    again = ev.guest_states(smaller, states, LIMITS)
    assert again['u1'].reclaimed
    assert ev.guest_figures(smaller, 'u1').target_kib == 2560 * MiB
    assert ev.guest_events(states, again, unexpected, HOST_NAME) == []

    memory = {'u1': settled(2560 * MiB, 2560 * MiB, True)}
    grow = plan_of([sample(actual=2560 * MiB, usable=1024 * MiB)], memory, {'u1': CEILING})
    restored = ev.guest_states(grow, again, LIMITS)
    assert not restored['u1'].reclaimed
    [event] = ev.guest_events(again, restored, lambda u: ev.guest_figures(grow, u), HOST_NAME)
    assert event.event_type is EventType.GUEST_RESTORED
    assert event.payload['nova_object.data']['target_mb'] == 4096


def test_a_target_not_applied_is_no_reclaim():
    """The controller puts back what it remembered when a target was not applied
    (an error, a dry run): the plan's memory is what the states read."""
    memory = {'u1': settled(None, CEILING, False)}
    shrink = plan_of([sample()], memory, {'u1': 3072 * MiB})
    shrink.memory['u1'] = memory['u1']
    assert not ev.guest_states(shrink, {}, LIMITS)['u1'].reclaimed


def short_of(usable: int | None, before: GuestState | None = None,
             actual: int = 3072 * MiB) -> str | None:
    memory = {'u1': settled(actual, actual, True)}
    plan = plan_of([sample(actual=actual, usable=usable)], memory)
    return ev.guest_states(plan, {'u1': before} if before else {}, LIMITS)['u1'].short


def test_short_below_the_headroom_covered_above_one_and_a_half_times_it():
    assert short_of(HEADROOM + MiB) is None
    reason = short_of(HEADROOM - MiB)
    assert reason == '408 MiB free, below its headroom of 409 MiB'
    was_short = state(short=reason)
    # Between the headroom and 1.5 times it, a short guest stays short...
    assert short_of(HEADROOM + 100 * MiB, was_short) == reason
    # ...and is covered above it.
    assert short_of(int(HEADROOM * 1.5) + MiB, was_short) is None


def test_a_guest_at_its_full_memory_is_never_short():
    assert short_of(10 * MiB, actual=CEILING) is None
    assert short_of(10 * MiB, state(short='low'), actual=CEILING) is None


def test_without_statistics_a_short_guest_stays_short():
    assert short_of(None, state(short='low')) == 'low'
    assert short_of(None) is None


def test_a_balloon_deflated_on_oom_is_short():
    memory = {'u1': settled(2048 * MiB, 2048 * MiB, True)}
    plan = plan_of([sample(actual=2600 * MiB, usable=1024 * MiB)], memory)
    assert plan.views['u1'].deflated_on_oom
    assert ev.guest_states(plan, {}, LIMITS)['u1'].short == (
        'deflated its balloon on out-of-memory: 2600 MiB, above its target 2048 MiB')


def test_unresponsive_balloon_then_responding():
    memory = {'u1': settled(2048 * MiB, 3072 * MiB, True)}
    frozen = plan_of([sample(actual=3072 * MiB, age=400.0)], memory)
    states = ev.guest_states(frozen, {}, LIMITS)
    assert states['u1'].unresponsive == 'balloon statistics frozen for 400 s'
    events = ev.guest_events({}, states, figures, HOST_NAME)
    assert EventType.GUEST_UNRESPONSIVE in kinds(events)
    unresponsive = next(e for e in events if e.event_type is EventType.GUEST_UNRESPONSIVE)
    assert unresponsive.payload['nova_object.data']['reason'] == states['u1'].unresponsive

    memory = {'u1': frozen.memory['u1']._replace(unresponsive_until=NOW - 1)}
    answering = plan_of([sample(actual=CEILING)], memory)
    after = ev.guest_states(answering, states, LIMITS)
    assert after['u1'].unresponsive is None
    assert EventType.GUEST_RESPONDING in kinds(ev.guest_events(states, after, figures,
                                                                HOST_NAME))


def test_a_guest_no_longer_managed_keeps_its_short_and_unresponsive_states():
    memory = {'u1': settled(3072 * MiB, 3072 * MiB, True)}
    paused = plan_of([sample(actual=3072 * MiB, run_state=RunState.PAUSED)], memory)
    before = state(short='low', unresponsive='stuck', reclaimed=True)
    after = ev.guest_states(paused, {'u1': before}, LIMITS)['u1']
    assert (after.short, after.unresponsive) == ('low', 'stuck')
    assert ev.guest_figures(paused, 'u1').floor_kib is None
    assert after.reclaimed  # a paused guest is restored once it runs again


def test_host_figures_from_the_plan():
    memory = {'u1': settled(3072 * MiB, 3072 * MiB, True), 'u2': settled(None, CEILING, False)}
    samples = [sample(actual=3072 * MiB), sample('u2')]
    calm = plan_of(samples, memory)
    assert not calm.host_critical
    host = ev.host_figures(calm, 512 * MiB)
    assert (host.guests_reclaimed, host.reclaimed_kib) == (1, 1024 * MiB)
    critical = plan_of(samples, memory, available=256 * MiB)
    assert critical.host_critical
    assert ev.host_figures(critical, 512 * MiB).available_kib == 256 * MiB
