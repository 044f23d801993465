"""What one control cycle tells the capacity history, as a pure function of its plan.

A guest's need is what it must keep when the host is full: its demand plus
the safety headroom, at least its floor, at most its flavor RAM. Guests the
agent does not manage, and managed ones whose demand it does not know, need
their full RAM. Guests outside Nova are not placed by Placement: their need
comes off the host's usable memory instead, as ``nova-balloon recommend``
counts them.

``MinuteRecorder`` folds a minute's cycles into one ``Minute``: the cycle in
which the guests needed the largest share of their flavor RAM, since that
is the one that decides whether a fuller host would have been short.
"""

from __future__ import annotations

from nova_balloon.capacity.history import SECONDS_PER_MINUTE, Minute, fold
from nova_balloon.controller.planner import Plan
from nova_balloon.model import KIB_PER_MIB
from nova_balloon.safety import SafetyLimits

# The flavor of guests without a flavor name in their Nova metadata.
UNKNOWN_FLAVOR = '(unknown)'


def guest_need_kib(ram_kib: int, floor_kib: int, demand_kib: int | None,
                   headroom_kib: int) -> int:
    """max(floor, demand + headroom), at most RAM; RAM when demand is unknown."""
    if demand_kib is None:
        return ram_kib
    return min(ram_kib, max(floor_kib, demand_kib + headroom_kib))


def minute_of_plan(plan: Plan, wall_s: float, reserved_mb: int,
                   limits: SafetyLimits) -> Minute | None:
    """The plan's guests as one minute of history; None without the host's memory."""
    if plan.host is None:
        return None
    outside_kib = 0
    guests = []
    for uuid, item in plan.classified.items():
        ram = item.ceiling_kib
        view = plan.views.get(uuid)
        if view is None:
            need = ram
        else:
            need = guest_need_kib(ram, view.floor_kib, view.demand_bound_kib,
                                  limits.headroom_for(view))
        nova = item.sample.facts.nova
        if nova is None:
            outside_kib += need
            continue
        guests.append((nova.flavor_name or UNKNOWN_FLAVOR, need // KIB_PER_MIB,
                       ram // KIB_PER_MIB))
    usable_mb = (plan.host.total_kib - outside_kib) // KIB_PER_MIB - reserved_mb
    return Minute(int(wall_s // SECONDS_PER_MINUTE), usable_mb, fold(guests))


def _share(minute: Minute) -> float:
    ram = minute.ram_mb
    return minute.need_mb / ram if ram else 0.0


class MinuteRecorder:
    """Keeps the current minute's worst cycle; hands a minute over once it ends."""

    def __init__(self) -> None:
        self._current: Minute | None = None

    def add(self, minute: Minute) -> Minute | None:
        """Take one cycle's figures; returns the previous minute when this one is new."""
        current = self._current
        if current is None or minute.minute > current.minute:
            self._current = minute
            return current
        if minute.minute == current.minute and _share(minute) > _share(current):
            self._current = minute
        return None
