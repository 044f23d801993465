"""The Placement ratio's guard rails, on numbers worked out by hand and as properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova_balloon.placement.guard import Limits, MemoryInventory, decide, ratio_needed

LIMITS = Limits(min_ratio=1.0, max_ratio=2.0, max_step=0.1, hysteresis=0.05, interval_s=3600)
NOW = 1_000_000.0


def inventory(ratio: float, used_mb: int = 0, total_mb: int = 16384,
              reserved_mb: int = 512) -> MemoryInventory:
    return MemoryInventory(total_mb=total_mb, reserved_mb=reserved_mb,
                           allocation_ratio=ratio, used_mb=used_mb)


def test_a_step_toward_the_advice_at_most_max_step():
    up = decide(inventory(1.0), 1.37, LIMITS, None, NOW)
    assert up.ratio == 1.1
    assert '1.00 -> 1.10' in up.reason and 'one step of at most 0.1' in up.reason
    # The last step lands on the advice itself.
    assert decide(inventory(1.3), 1.37, LIMITS, None, NOW).ratio == 1.37
    assert decide(inventory(1.5), 1.2, LIMITS, None, NOW).ratio == 1.4


def test_the_advice_is_held_within_min_and_max_ratio():
    above = decide(inventory(1.95), 3.0, LIMITS, None, NOW)
    assert above.ratio == 2.0 and 'held to 2.00 by [1.00, 2.00]' in above.reason
    below = decide(inventory(1.05), 0.5, LIMITS, None, NOW)
    assert below.ratio == 1.0
    # Already at the ceiling: the advice above it changes nothing.
    assert decide(inventory(2.0), 3.0, LIMITS, None, NOW).ratio is None
    # A ratio an operator set outside the bounds is walked back into them.
    assert decide(inventory(3.0), 3.0, LIMITS, None, NOW).ratio == 2.9


def test_hysteresis_leaves_a_ratio_near_the_advice():
    near = decide(inventory(1.5), 1.54, LIMITS, None, NOW)
    assert near.ratio is None and 'within hysteresis 0.05' in near.reason
    assert decide(inventory(1.5), 1.46, LIMITS, None, NOW).ratio is None
    assert decide(inventory(1.5), 1.56, LIMITS, None, NOW).ratio == 1.56


def test_at_most_one_change_per_interval():
    soon = decide(inventory(1.0), 1.5, LIMITS, NOW - 600, NOW)
    assert soon.ratio is None
    assert 'changed 600 s ago' in soon.reason and 'in 3000 s' in soon.reason
    assert decide(inventory(1.0), 1.5, LIMITS, NOW - 3600, NOW).ratio == 1.1


def test_never_below_what_the_allocations_need():
    # 15872 MiB usable; 17000 MiB allocated need 17000 / 15872 = 1.0711 -> 1.08.
    full = inventory(1.2, used_mb=17000)
    assert ratio_needed(full) == 1.08
    partial = decide(full, 1.0, LIMITS, None, NOW)
    assert partial.ratio == 1.1  # the step (1.2 - 0.1) is still above 1.08
    closer = decide(inventory(1.12, used_mb=17000), 1.0, LIMITS, None, NOW)
    assert closer.ratio == 1.08 and 'raised to 1.08 that the allocations need' in closer.reason
    stuck = decide(inventory(1.08, used_mb=17000), 1.0, LIMITS, None, NOW)
    assert stuck.ratio is None and 'needs at least 1.08' in stuck.reason


def test_over_capacity_already_the_advice_may_still_raise_the_ratio():
    # Allocations need 1.08 but the ratio is 1.0 (set by hand): going up is fine,
    # and going down is refused rather than pushed up to 1.08.
    assert decide(inventory(1.0, used_mb=17000), 1.5, LIMITS, None, NOW).ratio == 1.1
    assert decide(inventory(1.1, used_mb=17000, reserved_mb=2000), 1.0,
                  LIMITS, None, NOW).ratio is None
    # Up by a step, even if the allocations would need a bigger one.
    small_steps = Limits(min_ratio=1.0, max_ratio=2.0, max_step=0.05, hysteresis=0.05,
                         interval_s=3600)
    assert decide(inventory(1.0, used_mb=17000), 1.5, small_steps, None, NOW).ratio == 1.05


def test_no_advice_or_no_usable_memory_changes_nothing():
    assert decide(inventory(1.0), None, LIMITS, None, NOW).ratio is None
    empty = decide(inventory(1.0, total_mb=512, reserved_mb=512), 1.5, LIMITS, None, NOW)
    assert empty.ratio is None and 'nothing to share' in empty.reason


def test_limits_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match='min_ratio 2 must be above 0 and at most max_ratio 1'):
        Limits(min_ratio=2.0, max_ratio=1.0, max_step=0.1, hysteresis=0.0, interval_s=0)
    with pytest.raises(ValueError, match='max_step'):
        Limits(min_ratio=1.0, max_ratio=2.0, max_step=0.0, hysteresis=0.0, interval_s=0)


ratios = st.integers(min_value=10, max_value=400).map(lambda n: n / 100)


@given(current=ratios, advised=ratios, low=ratios, span=st.integers(0, 300),
       step=st.integers(1, 50), hysteresis=st.integers(0, 30),
       used_percent=st.integers(0, 300))
def test_guard_rails_hold_for_any_inventory_and_advice(current, advised, low, span, step,
                                                       hysteresis, used_percent):
    limits = Limits(min_ratio=low, max_ratio=low + span / 100, max_step=step / 100,
                    hysteresis=hysteresis / 100, interval_s=3600)
    usable = 16384 - 512
    used = usable * used_percent // 100
    inv = inventory(current, used_mb=used)
    decision = decide(inv, advised, limits, None, NOW)
    if decision.ratio is None:
        return
    new = decision.ratio
    target = min(max(advised, limits.min_ratio), limits.max_ratio)
    assert abs(target - current) >= limits.hysteresis
    assert abs(new - current) <= limits.max_step + 1e-9
    # It moves toward the target, never past it.
    assert min(current, target) - 1e-9 <= new <= max(current, target) + 1e-9
    assert new != current
    if new < current:
        assert usable * new >= used
