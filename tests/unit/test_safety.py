"""Unit tests of nova_balloon.safety.guard: each rule by example, then properties."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nova_balloon.model import Action, Decision, GuestView
from nova_balloon.safety import SafetyLimits, guard
from nova_balloon.safety.rules import SETTLE_TOLERANCE_KIB

MiB = 1024
GiB = 1024 * MiB
CEILING = 4 * GiB
FLOOR = 1 * GiB
# headroom_for a 4 GiB guest: max(64 MiB, 10 % of 4194304 KiB = 419430 KiB) = 419430 KiB
LIMITS = SafetyLimits(headroom_kib=64 * MiB, headroom_percent=10.0,
                      max_shrink_kib=128 * MiB, max_shrink_percent=0.0,
                      dead_band_kib=16 * MiB)
HEADROOM = 419430
# Limits that switch off every rule but the one a test looks at.
LOOSE = SafetyLimits(headroom_kib=0, headroom_percent=0.0, max_shrink_kib=64 * GiB,
                     max_shrink_percent=0.0, dead_band_kib=0)


def view(actual: int = CEILING, usable: int | None = 3 * GiB, target: int | None = None,
         **kw) -> GuestView:
    """A managed 4 GiB guest with floor 1 GiB; demand is actual - usable."""
    fields = dict(uuid='u1', name='g1', ceiling_kib=CEILING, floor_kib=FLOOR, shares=1000,
                  actual_kib=actual, target_kib=target, usable_kib=usable,
                  demand_kib=None if usable is None else actual - usable,
                  swap_in_kib=0, major_faults=0, stats_fresh=True, balloon_moving=False,
                  deflated_on_oom=False)
    fields.update(kw)
    return GuestView(**fields)


def test_headroom_for():
    assert LIMITS.headroom_for(view()) == HEADROOM
    big = dataclasses.replace(LIMITS, headroom_kib=512 * MiB)
    assert big.headroom_for(view()) == 512 * MiB


# -- rule 1: bounds ------------------------------------------------------------

def test_proposal_above_ceiling_grows_to_ceiling():
    d = guard(view(actual=2 * GiB, usable=1 * GiB), 10 * GiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)


def test_proposal_below_floor_shrinks_to_floor():
    d = guard(view(actual=2 * GiB, usable=2 * GiB - 10 * MiB), 0, LOOSE)
    assert (d.action, d.target_kib) == (Action.SHRINK, FLOOR)


def test_negative_proposal_clamped_to_floor():
    d = guard(view(actual=2 * GiB, usable=2 * GiB), -5 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.SHRINK, FLOOR)


def test_current_target_below_floor_is_raised_even_inside_dead_band():
    """A current target outside the bounds is always corrected."""
    limits = dataclasses.replace(LIMITS, dead_band_kib=1 * GiB)
    d = guard(view(actual=FLOOR - MiB, usable=500 * MiB, target=FLOOR - MiB), None, limits)
    assert (d.action, d.target_kib) == (Action.GROW, FLOOR)


def test_no_proposal_keeps_current_target():
    d = guard(view(actual=3 * GiB, target=3 * GiB, usable=2 * GiB), None, LIMITS)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)


def test_no_proposal_no_target_holds_actual():
    d = guard(view(actual=3 * GiB, usable=2 * GiB), None, LIMITS)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)


# -- rules 2 and 3: no shrink on stale/invalid stats or after an OOM deflation -----

@pytest.mark.parametrize('blocker', [
    dict(stats_fresh=False),
    dict(usable_kib=None, demand_kib=None),
    dict(deflated_on_oom=True),
])
def test_blocked_shrink_keeps_actual(blocker):
    guest = view(actual=3 * GiB, usable=2 * GiB)._replace(**blocker)
    d = guard(guest, 2 * GiB, LOOSE)
    assert d.action is Action.HOLD
    assert d.target_kib == 3 * GiB
    assert 'no shrink' in d.reason


@pytest.mark.parametrize('blocker', [
    dict(stats_fresh=False),
    dict(usable_kib=None, demand_kib=None),
    dict(deflated_on_oom=True),
])
def test_blocked_shrink_while_balloon_moving_freezes_at_actual(blocker):
    """Target 2 GiB, balloon at 3 GiB: a blocked guest is grown to what it has."""
    guest = view(actual=3 * GiB, usable=2 * GiB, target=2 * GiB)._replace(**blocker)
    d = guard(guest, 1 * GiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB)


def test_deflated_on_oom_reason_names_actual_and_target():
    guest = view(actual=3 * GiB, usable=100 * MiB, target=2 * GiB, deflated_on_oom=True)
    d = guard(guest, 2 * GiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB)
    assert 'OOM' in d.reason and '3072 MiB' in d.reason and '2048 MiB' in d.reason


def test_stale_stats_do_not_block_growth():
    guest = view(actual=2 * GiB, usable=1 * GiB, stats_fresh=False)
    d = guard(guest, 3 * GiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB)


# -- rule 5: demand + headroom ----------------------------------------------------

def test_shrink_keeps_demand_plus_percent_headroom():
    limits = dataclasses.replace(LIMITS, max_shrink_kib=64 * GiB)
    guest = view(actual=CEILING, usable=CEILING - 2000 * MiB)  # demand 2000 MiB
    d = guard(guest, FLOOR, limits)
    assert (d.action, d.target_kib) == (Action.SHRINK, 2000 * MiB + HEADROOM)
    assert 'headroom' in d.reason


def test_shrink_keeps_demand_plus_absolute_headroom_when_larger():
    limits = dataclasses.replace(LIMITS, headroom_kib=512 * MiB, max_shrink_kib=64 * GiB)
    guest = view(actual=CEILING, usable=CEILING - 2000 * MiB)
    d = guard(guest, FLOOR, limits)
    assert (d.action, d.target_kib) == (Action.SHRINK, 2000 * MiB + 512 * MiB)


def test_keep_above_ceiling_is_capped_at_ceiling():
    limits = dataclasses.replace(LIMITS, max_shrink_kib=64 * GiB)
    guest = view(actual=CEILING, usable=100 * MiB)  # demand + headroom > ceiling
    d = guard(guest, FLOOR, limits)
    assert (d.action, d.target_kib) == (Action.HOLD, CEILING)


def test_keep_above_actual_grows_the_guest():
    """A shrink proposal for a guest using nearly all it has ends in growth."""
    guest = view(actual=2 * GiB, usable=10 * MiB, target=2 * GiB)
    d = guard(guest, FLOOR, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 2 * GiB - 10 * MiB + HEADROOM)


# -- rule 6: at most max_shrink per cycle -----------------------------------------

def test_shrink_limited_per_cycle():
    guest = view(actual=CEILING, usable=CEILING - 500 * MiB)
    d = guard(guest, FLOOR, LIMITS)
    assert (d.action, d.target_kib) == (Action.SHRINK, CEILING - 128 * MiB)
    assert 'per cycle' in d.reason


def test_shrink_limit_is_a_share_of_a_large_guest():
    # 5 % of 64 GiB is 3.2 GiB: a fixed 128 MiB step would take 26 moves for it.
    limits = dataclasses.replace(LIMITS, max_shrink_percent=5.0)
    big = view(actual=64 * GiB, usable=60 * GiB, ceiling_kib=64 * GiB, floor_kib=16 * GiB)
    d = guard(big, 16 * GiB, limits)
    assert (d.action, d.target_kib) == (Action.SHRINK, 64 * GiB - int(64 * GiB * 0.05))
    assert 'shrink limited to 3276 MiB per cycle' in d.reason
    # A small guest still moves by the fixed step, the larger of the two.
    small = view(actual=2 * GiB, usable=2 * GiB - 500 * MiB)
    assert guard(small, FLOOR, limits).target_kib == 2 * GiB - 128 * MiB


def test_shrink_limit_counts_from_actual_not_target():
    guest = view(actual=3 * GiB, target=3 * GiB, usable=3 * GiB - 500 * MiB)
    d = guard(guest, FLOOR, LIMITS)
    assert (d.action, d.target_kib) == (Action.SHRINK, 3 * GiB - 128 * MiB)


# -- rule 4: balloon still moving ---------------------------------------------------

def test_no_shrink_below_previous_target_while_balloon_moves():
    guest = view(actual=3 * GiB + 512 * MiB, usable=3 * GiB, target=3 * GiB)
    d = guard(guest, 2 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)
    assert 'still moving' in d.reason


def test_balloon_within_tolerance_of_target_has_settled():
    assert SETTLE_TOLERANCE_KIB == 2 * MiB
    guest = view(actual=3 * GiB + 2 * MiB, usable=2 * GiB, target=3 * GiB)
    d = guard(guest, 2 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.SHRINK, 2 * GiB)


def test_balloon_just_past_tolerance_is_still_moving():
    guest = view(actual=3 * GiB + 2 * MiB + 1, usable=2 * GiB, target=3 * GiB)
    d = guard(guest, 2 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)


def test_settled_balloon_may_shrink_below_previous_target():
    guest = view(actual=3 * GiB, usable=2 * GiB, target=3 * GiB)
    d = guard(guest, 2 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.SHRINK, 2 * GiB)


def moving(actual: int, target: int | None, usable: int = 2 * GiB) -> GuestView:
    """Fresh, valid statistics taken before the balloon's last move: no demand."""
    return view(actual=actual, usable=usable, target=target, demand_kib=None,
                balloon_moving=True)


def test_moving_balloon_goes_no_lower_than_its_target():
    d = guard(moving(actual=3 * GiB + 512 * MiB, target=3 * GiB), 1 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)
    assert 'balloon moving' in d.reason


def test_moving_balloon_without_target_keeps_actual():
    d = guard(moving(actual=3 * GiB, target=None), 1 * GiB, LOOSE)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)


def test_moving_balloon_target_may_be_raised_toward_actual():
    """Raising a target in force gives memory back: allowed without demand."""
    d = guard(moving(actual=3 * GiB + 512 * MiB, target=3 * GiB), 3 * GiB + 256 * MiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB + 256 * MiB)


def test_moving_balloon_grows_at_once():
    d = guard(moving(actual=2 * GiB, target=2 * GiB), CEILING, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)


# -- unresponsive balloon --------------------------------------------------------------

def test_unresponsive_guest_gets_its_ceiling_back():
    guest = view(actual=2 * GiB, usable=1 * GiB, target=2 * GiB,
                 unresponsive='balloon stuck')
    d = guard(guest, 1 * GiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)
    assert 'unresponsive: balloon stuck' in d.reason


def test_unresponsive_guest_at_ceiling_held():
    d = guard(view(unresponsive='frozen'), FLOOR, LIMITS)
    assert (d.action, d.target_kib) == (Action.HOLD, CEILING)


# -- growth ---------------------------------------------------------------------------

def test_large_growth_applied_at_once():
    guest = view(actual=FLOOR, usable=10 * MiB, target=FLOOR)
    d = guard(guest, CEILING, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)


def test_growth_not_limited_by_max_shrink_nor_headroom():
    limits = SafetyLimits(headroom_kib=1 * GiB, headroom_percent=50.0, max_shrink_kib=1 * MiB,
                          max_shrink_percent=0.0, dead_band_kib=16 * MiB)
    guest = view(actual=FLOOR, usable=FLOOR, target=FLOOR)
    d = guard(guest, 3 * GiB, limits)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB)


# -- dead band ------------------------------------------------------------------------

@pytest.mark.parametrize('delta', [8 * MiB, -8 * MiB, 16 * MiB - 1, -(16 * MiB - 1)])
def test_small_change_held(delta):
    guest = view(actual=3 * GiB, usable=2 * GiB, target=3 * GiB)
    d = guard(guest, 3 * GiB + delta, LIMITS)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)
    assert 'dead band' in d.reason


@pytest.mark.parametrize('delta, action', [(16 * MiB, Action.GROW),
                                           (-16 * MiB, Action.SHRINK)])
def test_change_of_exactly_the_dead_band_applied(delta, action):
    guest = view(actual=3 * GiB, usable=2 * GiB, target=3 * GiB)
    d = guard(guest, 3 * GiB + delta, LIMITS)
    assert (d.action, d.target_kib) == (action, 3 * GiB + delta)


def test_small_growth_of_guest_short_of_memory_applied():
    guest = view(actual=3 * GiB, usable=HEADROOM - 1, target=3 * GiB)
    d = guard(guest, 3 * GiB + 8 * MiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, 3 * GiB + 8 * MiB)


def test_small_growth_of_guest_with_usable_at_headroom_held():
    guest = view(actual=3 * GiB, usable=HEADROOM, target=3 * GiB)
    d = guard(guest, 3 * GiB + 8 * MiB, LIMITS)
    assert (d.action, d.target_kib) == (Action.HOLD, 3 * GiB)


def test_small_return_to_ceiling_applied():
    guest = view(actual=CEILING - 8 * MiB, usable=2 * GiB, target=CEILING - 8 * MiB)
    d = guard(guest, CEILING, LIMITS)
    assert (d.action, d.target_kib) == (Action.GROW, CEILING)


# -- properties -------------------------------------------------------------------

@st.composite
def guests(draw, shrinkable: bool = False) -> GuestView:
    """Any guest; shrinkable=True: fresh, valid stats with a demand figure and
    no OOM deflation, the only guests the shrink rules 4 to 6 apply to, with
    the balloon often a little off its target (still moving or settled)."""
    ceiling = draw(st.integers(64 * MiB, 64 * GiB))
    floor = draw(st.integers(0, ceiling))
    # actual anywhere, including above the ceiling and below the floor
    actual = draw(st.integers(0, 2 * ceiling))
    near_actual = st.integers(max(0, actual - 4 * MiB), actual + 4 * MiB)
    target = draw(near_actual if shrinkable and draw(st.booleans()) else
                  st.none() | st.integers(0, 2 * ceiling) | st.just(actual)
                  | st.just(floor) | st.just(ceiling) | near_actual)
    usable = draw(st.integers(0, actual) | st.integers(actual // 2, actual)
                  | (st.nothing() if shrinkable else st.none()))
    # A balloon that moved after the stats were taken has usable but no demand.
    moving = False if shrinkable else draw(st.booleans())
    demand = None if usable is None or moving else actual - usable
    return GuestView(uuid='u', name='g', ceiling_kib=ceiling, floor_kib=floor,
                     shares=draw(st.integers(1, 1_000_000)), actual_kib=actual,
                     target_kib=target, usable_kib=usable, demand_kib=demand,
                     swap_in_kib=draw(st.none() | st.integers(0, 10**9)),
                     major_faults=None, stats_fresh=shrinkable or draw(st.booleans()),
                     balloon_moving=moving,
                     deflated_on_oom=not shrinkable and draw(st.booleans()))


limits_st = st.builds(
    SafetyLimits,
    headroom_kib=st.just(0) | st.integers(0, 256 * MiB) | st.integers(0, 2 * GiB),
    headroom_percent=st.just(0.0) | st.floats(0.0, 20.0) | st.floats(0.0, 100.0),
    max_shrink_kib=st.integers(1 * MiB, 256 * MiB) | st.integers(1 * MiB, 8 * GiB),
    max_shrink_percent=st.just(0.0) | st.floats(0.0, 10.0) | st.floats(0.0, 100.0),
    dead_band_kib=st.just(0) | st.integers(0, 32 * MiB) | st.integers(0, 512 * MiB))


@st.composite
def cases(draw, shrinkable: bool = False):
    guest = draw(guests(shrinkable))
    near = [guest.actual_kib, guest.floor_kib, guest.ceiling_kib,
            guest.target_kib if guest.target_kib is not None else guest.actual_kib]
    proposal = draw(st.none()
                    | st.integers(-(2**63), 2**63)
                    | st.integers(-2 * guest.ceiling_kib, 3 * guest.ceiling_kib)
                    | st.sampled_from(near).flatmap(
                        lambda k: st.integers(k - 64 * MiB, k + 64 * MiB)))
    return guest, proposal, draw(limits_st)


PROPERTY = settings(max_examples=300, deadline=None)


def _current(guest: GuestView) -> int:
    return guest.target_kib if guest.target_kib is not None else guest.actual_kib


def _blocked(guest: GuestView) -> bool:
    return not guest.stats_fresh or guest.usable_kib is None or guest.deflated_on_oom


def check_bounds_and_action_direction(guest: GuestView, limits: SafetyLimits, d: Decision) -> None:
    """GROW/SHRINK targets lie in [floor, ceiling]; GROW raises the target in
    force (target_kib, else actual), SHRINK lowers it, HOLD keeps it exactly."""
    current = _current(guest)
    assert d.uuid == guest.uuid and d.name == guest.name
    if d.action is Action.HOLD:
        assert d.target_kib == current
    else:
        assert guest.floor_kib <= d.target_kib <= guest.ceiling_kib
        assert (d.action is Action.GROW) == (d.target_kib > current)
        assert (d.action is Action.SHRINK) == (d.target_kib < current)


def check_shrink_per_cycle(guest: GuestView, limits: SafetyLimits, d: Decision) -> None:
    """Invariant: every SHRINK target >= min(ceiling, actual - max_shrink).

    The guard raises a shrink target to actual - max_shrink and afterwards
    only raises it (floor, balloon still moving) or caps it at the ceiling;
    so a SHRINK ends more than max_shrink below actual only when actual is
    above ceiling + max_shrink, and then the target is the ceiling itself.
    (A GROW only raises the target in force, see the direction check, so
    it never takes more memory than that target already does.)
    """
    if d.action is Action.SHRINK:
        assert d.target_kib >= min(guest.ceiling_kib,
                                   guest.actual_kib - limits.max_shrink_for(guest))
        assert limits.max_shrink_for(guest) == max(
            limits.max_shrink_kib, int(guest.actual_kib * limits.max_shrink_percent / 100))


def check_blocked_guests_never_lose_memory(guest: GuestView, limits: SafetyLimits,
                                           d: Decision) -> None:
    """With stale stats, missing/invalid stats (usable None) or an OOM
    deflation, every GROW/SHRINK target is >= min(actual, ceiling)."""
    if _blocked(guest) and d.action is not Action.HOLD:
        assert d.target_kib >= min(guest.actual_kib, guest.ceiling_kib)


def check_no_demand_no_shrink(guest: GuestView, limits: SafetyLimits, d: Decision) -> None:
    """Without a demand figure (invalid stats, or a balloon that moved after
    the stats were taken) no SHRINK goes below min(actual, ceiling); a target
    below that is only ever a GROW of the target in force."""
    if guest.demand_kib is not None:
        return
    if d.action is Action.SHRINK:
        assert d.target_kib >= min(guest.actual_kib, guest.ceiling_kib)
    if d.action is not Action.HOLD and d.target_kib < min(guest.actual_kib,
                                                          guest.ceiling_kib):
        assert d.action is Action.GROW and d.target_kib > _current(guest)


def check_real_shrink_keeps_demand_headroom_and_waits_for_balloon(
        guest: GuestView, limits: SafetyLimits, d: Decision) -> None:
    """When a GROW/SHRINK target is below min(actual, ceiling) and the guest
    has a demand figure: stats were fresh and valid, there was no OOM
    deflation, target >= min(ceiling, demand + headroom), and if the balloon
    was still coming down (actual more than SETTLE_TOLERANCE_KIB above the
    target in force) target >= min(ceiling, target in force)."""
    if guest.demand_kib is None or d.action is Action.HOLD:
        return
    if d.target_kib >= min(guest.actual_kib, guest.ceiling_kib):
        return
    assert not _blocked(guest)
    assert d.target_kib >= min(guest.ceiling_kib,
                               guest.demand_kib + limits.headroom_for(guest))
    current = _current(guest)
    if guest.actual_kib > current + SETTLE_TOLERANCE_KIB:
        assert d.target_kib >= min(guest.ceiling_kib, current)


def check_dead_band(guest: GuestView, limits: SafetyLimits, d: Decision) -> None:
    """A change smaller than the dead band is applied only when the target in
    force is out of bounds, the new target is the ceiling, or the guest is
    short of memory (OOM deflation or usable < headroom) and grows."""
    current = _current(guest)
    if d.action is Action.HOLD or abs(d.target_kib - current) >= limits.dead_band_kib:
        return
    short = guest.deflated_on_oom or (guest.usable_kib is not None
                                      and guest.usable_kib < limits.headroom_for(guest))
    assert (not guest.floor_kib <= current <= guest.ceiling_kib
            or d.target_kib == guest.ceiling_kib
            or (d.action is Action.GROW and short))


CHECKS = [check_bounds_and_action_direction, check_shrink_per_cycle,
          check_blocked_guests_never_lose_memory, check_no_demand_no_shrink,
          check_real_shrink_keeps_demand_headroom_and_waits_for_balloon, check_dead_band]


@PROPERTY
@given(cases())
def test_properties(case):
    """Every invariant above (see each check_* docstring) on any guest."""
    guest, proposal, limits = case
    d = guard(guest, proposal, limits)
    for check in CHECKS:
        check(guest, limits, d)


@PROPERTY
@given(cases(shrinkable=True))
def test_properties_of_shrinkable_guests(case):
    """The same invariants on guests the shrink rules apply to."""
    guest, proposal, limits = case
    d = guard(guest, proposal, limits)
    for check in CHECKS:
        check(guest, limits, d)
