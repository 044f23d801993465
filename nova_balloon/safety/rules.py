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

Growth needs only rule 1 and is applied at once. A guest whose balloon does
not respond (see responsiveness.py) is given its ceiling back and left there.
Changes inside the dead band are dropped, unless they grow a guest that is
short of memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nova_balloon.model import KIB_PER_MIB, Action, Decision, GuestView, mib
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


def _shrink_blocker(guest: GuestView) -> str | None:
    if not guest.stats_fresh:
        return 'statistics are stale'
    if guest.usable_kib is None:
        return 'statistics are missing or invalid'
    if guest.deflated_on_oom:
        return f'guest deflated its balloon on OOM (actual {mib(guest.actual_kib)} MiB ' \
               f'> target {mib(guest.target_kib)} MiB)'
    return None


def guard(guest: GuestView, proposed_kib: int | None, limits: SafetyLimits) -> Decision:
    """Turn a policy's proposal into the decision the agent may apply."""
    current = guest.target_kib if guest.target_kib is not None else guest.actual_kib
    wanted = current if proposed_kib is None else proposed_kib
    target = min(guest.ceiling_kib, max(guest.floor_kib, wanted))
    why = [f'proposed {mib(wanted)} MiB, bounds [{mib(guest.floor_kib)}, '
           f'{mib(guest.ceiling_kib)}] MiB']

    if guest.unresponsive is not None:
        target = guest.ceiling_kib
        why.append(f'unresponsive: {guest.unresponsive}; full memory given back')
    elif target < guest.actual_kib:
        blocker = _shrink_blocker(guest)
        if blocker is not None:
            # Neither below what the guest has nor below a growth under way.
            target = min(guest.ceiling_kib, max(guest.actual_kib, current))
            why.append(f'no shrink: {blocker}')
        elif guest.demand_kib is None:
            # The current target was checked when it was set: let the balloon
            # get there, but go no lower until the statistics catch up.
            target = max(target, current)
            why.append('balloon moving, statistics not yet taken at its new size')
        else:
            keep = guest.demand_kib + limits.headroom_for(guest)
            if target < keep:
                target = keep
                why.append(f'keeps use {mib(guest.demand_kib)} MiB + headroom '
                           f'{mib(limits.headroom_for(guest))} MiB')
            max_shrink = limits.max_shrink_for(guest)
            if target < guest.actual_kib - max_shrink:
                target = guest.actual_kib - max_shrink
                why.append(f'shrink limited to {mib(max_shrink)} MiB per cycle')
            if guest.actual_kib > current + SETTLE_TOLERANCE_KIB and target < current:
                target = current
                why.append(f'balloon still moving to {mib(current)} MiB')
            target = min(guest.ceiling_kib, max(guest.floor_kib, target))

    delta = target - current
    if delta == 0:
        return Decision(guest.uuid, guest.name, Action.HOLD, current, '; '.join(why))
    if _inside_dead_band(guest, current, target, limits):
        why.append(f'change {mib(delta)} MiB inside the dead band')
        return Decision(guest.uuid, guest.name, Action.HOLD, current, '; '.join(why))
    action = Action.GROW if delta > 0 else Action.SHRINK
    return Decision(guest.uuid, guest.name, action, target, '; '.join(why))


def _inside_dead_band(guest: GuestView, current: int, target: int,
                      limits: SafetyLimits) -> bool:
    """Small changes wait, except growth of a guest short of memory, a return
    to the full ceiling and a current target outside the bounds."""
    if abs(target - current) >= limits.dead_band_kib:
        return False
    if not guest.floor_kib <= current <= guest.ceiling_kib or target == guest.ceiling_kib:
        return False
    short = guest.deflated_on_oom or (
        guest.usable_kib is not None and guest.usable_kib < limits.headroom_for(guest))
    return not (target > current and short)
