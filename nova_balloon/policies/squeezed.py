"""Baseline ``squeezed``: XenServer's proportional squeeze.

From xapi-project/squeezed (lib/squeeze.ml, doc/design/README.md): every
domain has a dynamic range [dynamic-min, dynamic-max], and squeezed sets each
domain's target at the same fraction g of its range,
``target = min + g * (max - min)``, with g the largest value in [0, 1] whose
targets fit the memory the host has for domains, less a small reserve. Here
the range is [floor, ceiling] of the flavor policy, and the memory for
domains is what the guests hold plus what the host has free (squeezed counts
Xen's free memory plus the domains' allocations the same way). It looks at no
guest statistics at all: every guest is squeezed alike, busy or idle.
"""

from __future__ import annotations

from collections.abc import Sequence

from nova_balloon.model import KIB_PER_MIB, GuestView, HostSnapshot
from nova_balloon.policies import Policy

# squeezed keeps this much host memory free (its target host free memory).
RESERVE_KIB = 9 * KIB_PER_MIB


def squeeze_fraction(room_kib: int, guests: Sequence[GuestView]) -> float:
    """The largest g in [0, 1] whose targets fit in room_kib."""
    floors = sum(g.floor_kib for g in guests)
    ranges = sum(g.ceiling_kib - g.floor_kib for g in guests)
    if ranges <= 0:
        return 1.0
    return min(1.0, max(0.0, (room_kib - floors) / ranges))


class SqueezedPolicy(Policy):
    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        room = host.available_kib + sum(g.actual_kib for g in guests) - RESERVE_KIB
        fraction = squeeze_fraction(room, guests)
        return {g.uuid: g.floor_kib + int(fraction * (g.ceiling_kib - g.floor_kib))
                for g in guests}
