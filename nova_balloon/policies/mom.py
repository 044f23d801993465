"""Baseline ``mom``: oVirt MoM's default balloon rules.

From oVirt/mom doc/balloon.rules (the policy vdsm ships), as the benchmark's
spec states them. MoM looks at host free memory as a fraction of MemTotal,
averaged over its last 10 samples. Under 20 % free it shrinks every guest
towards what it uses plus a free share that falls with the host's free share
(below 5 % free the share turns negative, to force guests to swap), at most
5 % of the balloon per round, and never grows a guest while shrinking.
Otherwise it grows every ballooned guest by 5 % per round, or up to 20 % free
in the guest. It skips changes of 0.25 % of the balloon or less. ``used`` is
averaged too (MoM's ``StatAvg``); MoM reads the guest's MemFree, the view's
MemAvailable stands for it here.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence

from oslo_config import cfg

from nova_balloon.model import GuestView, HostSnapshot
from nova_balloon.policies import Policy

SAMPLES = 10
PRESSURE_THRESHOLD = 0.20
PRESSURE_CRITICAL = 0.05
CRITICAL_GUEST_FREE_OFFSET = -0.05
MIN_GUEST_FREE = 0.20
MAX_CHANGE = 0.05
MIN_CHANGE = 0.0025


def shrink_target(guest: GuestView, used_kib: float, host_free: float) -> float:
    guest_free = host_free + CRITICAL_GUEST_FREE_OFFSET \
        if host_free <= PRESSURE_CRITICAL else host_free
    actual = guest.actual_kib
    return max(actual * (1 - MAX_CHANGE), guest.floor_kib, used_kib + guest_free * actual)


def grow_target(guest: GuestView, used_kib: float) -> float:
    actual = guest.actual_kib
    return min(guest.ceiling_kib, max(actual * (1 + MAX_CHANGE), guest.floor_kib,
                                      used_kib + MIN_GUEST_FREE * actual))


class MomPolicy(Policy):
    def __init__(self, conf: cfg.ConfigOpts):
        super().__init__(conf)
        self._host_free: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        # uuid -> the last samples of (balloon size, free memory).
        self._guests: dict[str, collections.deque[tuple[int, int]]] = {}

    def _used(self, guest: GuestView) -> float:
        assert guest.usable_kib is not None
        history = self._guests.setdefault(guest.uuid, collections.deque(maxlen=SAMPLES))
        history.append((guest.actual_kib, guest.usable_kib))
        return statistics.fmean(a for a, _ in history) - \
            statistics.fmean(u for _, u in history)

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        self._host_free.append(host.available_kib / host.total_kib)
        host_free = statistics.fmean(self._host_free)
        proposals = {}
        for guest in guests:
            if guest.usable_kib is None:
                continue
            used = self._used(guest)
            if host_free < PRESSURE_THRESHOLD:
                target = shrink_target(guest, used, host_free)
                if target > guest.actual_kib:
                    continue  # MoM sets a shrink target only if it shrinks.
            elif guest.actual_kib < guest.ceiling_kib:
                target = grow_target(guest, used)
            else:
                continue
            if abs(target - guest.actual_kib) > MIN_CHANGE * guest.actual_kib:
                proposals[guest.uuid] = int(target)
        present = {guest.uuid for guest in guests}
        self._guests = {u: h for u, h in self._guests.items() if u in present}
        return proposals
