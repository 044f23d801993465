"""Baseline ``proxmox``: Proxmox VE's auto-ballooning (``compute_alg1``).

From Proxmox's qemu-server (PVE/AutoBalloon.pm, ``compute_alg1``) and
pve-manager (PVE/Service/pvestatd.pm), which runs it every 10 s. The goal is
the change that brings host memory in use to 80 % of MemTotal; changes of
10 MiB or less are skipped. The memory above the guests' floors, plus the
goal, is shared out in proportion to shares: each guest's desired size is
floor + (sum(balloon - floor) + goal) * shares / sum(shares), clamped to its
bounds, moving at most 100 MiB per round; what a clamped guest cannot take
is shared again among the others. Growth goes first to guests under pressure
(free memory at most 25 % of their floor), shrinking first to the others;
only if that makes no progress are all guests considered. Proxmox reads the
guest's free memory; the view's MemAvailable stands for it here.
"""

from __future__ import annotations

from collections.abc import Sequence

from nova_balloon.model import KIB_PER_MIB, GuestView, HostSnapshot
from nova_balloon.policies import Policy

HOST_GOAL = 0.80
MIN_GOAL_KIB = 10 * KIB_PER_MIB
MAX_CHANGE_KIB = 100 * KIB_PER_MIB
PRESSURE_FREE_OF_FLOOR = 0.25


def _change(proposals: dict[str, int], guests: Sequence[GuestView], amount_kib: int) -> int:
    """Share ``amount_kib`` out over ``guests`` by shares; return what is left."""
    rest = amount_kib
    done: set[str] = set()
    repeat = progress = True
    while rest and repeat and progress:
        repeat = progress = False
        active = [g for g in guests if g.uuid not in done]
        allocated = sum(proposals.get(g.uuid, g.actual_kib) - g.floor_kib for g in active)
        shares_total = sum(g.shares for g in active)
        to_allocate = allocated + rest
        changes = 0
        for guest in active:
            desired = guest.floor_kib + int(to_allocate / shares_total * guest.shares)
            if desired > guest.ceiling_kib:
                desired, repeat = guest.ceiling_kib, True
            elif desired < guest.floor_kib:
                desired, repeat = guest.floor_kib, True
            if amount_kib > 0 and desired > guest.actual_kib:
                balloon = min(guest.actual_kib + MAX_CHANGE_KIB, desired)
            elif desired < guest.actual_kib:
                balloon = max(guest.actual_kib - MAX_CHANGE_KIB, desired)
            else:
                done.add(guest.uuid)
                continue
            change = balloon - proposals.get(guest.uuid, guest.actual_kib)
            proposals[guest.uuid] = balloon
            if change:
                changes += change
                progress = repeat = True
        rest -= changes
    return rest


class ProxmoxPolicy(Policy):
    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        used = host.total_kib - host.available_kib
        goal = int(host.total_kib * HOST_GOAL - used)
        # Like Proxmox, leave out guests whose balloon reports nothing.
        reporting = [g for g in guests if g.usable_kib is not None]
        pressed = [g for g in reporting if not (
            g.usable_kib and g.usable_kib > g.floor_kib * PRESSURE_FREE_OF_FLOOR
            and g.actual_kib >= g.floor_kib)]
        pressed_uuids = {g.uuid for g in pressed}
        relaxed = [g for g in reporting if g.uuid not in pressed_uuids]
        proposals: dict[str, int] = {}
        if goal > MIN_GOAL_KIB:
            rest = _change(proposals, pressed, goal)
            if rest >= goal:
                _change(proposals, reporting, rest)
        elif goal < -MIN_GOAL_KIB:
            rest = _change(proposals, relaxed, goal)
            if rest <= goal:
                _change(proposals, reporting, rest)
        return proposals
