"""The safety rules: a pure function from (guest, proposal) to a decision.

The agent believes a shrink is safe only if all of these hold:

1. the target is within [floor, ceiling] of the guest's flavor policy;
2. the guest's statistics are fresh and valid (the guest wrote them after the
   last collection and they are self-consistent);
3. the guest has not just deflated its balloon on OOM (actual rose above the
   target);
4. the balloon has settled: the statistics were taken after it last moved,
   and it reached the previous target;
5. the guest keeps what it uses plus the headroom;
6. the shrink is at most ``max_shrink`` below what the guest has now: the
   larger of a fixed step and a share of the guest's size.

A target below what the guest has or below the target it is growing to is a
shrink. Growth needs only rule 1 and is applied at once. A guest whose balloon does
not respond (see responsiveness.py) is given its ceiling back and left there.
Changes inside the dead band are dropped, unless they grow a guest that is
short of memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nova_balloon.model import KIB_PER_MIB, Action, Decision, GuestView, Note
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB


@dataclasses.dataclass(frozen=True, slots=True)
class SafetyLimits:
    headroom_kib: int
    headroom_percent: float
    max_shrink_kib: int
    max_shrink_percent: float
    dead_band_kib: int

    def headroom_for(self, guest: GuestView) -> int:
        return max(self.headroom_kib, int(guest.ceiling_kib * self.headroom_percent / 100))

    def max_shrink_for(self, guest: GuestView) -> int:
        return max(self.max_shrink_kib, int(guest.actual_kib * self.max_shrink_percent / 100))

    @classmethod
    def from_conf(cls, group: Any) -> SafetyLimits:
        return cls(headroom_kib=group.headroom_mb * KIB_PER_MIB,
                   headroom_percent=group.headroom_percent,
                   max_shrink_kib=group.max_shrink_mb_per_cycle * KIB_PER_MIB,
                   max_shrink_percent=group.max_shrink_percent_per_cycle,
                   dead_band_kib=group.dead_band_mb * KIB_PER_MIB)


def is_short(guest: GuestView, limits: SafetyLimits) -> bool:
    """The rules' "short": less free memory than its headroom, or a balloon the
    guest deflated on OOM. Its growth is never held back by the dead band."""
    return guest.deflated_on_oom or (
        guest.usable_kib is not None and guest.usable_kib < limits.headroom_for(guest))


def _shrink_blocker(guest: GuestView) -> Note | None:
    if not guest.stats_fresh:
        return ('no shrink: statistics are stale',)
    if guest.usable_kib is None:
        return ('no shrink: statistics are missing or invalid',)
    if guest.deflated_on_oom:
        return ('no shrink: guest deflated its balloon on OOM (actual {} MiB > target {} MiB)',
                guest.actual_kib, guest.target_kib)
    return None


def guard(guest: GuestView, proposed_kib: int | None, limits: SafetyLimits) -> Decision:
    """Turn a policy's proposal into the decision the agent may apply."""
    action, target, notes = _rule(guest, proposed_kib, limits)
    return Decision(guest.uuid, guest.name, action, target, notes)


def guard_target(guest: GuestView, proposed_kib: int | None, limits: SafetyLimits) -> int:
    """``guard(guest, proposed_kib, limits).target_kib``, without building the Decision.

    For policies that foresee what the rules will make of their proposals.
    """
    return _rule(guest, proposed_kib, limits)[1]


def _rule(guest: GuestView, proposed_kib: int | None,
          limits: SafetyLimits) -> tuple[Action, int, tuple[Note, ...]]:
    """The rules: the action, the target to apply or keep, and the notes of why."""
    actual, floor, ceiling = guest.actual_kib, guest.floor_kib, guest.ceiling_kib
    current = guest.current_kib
    wanted = current if proposed_kib is None else proposed_kib
    target = min(ceiling, max(floor, wanted))
    notes: tuple[Note, ...] = (('proposed {} MiB, bounds [{}, {}] MiB', wanted, floor, ceiling),)

    if guest.sampled_at is None and guest.usable_kib is None and guest.unresponsive is None:
        notes += (('waiting for the guest\'s first balloon statistics',),)
    if guest.unresponsive is not None:
        target = ceiling
        notes += (('unresponsive: {}; full memory given back', guest.unresponsive),)
    elif target < actual or target < current:
        # Below what the guest has or is growing to: a shrink, either way.
        blocker = _shrink_blocker(guest)
        if blocker is not None:
            # Neither below what the guest has nor below a growth under way.
            target = min(ceiling, max(actual, current))
            notes += (blocker,)
        elif guest.demand_kib is None:
            # The current target was checked when it was set: let the balloon
            # get there, but go no lower until the statistics catch up.
            target = max(target, current)
            notes += (('balloon moving, statistics not yet taken at its new size',),)
        else:
            headroom = limits.headroom_for(guest)
            keep = guest.demand_kib + headroom
            if target < keep:
                target = keep
                notes += (('keeps use {} MiB + headroom {} MiB', guest.demand_kib, headroom),)
            max_shrink = limits.max_shrink_for(guest)
            if target < actual - max_shrink:
                target = actual - max_shrink
                notes += (('shrink limited to {} MiB per cycle', max_shrink),)
            if actual > current + SETTLE_TOLERANCE_KIB and target < current:
                target = current
                notes += (('balloon still moving to {} MiB', current),)
            target = min(ceiling, max(floor, target))

    delta = target - current
    if delta == 0:
        return Action.HOLD, current, notes
    if _inside_dead_band(guest, current, target, limits):
        return Action.HOLD, current, notes + (('change {} MiB inside the dead band', delta),)
    return (Action.GROW if delta > 0 else Action.SHRINK), target, notes


def _inside_dead_band(guest: GuestView, current: int, target: int,
                      limits: SafetyLimits) -> bool:
    """Small changes wait, except growth of a guest short of memory, a return
    to the full ceiling and a current target outside the bounds."""
    if abs(target - current) >= limits.dead_band_kib:
        return False
    if not guest.floor_kib <= current <= guest.ceiling_kib or target == guest.ceiling_kib:
        return False
    return not (target > current and is_short(guest, limits))
