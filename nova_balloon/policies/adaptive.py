"""The default policy: a memory buffer above demand, shares under contention.

Each guest is offered what it uses plus a buffer (``[balloon] buffer_percent``
of its use, as Hyper-V's memory buffer), so idle guests hand back what they do
not use. A guest whose use is rising is also given twice its rise since the
previous snapshot: statistics lag, and a guest filling its memory must not
outrun them. A guest that shows pressure (its balloon deflated on OOM, it swaps in,
or its free memory is below half its buffer) is grown past its current size at
once. When the host's free memory falls below ``[balloon] host_reserve_mb``,
the buffers are cut, low ``balloon:shares`` first, until the shortfall is
covered or every guest is down to use plus headroom (the safety rules keep
that much anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oslo_config import cfg

from nova_balloon.model import KIB_PER_MIB, GuestView, HostSnapshot
from nova_balloon.policies import Policy


def share_out(budget: int, wants: Mapping[str, int], shares: Mapping[str, int]) -> dict[str, int]:
    """Water-fill ``budget`` over ``wants`` in proportion to ``shares``.

    No one gets more than it wants; what a satisfied guest leaves is shared
    again among the others.
    """
    given = dict.fromkeys(wants, 0)
    hungry = {u for u, w in wants.items() if w > 0}
    left = max(0, budget)
    while hungry and left > 0:
        total = sum(shares[u] for u in hungry)
        spent = 0
        for u in sorted(hungry):
            give = min(wants[u] - given[u], left * shares[u] // total)
            given[u] += give
            spent += give
        hungry = {u for u in hungry if given[u] < wants[u]}
        if spent == 0:
            break
        left -= spent
    return given


class AdaptivePolicy(Policy):
    def __init__(self, conf: cfg.ConfigOpts):
        super().__init__(conf)
        group = conf.balloon
        self.buffer_fraction = group.buffer_percent / 100
        self.min_buffer_kib = max(group.headroom_mb, 1) * KIB_PER_MIB
        self.host_reserve_kib = group.host_reserve_mb * KIB_PER_MIB
        self._swap_in: dict[str, int] = {}
        # uuid -> (time, demand) of the previous snapshot, to see demand rise.
        self._demand: dict[str, tuple[float, int]] = {}

    def _rise_ahead(self, uuid: str, demand_kib: int, now: float) -> int:
        """Memory the guest will want before the next look, if its use is rising."""
        before, self._demand[uuid] = self._demand.get(uuid), (now, demand_kib)
        if before is None or now <= before[0] or demand_kib <= before[1]:
            return 0
        # At the same rate, the next two snapshot intervals add twice this rise.
        return 2 * (demand_kib - before[1])

    def _pressure(self, guest: GuestView, buffer_kib: int) -> bool:
        swap_in, self._swap_in[guest.uuid] = (
            self._swap_in.get(guest.uuid), guest.swap_in_kib or 0)
        swapping = swap_in is not None and (guest.swap_in_kib or 0) > swap_in
        low_free = guest.usable_kib is not None and guest.usable_kib < buffer_kib // 2
        return guest.deflated_on_oom or swapping or low_free

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        base: dict[str, int] = {}
        buffers: dict[str, int] = {}
        keep: dict[str, int] = {}
        for guest in guests:
            if guest.usable_kib is None or not guest.stats_fresh:
                continue
            demand = guest.demand_kib
            if demand is None:
                # The balloon is moving, so its real size lies between what
                # libvirt reports and the target.
                target = guest.target_kib or guest.actual_kib
                if target > guest.actual_kib:
                    # Growing: assume the larger size (the higher use), and
                    # never undo the growth.
                    demand = target - guest.usable_kib
                    keep[guest.uuid] = target
                elif guest.usable_kib >= self.min_buffer_kib // 2:
                    continue  # Shrinking: let it finish unless the guest runs short.
                else:
                    demand = guest.actual_kib - guest.usable_kib
            buffer = max(self.min_buffer_kib, int(demand * self.buffer_fraction))
            buffer += self._rise_ahead(guest.uuid, demand, host.now)
            if self._pressure(guest, buffer):
                # Grow past what the guest has: its use is outrunning the stats.
                base[guest.uuid] = max(demand, guest.actual_kib)
            else:
                base[guest.uuid] = demand
            buffers[guest.uuid] = buffer
        present = {guest.uuid for guest in guests}
        self._swap_in = {u: v for u, v in self._swap_in.items() if u in present}
        self._demand = {u: v for u, v in self._demand.items() if u in present}

        shortage = self.host_reserve_kib - host.available_kib
        if shortage > 0 and buffers:
            shares = {g.uuid: g.shares for g in guests if g.uuid in buffers}
            buffers = share_out(sum(buffers.values()) - shortage, buffers, shares)
        return {u: max(base[u] + buffers[u], keep.get(u, 0)) for u in base}
