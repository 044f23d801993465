"""The guard rails between the advised ratio and the one set in Placement.

A pure function: Placement's MEMORY_MB inventory and usage, the advice, the
limits from config, the time of the last change and the time now in; the
ratio to set (or None) and the reason, with its numbers, out. In order:

1. no advice, no change;
2. at most one change per interval;
3. the advice is held within [min_ratio, max_ratio];
4. hysteresis: a target within ``hysteresis`` of the current ratio is left;
5. one change moves the ratio by at most ``max_step``;
6. never below what the allocations already need: used / (total - reserved),
   rounded up to hundredths. Placement itself accepts a lower ratio (it
   only logs that the provider is over capacity), so this rail is ours.

Ratios are set in hundredths, as the advice is given.
"""

from __future__ import annotations

import dataclasses
import math

# Ratios are set and compared in hundredths.
RATIO_SCALE = 100


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryInventory:
    """A resource provider's MEMORY_MB inventory and usage, as Placement reports them."""

    total_mb: int
    reserved_mb: int
    allocation_ratio: float
    used_mb: int

    @property
    def usable_mb(self) -> int:
        return self.total_mb - self.reserved_mb

    @property
    def capacity_mb(self) -> int:
        """What Placement admits: (total - reserved) x ratio, as it computes it."""
        return int(self.usable_mb * self.allocation_ratio)


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    min_ratio: float
    max_ratio: float
    max_step: float
    hysteresis: float
    interval_s: float

    def __post_init__(self) -> None:
        if not 0 < self.min_ratio <= self.max_ratio:
            raise ValueError(f'min_ratio {self.min_ratio:g} must be above 0 and at most '
                             f'max_ratio {self.max_ratio:g}')
        if self.max_step <= 0 or self.hysteresis < 0 or self.interval_s < 0:
            raise ValueError(f'max_step ({self.max_step:g}) must be above 0, hysteresis '
                             f'({self.hysteresis:g}) and interval ({self.interval_s:g} s) '
                             f'at least 0')


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    # The ratio to set; None leaves Placement as it is.
    ratio: float | None
    reason: str


def _hundredths_up(value: float) -> float:
    return math.ceil(round(value * RATIO_SCALE, 6)) / RATIO_SCALE


def _hundredths(value: float) -> float:
    return round(value * RATIO_SCALE) / RATIO_SCALE


def ratio_needed(inventory: MemoryInventory) -> float:
    """The least ratio, in hundredths, at which the allocations still fit."""
    return _hundredths_up(inventory.used_mb / inventory.usable_mb)


def decide(inventory: MemoryInventory, advised: float | None, limits: Limits,
           last_change_s: float | None, now_s: float) -> Decision:
    """The ratio to set now, or None, and why (see the module's docstring)."""
    current = inventory.allocation_ratio
    if advised is None:
        return Decision(None, f'no advice; the ratio stays {current:.2f}')
    if inventory.usable_mb <= 0:
        return Decision(None, f'MEMORY_MB has nothing to share: total {inventory.total_mb} '
                              f'MiB, reserved {inventory.reserved_mb} MiB')
    if last_change_s is not None and now_s - last_change_s < limits.interval_s:
        wait = limits.interval_s - (now_s - last_change_s)
        return Decision(None, f'changed {now_s - last_change_s:.0f} s ago; the next change '
                              f'may come in {wait:.0f} s (interval {limits.interval_s:g} s)')
    target = min(max(advised, limits.min_ratio), limits.max_ratio)
    bounded = '' if target == advised else \
        f' held to {target:.2f} by [{limits.min_ratio:.2f}, {limits.max_ratio:.2f}]'
    if abs(target - current) < limits.hysteresis:
        return Decision(None, f'advice {advised:.2f}{bounded} is within hysteresis '
                              f'{limits.hysteresis:g} of the current {current:.2f}')
    step = max(-limits.max_step, min(limits.max_step, target - current))
    new = _hundredths(current + step)
    stepped = '' if new == _hundredths(target) else f', one step of at most {limits.max_step:g}'
    # Only a lower ratio can leave the allocations short; a higher one always helps.
    needed = ratio_needed(inventory)
    floored = ''
    if new < current and new < needed:
        if needed >= current:
            return Decision(None, f'advice {advised:.2f}{bounded} is below what the '
                                  f'allocations need: {inventory.used_mb} MiB used of '
                                  f'{inventory.usable_mb} MiB usable needs at least '
                                  f'{needed:.2f}; the ratio stays {current:.2f}')
        new = needed
        floored = (f', raised to {needed:.2f} that the allocations need ({inventory.used_mb} '
                   f'MiB used of {inventory.usable_mb} MiB usable)')
    if new == _hundredths(current):
        return Decision(None, f'advice {advised:.2f}{bounded} rounds to the current '
                              f'{current:.2f}')
    return Decision(new, f'{current:.2f} -> {new:.2f}: advice {advised:.2f}{bounded}'
                         f'{stepped}{floored}; capacity {inventory.capacity_mb} -> '
                         f'{int(inventory.usable_mb * new)} MiB, {inventory.used_mb} MiB '
                         f'allocated')
