"""Property tests: whatever guests report, the plan keeps its promises.

A guest writes its own balloon statistics, so they may be anything: negative,
absurd, missing, going backwards, frozen. Over random hosts, guests and
remembered state, with the default policy deciding, every decision must keep
each guest within its own bounds, shrink no faster than allowed, and never
shrink a guest whose statistics cannot be trusted.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from nova_balloon.conf import balloon
from nova_balloon.controller import planner
from nova_balloon.model import (
    Action,
    BalloonStats,
    GuestFacts,
    GuestSample,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies import Policy
from nova_balloon.policies.adaptive import AdaptivePolicy

MIB = 1024
CONF = cfg.ConfigOpts()
balloon.register_opts(CONF)
CONF([])
SETTINGS = planner.Settings.from_conf(CONF.balloon)
HOSTILE = st.one_of(st.none(), st.integers(-2**40, 2**40),
                    st.integers(0, 8 * 1024 * MIB))


@st.composite
def guests(draw: st.DrawFn, index: int) -> tuple[GuestSample, planner.GuestMemory | None]:
    ceiling = draw(st.integers(64, 16 * 1024)) * MIB
    ratio = draw(st.sampled_from(['1.5', '2.0', '4.0', '8.0', '1.0', 'abc', 'nan']))
    specs = {'balloon:overcommit_ratio': ratio,
             'balloon:shares': str(draw(st.integers(1, 4000)))}
    facts = GuestFacts(uuid=f'u{index}', name=f'g{index}', max_memory_kib=ceiling,
                       nova=NovaMetadata('vm', 'm1', ceiling // MIB, specs),
                       unballoonable=None, stats_period_s=draw(st.sampled_from([None, 1, 10])))
    actual = draw(st.integers(ceiling // 8, ceiling))
    usable = draw(st.integers(0, actual))
    plausible = BalloonStats(actual_kib=actual, usable_kib=usable, unused_kib=usable // 2,
                             available_kib=ceiling, swap_in_kib=draw(st.integers(0, 100)),
                             major_faults=draw(st.integers(0, 1000)), last_update=1)
    hostile = BalloonStats(actual_kib=draw(HOSTILE), usable_kib=draw(HOSTILE),
                           unused_kib=draw(HOSTILE), available_kib=draw(HOSTILE),
                           swap_in_kib=draw(HOSTILE), major_faults=draw(HOSTILE),
                           last_update=draw(st.one_of(st.none(), st.integers(0, 2**31))))
    stats = draw(st.sampled_from([plausible, plausible, hostile]))
    sample = GuestSample(facts, stats, draw(st.sampled_from([RunState.RUNNING] * 4
                                                             + list(RunState))),
                         draw(st.one_of(st.none(), st.floats(-100, 1000),
                                        st.floats(0, 3), st.floats(0, 90))))
    # Mostly a guest the agent has known for a while, at its target.
    memory = draw(st.one_of(st.none(), st.builds(
        planner.GuestMemory,
        target_kib=st.one_of(st.just(actual), st.just(actual), HOSTILE,
                             st.integers(ceiling // 8, ceiling)),
        actual_kib=st.just(actual),
        shrunk=st.booleans(),
        actual_since=st.one_of(st.just(0.0), st.just(0.0), st.none(), st.floats(0, 3000)),
        target_set_at=st.one_of(st.none(), st.floats(0, 2000)))))
    return sample, memory


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[HostSnapshot, list, dict]:
    count = draw(st.integers(1, 6))
    drawn = [draw(guests(i)) for i in range(count)]
    host = HostSnapshot(total_kib=64 * 1024 * MIB,
                        available_kib=draw(st.integers(-MIB, 64 * 1024 * MIB)),
                        now=draw(st.floats(1000, 3000)))
    return host, [s for s, _ in drawn], {s.facts.uuid: m for s, m in drawn if m}


class AnyProposal(Policy):
    """A policy proposing anything at all: the safety rules must hold regardless."""

    def __init__(self, data: st.DataObject):
        super().__init__(CONF)
        self.data = data

    def propose(self, host, guests):
        return {g.uuid: self.data.draw(st.integers(-2**40, 2**40)) for g in guests
                if self.data.draw(st.booleans())}


@settings(max_examples=400, deadline=None)
@given(snapshots(), st.integers(1, 6), st.booleans(), st.data())
def test_every_plan_keeps_the_safety_promises(snapshot, cycles, default_policy, data) -> None:
    host, samples, memory = snapshot
    policy = AdaptivePolicy(CONF) if default_policy else AnyProposal(data)
    for cycle in range(cycles):
        now_host = dataclasses.replace(host, now=host.now + cycle)
        plan = planner.plan(now_host, samples, policy, {}, memory, SETTINGS)
        # Four times the usual step when the host is short of memory.
        factor = planner.CRITICAL_SHRINK_FACTOR if plan.host_critical else 1
        limits = dataclasses.replace(
            SETTINGS.limits, max_shrink_kib=SETTINGS.limits.max_shrink_kib * factor,
            max_shrink_percent=min(100.0, SETTINGS.limits.max_shrink_percent * factor))
        for decision in plan.decisions:
            item = plan.classified[decision.uuid]
            ceiling = item.ceiling_kib
            if decision.action is Action.IGNORE:
                continue
            assert decision.target_kib is not None
            if item.ignore_reason is not None:
                # The only action on an unmanaged guest: its memory back.
                assert decision.action is Action.GROW and decision.target_kib == ceiling
                continue
            view = plan.views[decision.uuid]
            if decision.action is Action.HOLD:
                continue
            assert item.floor_kib <= decision.target_kib <= ceiling
            if decision.action is Action.SHRINK:
                assert decision.target_kib >= min(ceiling,
                                                  view.actual_kib - limits.max_shrink_for(view))
                trusted = (view.stats_fresh and view.usable_kib is not None
                           and not view.deflated_on_oom and view.unresponsive is None)
                # A target below what the guest has, or below the target it
                # is still growing to, is a shrink: the same blockers apply.
                current = view.target_kib if view.target_kib is not None else view.actual_kib
                assert trusted and view.demand_kib is not None or \
                    decision.target_kib >= min(ceiling, max(view.actual_kib, current)), \
                    'shrunk a guest whose statistics cannot be trusted'
                if view.demand_kib is not None and decision.target_kib < view.actual_kib:
                    assert decision.target_kib >= min(
                        ceiling, view.demand_kib + limits.headroom_for(view))
        memory = plan.memory
