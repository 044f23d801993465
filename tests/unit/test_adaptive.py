"""Unit tests of the default policy: share_out water-filling and AdaptivePolicy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from nova_balloon.conf import adaptive_policy, balloon
from nova_balloon.model import GuestView, HostSnapshot
from nova_balloon.policies import Policy
from nova_balloon.policies.adaptive import (
    AdaptivePolicy,
    Need,
    Seen,
    need_of,
    observe,
    ramp_room,
    share_out,
)
from nova_balloon.safety import guard
from tests.unit.test_safety import guests as safety_guests

MiB = 1024
GiB = 1024 * MiB


# -- share_out ------------------------------------------------------------------

def test_budget_larger_than_wants():
    assert share_out(1000, {'a': 100, 'b': 200}, {'a': 1, 'b': 1}) == {'a': 100, 'b': 200}


def test_budget_split_by_shares_one_to_three():
    # 400 * 1 / 4 = 100, 400 * 3 / 4 = 300
    assert share_out(400, {'a': 1000, 'b': 1000}, {'a': 1, 'b': 3}) == {'a': 100, 'b': 300}


def test_satisfied_guest_leftover_redistributed():
    # Round 1: a min(50, 200) = 50, b min(1000, 200) = 200; round 2: b gets the 150 left.
    assert share_out(400, {'a': 50, 'b': 1000}, {'a': 1, 'b': 1}) == {'a': 50, 'b': 350}


def test_satisfied_high_share_guest_leftover_goes_to_low_share_guest():
    # Round 1: a min(1000, 100) = 100, b min(150, 300) = 150; round 2: a gets 150.
    assert share_out(400, {'a': 1000, 'b': 150}, {'a': 1, 'b': 3}) == {'a': 250, 'b': 150}


def test_three_guests_two_rounds():
    # Round 1 (total 4): a min(10, 150) = 10, b min(500, 150) = 150, c min(500, 300) = 300;
    # left 140, round 2 (total 3): b 140 // 3 = 46, c 140 * 2 // 3 = 93; left 1,
    # round 3: 1 // 3 = 0 and 1 * 2 // 3 = 0: nothing more to give.
    result = share_out(600, {'a': 10, 'b': 500, 'c': 500}, {'a': 1, 'b': 1, 'c': 2})
    assert result == {'a': 10, 'b': 196, 'c': 393}


@pytest.mark.parametrize('budget', [0, -1, -10**9])
def test_zero_or_negative_budget(budget):
    assert share_out(budget, {'a': 100, 'b': 200}, {'a': 1, 'b': 1}) == {'a': 0, 'b': 0}


def test_zero_want_gets_nothing_and_no_wants():
    assert share_out(100, {'a': 0, 'b': 30}, {'a': 5, 'b': 1}) == {'a': 0, 'b': 30}
    assert share_out(100, {}, {}) == {}


@st.composite
def share_cases(draw):
    names = draw(st.lists(st.text('abcdef', min_size=1, max_size=3), min_size=1, max_size=6,
                          unique=True))
    wants = {n: draw(st.integers(0, 10**7)) for n in names}
    shares = {n: draw(st.integers(1, 1_000_000)) for n in names}
    return draw(st.integers(-(10**7), 5 * 10**7)), wants, shares


@settings(max_examples=300, deadline=None)
@given(share_cases())
def test_share_out_properties(case):
    """Nobody gets more than it wants or less than 0; the budget is not
    exceeded; at most one KiB per guest is lost to rounding; with equal wants,
    more shares never get less."""
    budget, wants, shares = case
    given_ = share_out(budget, wants, shares)
    assert set(given_) == set(wants)
    assert all(0 <= given_[u] <= wants[u] for u in wants)
    assert sum(given_.values()) <= max(0, budget)
    assert sum(given_.values()) >= min(max(0, budget), sum(wants.values())) - len(wants)
    for a in wants:
        for b in wants:
            if wants[a] == wants[b] and shares[a] >= shares[b]:
                assert given_[a] >= given_[b]


# -- AdaptivePolicy ---------------------------------------------------------------

@pytest.fixture
def make_conf():
    """Build a ConfigOpts with [balloon], [adaptive_policy] or [DEFAULT]
    overrides by option name, cleared after the test.

    register_opts registers module-level OptGroup/Opt objects, and oslo.config
    keeps overrides in the group's option table, which every ConfigOpts (and
    cfg.CONF) that registered the same group shares: an override left behind
    would leak into later tests.
    """
    made: list[tuple[cfg.ConfigOpts, str, str | None]] = []
    adaptive = {opt.name for opt in adaptive_policy.adaptive_policy_opts}

    def make(**overrides) -> cfg.ConfigOpts:
        conf = cfg.ConfigOpts()
        balloon.register_opts(conf)
        adaptive_policy.register_opts(conf)
        conf([])
        for name, value in overrides.items():
            group = 'adaptive_policy' if name in adaptive else (
                None if name == 'reserved_host_memory_mb' else 'balloon')
            conf.set_override(name, value, group=group)
            made.append((conf, name, group))
        return conf

    yield make
    for conf, name, group in made:
        conf.clear_override(name, group=group)


@pytest.fixture(scope='module')
def make_conf_once() -> cfg.ConfigOpts:
    """The default options, for Hypothesis tests (function fixtures are not reset
    between their examples)."""
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    conf([])
    return conf


def host(available: int = 32 * GiB, now: float = 100.0) -> HostSnapshot:
    return HostSnapshot(total_kib=64 * GiB, available_kib=available, now=now)


def guest(uuid: str = 'u1', actual: int = 4 * GiB, usable: int | None = 3 * GiB,
          at: int = 100, **kw) -> GuestView:
    """A 4 GiB guest with floor 1 GiB; demand is actual - usable; a new sample
    taken at guest time ``at``, the slow 10 s stats period."""
    demand = None if usable is None else actual - usable
    fields = dict(uuid=uuid, name=uuid, ceiling_kib=4 * GiB, floor_kib=1 * GiB, shares=1000,
                  actual_kib=actual, target_kib=None, usable_kib=usable,
                  demand_kib=demand, swap_in_kib=0,
                  major_faults=0, stats_fresh=True, balloon_moving=False,
                  deflated_on_oom=False, sampled_at=None if usable is None else at,
                  new_sample=usable is not None, demand_bound_kib=demand,
                  stats_period_s=10, reaction_s=13.0)
    fields.update(kw)
    return GuestView(**fields)


def using(demand: int, actual: int = 4 * GiB, **kw) -> GuestView:
    return guest(actual=actual, usable=actual - demand, **kw)


def test_is_a_policy(make_conf):
    assert isinstance(AdaptivePolicy(make_conf()), Policy)


def test_idle_guest_goes_to_its_floor(make_conf):
    # Demand 512 MiB + 5 % is below the floor of 1 GiB.
    policy = AdaptivePolicy(make_conf())
    assert policy.propose(host(), [using(512 * MiB)]) == {'u1': 1 * GiB}


def test_busy_guest_gets_its_demand_plus_the_buffer(make_conf):
    # 2 GiB + 5 % = 2202009.6 KiB (no safety headroom: the buffer alone).
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    assert policy.propose(host(), [using(2 * GiB)]) == {'u1': 2202009}


def test_a_guest_wants_at_least_its_demand_plus_the_safety_headroom(make_conf):
    # The 5 % buffer of 2 GiB is less than the rules' headroom, 10 % of the
    # 4 GiB flavor (409.6 MiB): a guest that grows gets the margin the rules
    # leave one that shrinks, 2 GiB + 419430 KiB.
    policy = AdaptivePolicy(make_conf())
    assert policy.propose(host(), [using(2 * GiB)]) == {'u1': 2 * GiB + 419430}
    g = using(2 * GiB)
    assert need_of(g, observe(g, None, 10.0), 0.05, headroom_kib=419430).want_kib == \
        2 * GiB + 419430


def test_buffer_percent_option(make_conf):
    # 1 GiB + 50 %.
    policy = AdaptivePolicy(make_conf(buffer_percent=50.0))
    assert policy.propose(host(), [using(1 * GiB)]) == {'u1': 1536 * MiB}


def looks(*demands: int, half_life_s: float = 10.0) -> list[Seen]:
    """What the policy makes of a 4 GiB guest's demands, one sample every 10 s."""
    seen: list[Seen] = []
    for i, demand in enumerate(demands):
        seen.append(observe(using(demand, at=100 + 10 * i), seen[-1] if seen else None,
                            half_life_s))
    return seen


def test_estimate_rises_at_once_and_falls_back_by_half_each_half_life():
    # Demand 1 GiB again after 3 GiB: the estimate keeps half of the 2 GiB
    # above it, then a quarter.
    estimates = [s.estimate_kib for s in looks(1 * GiB, 3 * GiB, 1 * GiB, 1 * GiB)]
    assert estimates == [1 * GiB, 3 * GiB, 2 * GiB, 1.5 * GiB]


def test_largest_surge_is_remembered_and_fades_by_half_each_two_half_lives():
    # Half-life 5 s, samples 10 s apart: the 2 GiB surge halves each sample;
    # a smaller rise (256 MiB) does not replace the faded one (512 MiB).
    surges = [s.surge_kib for s in looks(1 * GiB, 3 * GiB, 1 * GiB, 1 * GiB, 1280 * MiB,
                                         half_life_s=5.0)]
    assert surges == [0, 2 * GiB, 1 * GiB, 512 * MiB, 256 * MiB]
    surges = [s.surge_kib for s in looks(1 * GiB, 3 * GiB, 1 * GiB, 1 * GiB, 1792 * MiB,
                                         half_life_s=5.0)]
    assert surges[-1] == 768 * MiB


def test_decay_counts_guest_time_between_samples_not_looks():
    # The same sample seen again changes nothing; 20 s later, two half-lives.
    first = observe(using(3 * GiB, at=100), None, 10.0)
    again = observe(using(1 * GiB, at=120), first, 10.0)
    assert again.estimate_kib == 1 * GiB + 2 * GiB / 4


def test_want_is_estimate_plus_the_larger_of_buffer_and_half_the_surge():
    g = using(1 * GiB)
    # 3 GiB after a surge of 2 GiB: 3 + 1 GiB beats 3 GiB + 5 %; the ceiling caps it.
    assert need_of(g, looks(1 * GiB, 3 * GiB)[-1], 0.05).want_kib == 4 * GiB
    # After it, with a 5 s half-life (estimate 1.5 GiB, surge 1 GiB): 1.5 + 0.5 GiB.
    seen = looks(1 * GiB, 3 * GiB, 1 * GiB, half_life_s=5.0)[-1]
    assert need_of(g, seen, 0.05).want_kib == 2048 * MiB
    # No surge: the buffer, 5 %; the least is the demand, not below the floor.
    steady = need_of(g, looks(512 * MiB, 512 * MiB)[-1], 0.05)
    assert (steady.least_kib, steady.want_kib) == (1 * GiB, 1 * GiB)
    steady = need_of(g, looks(2 * GiB, 2 * GiB)[-1], 0.05)
    assert (steady.least_kib, steady.want_kib) == (2 * GiB, int(2 * GiB * 1.05))


def test_a_trend_is_covered_until_the_next_correction_lands():
    # Rising 25 MiB/s (the slower of the last two rates), 3 s until a
    # correction lands: 75 MiB on top of the demand, then the 5 % buffer.
    g = using(1 * GiB, actual=2 * GiB, trend_rate_kib_s=25 * MiB, demand_rate_kib_s=40 * MiB,
              reaction_s=3.0)
    assert ramp_room(g, watched_closely=False) == 75 * MiB
    seen = looks(1 * GiB)[-1]
    assert need_of(g, seen, 0.05, ramp_room(g, False)).want_kib == int(1099 * MiB * 1.05)


@pytest.mark.parametrize('usable_mib, watched, room_mib', [
    (200, True, 240),   # 200 MiB free lasts less than 2 x 3 s at 40 MiB/s: 240 MiB
    (250, True, 0),     # it lasts: no growth for one rise
    (100, False, 0),    # a rise over a slow period may be a jump that is over
])
def test_a_single_rise_counts_when_free_memory_would_not_last(usable_mib, watched,
                                                              room_mib):
    g = guest(actual=2 * GiB, usable=usable_mib * MiB, demand_rate_kib_s=40 * MiB,
              reaction_s=3.0)
    assert ramp_room(g, watched) == room_mib * MiB


def test_guest_with_almost_no_free_memory_uses_all_it_has(make_conf):
    # 20 MiB free is under 2 % of 2 GiB: demand is taken as 2 GiB.
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    g = guest(actual=2 * GiB, usable=20 * MiB)
    assert policy.propose(host(), [g]) == {'u1': 2202009}


def test_swap_in_rate_adds_to_what_a_guest_has(make_conf):
    # 1 GiB swapped in over 10 s: 104857.6 KiB/s on top of its 2 GiB, demand
    # 2202009 KiB; it rose by 1153433 KiB from 1 GiB, so the want is the
    # demand plus half that rise (more than the 5 % buffer): 2778725 KiB.
    policy = AdaptivePolicy(make_conf())
    policy.propose(host(now=100), [guest(actual=2 * GiB, usable=1 * GiB)])
    swapping = guest(actual=2 * GiB, usable=1 * GiB, swap_in_kib=1 * GiB, at=110)
    assert policy.propose(host(now=110), [swapping]) == {'u1': 2778725}


def test_a_sample_seen_again_is_not_observed_again(make_conf):
    # The second cycle sees the same sample (no new swap-in since it either):
    # the policy's view of the guest is the same, so is its proposal.
    policy = AdaptivePolicy(make_conf())
    policy.propose(host(now=100), [guest(actual=2 * GiB, usable=1 * GiB)])
    swapping = guest(actual=2 * GiB, usable=1 * GiB, swap_in_kib=1 * GiB, at=110)
    first = policy.propose(host(now=110), [swapping])
    assert policy.propose(host(now=112), [swapping._replace(new_sample=False)]) == first


def test_deflated_on_oom_uses_all_it_has(make_conf):
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    g = guest(actual=2 * GiB, usable=1 * GiB, target_kib=1536 * MiB, deflated_on_oom=True)
    assert policy.propose(host(), [g]) == {'u1': 2202009}


def test_moving_balloon_counts_at_the_planners_bound():
    # Growing, reported at 2 GiB with 1 GiB free, once 2.5 GiB since the sample.
    g = guest(actual=2 * GiB, usable=1 * GiB, target_kib=3 * GiB, demand_kib=None,
              balloon_moving=True, demand_bound_kib=1536 * MiB)
    assert observe(g, None, 480.0).demand_kib == 1536 * MiB


@pytest.mark.parametrize('target, proposed', [
    # Demand 2 GiB: least 2097152, want 2202009, buffer 104857: a target from
    # 2097152 + 52428.5 up to the want plus half its height above the 1 GiB
    # floor, 2202009 + (2202009 - 1048576) / 2 = 2778725.5, stays; above it
    # shrinks to the want, below it grows to the want.
    (2149581, 2149581), (2202009, 2202009), (2149580, 2202009), (2202010, 2202010),
    (2778725, 2778725), (2778726, 2202009)])
def test_target_stays_while_it_keeps_half_the_buffer_and_is_not_far_above_the_want(
        make_conf, target, proposed):
    # No safety headroom, so that the safety rules pass every shrink.
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    g = using(2 * GiB, actual=target, target_kib=target)
    assert policy.propose(host(), [g]) == {'u1': proposed}


@pytest.mark.parametrize('target, proposed', [
    # Demand 512 MiB: the want is the 1 GiB floor; 2 % of the 4 GiB flavor is
    # 83886 KiB, the least shrink worth a balloon move.
    (1 * GiB + 83886, 1 * GiB + 83886), (1 * GiB + 83887, 1 * GiB)])
def test_no_shrink_by_less_than_two_percent_of_the_flavor(make_conf, target, proposed):
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    g = using(512 * MiB, actual=target, target_kib=target)
    assert policy.propose(host(), [g]) == {'u1': proposed}


def test_shrink_that_safety_would_turn_into_growth_is_a_hold(make_conf):
    # Demand 1 GiB in 1.2 GiB on a host with nothing free and a 512 MiB
    # reserve: the host fits the guest's floor, 1 GiB, but the safety rules
    # keep demand plus 10 % of 4 GiB = 1.4 GiB, more than it has: hold at 1.2 GiB.
    policy = AdaptivePolicy(make_conf(host_reserve_mb=512))
    g = using(1 * GiB, actual=1228 * MiB)
    assert policy.propose(host(available=0), [g]) == {'u1': 1228 * MiB}


def test_contention_gives_demand_first_then_shares(make_conf):
    # Two guests at 2 GiB using 1.5 GiB (want 1651507 each, 78643 above it); the
    # host holds them with 0.1 GiB free: room 4.1 - 1 (reserve) GiB, 104857 KiB
    # above both demands, shared 3:1 (equal idle parts): 78642 and 26214.
    policy = AdaptivePolicy(make_conf(host_reserve_mb=1024))
    a = using(1536 * MiB, actual=2 * GiB, uuid='a', shares=3000)
    b = using(1536 * MiB, actual=2 * GiB, uuid='b', shares=1000)
    out = policy.propose(host(available=int(0.1 * GiB)), [a, b])
    assert out == {'a': 1536 * MiB + 78642, 'b': 1536 * MiB + 26214}


def test_idle_memory_is_taxed_under_contention(make_conf):
    policy = AdaptivePolicy(make_conf())
    # Want 2 GiB using 1 GiB, tax 75 %: shares x 2 / (1 + 4 x 1).
    need = Need(least_kib=1 * GiB, want_kib=2 * GiB, demand_kib=1 * GiB)
    assert policy._weight(guest(), need) == pytest.approx(1000 * 2 / 5)
    untaxed = AdaptivePolicy(make_conf(idle_tax_percent=0.0))
    assert untaxed._weight(guest(), need) == pytest.approx(1000)


def test_growth_comes_out_of_free_memory_short_guests_into_the_reserve(make_conf):
    # Swapping 1 GiB/s at 1 GiB: demand 2 GiB. 1.3 GiB free: 0.3 above the 1 GiB
    # reserve, 0.8 above the 512 MiB critical level: a short guest may grow 0.8 GiB.
    policy = AdaptivePolicy(make_conf(host_reserve_mb=1024))
    policy.propose(host(now=100), [using(512 * MiB, actual=1 * GiB)])
    g = using(512 * MiB, actual=1 * GiB, swap_in_kib=10 * GiB, at=110)
    assert policy.propose(host(available=int(1.3 * GiB), now=110), [g]) == \
        {'u1': 1 * GiB + int(0.8 * GiB)}


def test_growth_still_under_way_counts_against_free_memory(make_conf):
    # b grows from 1 to 3 GiB (reported at 1 GiB): 2 GiB of the 3.5 GiB free are
    # spoken for, 0.5 GiB are left above the reserve; a (short) wants 1.1 GiB more.
    policy = AdaptivePolicy(make_conf(host_reserve_mb=1024))
    a = using(512 * MiB, actual=1 * GiB, uuid='a')
    b = guest('b', actual=1 * GiB, usable=None, target_kib=3 * GiB)
    policy.propose(host(now=100), [a, b])
    a = using(512 * MiB, actual=1 * GiB, uuid='a', swap_in_kib=10 * GiB, at=110)
    out = policy.propose(host(available=int(3.5 * GiB), now=110), [a, b])
    # Short growth from 3.5 - 2 - 0.5 (critical) = 1 GiB: a gets its demand.
    assert out == {'a': 2 * GiB}


def test_unresponsive_and_stale_guests_get_no_proposal_and_keep_their_memory(make_conf):
    policy = AdaptivePolicy(make_conf(headroom_mb=0, headroom_percent=0.0))
    guests = [using(2 * GiB, uuid='fresh'), using(2 * GiB, uuid='stale', stats_fresh=False),
              guest('silent', usable=None), using(2 * GiB, uuid='stuck', unresponsive='x')]
    assert policy.propose(host(), guests) == {'fresh': 2202009}
    assert policy.propose(host(), []) == {}


def test_history_survives_staleness_not_absence(make_conf):
    policy = AdaptivePolicy(make_conf(demand_half_life=10, headroom_mb=0,
                                      headroom_percent=0.0))
    policy.propose(host(now=100), [using(3 * GiB)])
    policy.propose(host(now=110), [using(3 * GiB, stats_fresh=False, new_sample=False)])
    # Still remembered, 20 s of guest time on: a quarter of the 2 GiB above 1 GiB.
    assert policy.propose(host(now=120), [using(1 * GiB, at=120)]) == \
        {'u1': int(1.5 * GiB * 1.05)}
    policy.propose(host(now=130), [])
    assert policy.propose(host(now=140), [using(1 * GiB, at=140)]) == \
        {'u1': int(1 * GiB * 1.05)}


def reference_growth(policy: AdaptivePolicy, guests: list[GuestView],
                     proposals: dict[str, int]) -> int:
    """_growth's definition, spelled out: every guest through the safety
    rules, a shrink they would turn into growth made a hold, then the growth
    from the lower of each balloon's size and target."""
    growth = 0
    for g in guests:
        current = g.target_kib if g.target_kib is not None else g.actual_kib
        target = guard(g, proposals[g.uuid], policy.limits).target_kib
        if target > max(proposals[g.uuid], current):
            proposals[g.uuid] = max(current, min(g.actual_kib, target))
            target = guard(g, proposals[g.uuid], policy.limits).target_kib
        growth += max(0, target - min(g.actual_kib, current))
    return growth


@settings(max_examples=300, deadline=None)
@given(st.lists(safety_guests(), min_size=1, max_size=5), st.data())
def test_growth_is_what_the_safety_rules_make_of_the_proposals(make_conf_once, views, data):
    views = [v._replace(uuid=f'u{i}') for i, v in enumerate(views)]
    proposals = {}
    for v in views:
        current = v.target_kib if v.target_kib is not None else v.actual_kib
        proposals[v.uuid] = data.draw(st.just(current) | st.integers(0, 2 * v.ceiling_kib))
    policy = AdaptivePolicy(make_conf_once)
    expected = dict(proposals)
    assert policy._growth(views, proposals) == reference_growth(policy, views, expected)
    assert proposals == expected


def test_untouched_guest_memory_is_not_free_for_growth(make_conf):
    # As above, but MemAvailable is 3.3 GiB of which 2 GiB are other guests'
    # balloons they have not touched yet (free page reporting): the same 0.8 GiB.
    policy = AdaptivePolicy(make_conf(host_reserve_mb=1024))
    policy.propose(host(now=100), [using(512 * MiB, actual=1 * GiB)])
    g = using(512 * MiB, actual=1 * GiB, swap_in_kib=10 * GiB, at=110)
    snapshot = HostSnapshot(total_kib=64 * GiB, available_kib=int(3.3 * GiB), now=110,
                            untouched_kib=2 * GiB)
    assert policy.propose(snapshot, [g]) == {'u1': 1 * GiB + int(0.8 * GiB)}


def test_the_host_reserve_is_novas_unless_set(make_conf):
    assert AdaptivePolicy(make_conf()).host_reserve_kib == 512 * MiB
    assert AdaptivePolicy(make_conf(reserved_host_memory_mb=2048)).host_reserve_kib == 2 * GiB
    assert AdaptivePolicy(make_conf(host_reserve_mb=100)).host_reserve_kib == 100 * MiB
