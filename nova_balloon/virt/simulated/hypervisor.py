"""The simulated hypervisor: a ``Driver`` over guests whose demand is given.

Time advances one second per ``step``. Within a second, as in the benchmark's
model: demand moves first, then balloons move toward their targets, then the
guests whose statistics period ends on this second refresh them. Between
refreshes the controller reads the same, ageing statistics, as it does from a
real guest.

Balloons move at most ``rate`` per second. Inflation (shrinking the guest)
never takes memory the guest uses: it stalls at the guest's demand. When
demand rises above the balloon size, nothing gives the guest memory until
the controller raises its target: the difference is shortfall, which the
guest's ``swap_in`` and ``major_faults`` counters report.

Two host models, as the benchmark's spec defines them. ``v1``: a guest
occupies its balloon size on the host. ``v2`` (Nova 34's guests, with free
page reporting): a guest holds page cache inside its balloon, which fills at
``cache_fill`` per second and is dropped first when demand rises or the
balloon inflates; on the host it occupies only what it uses plus that cache
(its RSS, reported as ``balloon.rss``), so the host's MemAvailable counts
the rest of its balloon as free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from nova_balloon.model import KIB_PER_MIB, BalloonStats, GuestFacts, GuestSample, RunState
from nova_balloon.virt.driver import Collection, GuestActionFailed, GuestGone

BALLOON_RATE_KIB_S = 256 * KIB_PER_MIB
# Nova's default [libvirt] mem_stats_period_seconds.
STATS_PERIOD_S = 10
HOST_MODELS = ('v1', 'v2')
# How fast a v2 guest's page cache grows while it has free memory.
CACHE_FILL_KIB_S = 1 * KIB_PER_MIB


class SimulatedHypervisor:
    """A compute node of ``host_total_kib`` running ``guests``; implements Driver."""

    def __init__(self, guests: Sequence[GuestFacts], demand_kib: np.ndarray,
                 host_total_kib: int, initial_kib: np.ndarray,
                 rate_kib_s: float = BALLOON_RATE_KIB_S, host_model: str = 'v1',
                 cache_fill_kib_s: float = CACHE_FILL_KIB_S):
        if demand_kib.shape[1] != len(guests) or len(initial_kib) != len(guests):
            raise ValueError('one demand column and one start size per guest')
        if host_model not in HOST_MODELS:
            raise ValueError(f'host model {host_model!r} is not one of {", ".join(HOST_MODELS)}')
        self.host_model = host_model
        self.cache_fill_kib_s = cache_fill_kib_s
        self.facts = list(guests)
        self.host_total_kib = host_total_kib
        self.rate_kib_s = rate_kib_s
        self._demand_by_second = demand_kib
        self._index = {facts.uuid: i for i, facts in enumerate(self.facts)}
        self.ceiling_kib = np.array([f.max_memory_kib for f in self.facts], dtype=float)
        self.second = 0
        self.demand = demand_kib[0]
        self.actual = np.array(initial_kib, dtype=float)
        self.target = self.actual.copy()
        # v2: each guest's page cache, inside its balloon.
        self.cache = np.zeros(len(self.facts))
        self.stats_period_s = np.array([f.stats_period_s or 0 for f in self.facts])
        self.swap_in_kib = np.zeros(len(self.facts))
        self.major_faults = np.zeros(len(self.facts))
        # What the controller has asked of the balloons, for the ops metric.
        self.target_changes = 0
        self._stats: list[BalloonStats] = [BalloonStats()] * len(self.facts)
        self._next_refresh = 0
        self._account_shortfall()
        self._refresh_stats()

    @property
    def steps(self) -> int:
        return len(self._demand_by_second)

    def now(self) -> float:
        """The simulated clock, in seconds since the start."""
        return float(self.second)

    def step(self) -> None:
        """Advance the simulation by one second."""
        self.second += 1
        self.demand = self._demand_by_second[self.second]
        self._move_balloons()
        if self.host_model == 'v2':
            self.cache = np.minimum(self.cache + self.cache_fill_kib_s,
                                    np.maximum(self.actual - self.demand, 0.0))
        self._account_shortfall()
        self._refresh_stats()

    def resident(self) -> np.ndarray:
        """What each guest occupies on the host now."""
        if self.host_model == 'v1':
            return self.actual
        return np.minimum(self.actual, self.demand + self.cache)

    def _move_balloons(self) -> None:
        actual, target = self.actual, self.target
        grown = np.minimum(target, actual + self.rate_kib_s)
        # Inflation stops at the guest's demand and never gives memory back.
        inflated = np.minimum(actual, np.maximum(np.maximum(target, actual - self.rate_kib_s),
                                                 self.demand))
        self.actual = np.where(target > actual, grown, inflated)

    def _account_shortfall(self) -> None:
        short_kib = np.maximum(self.demand - self.actual, 0.0)
        self.swap_in_kib += short_kib
        self.major_faults += short_kib / KIB_PER_MIB

    def _refresh_stats(self) -> None:
        if self.second < self._next_refresh:
            return
        periods = self.stats_period_s
        due = np.flatnonzero((periods > 0) & (self.second % np.maximum(periods, 1) == 0))
        ticking = periods[periods > 0]
        self._next_refresh = int(np.min((self.second // ticking + 1) * ticking)) \
            if len(ticking) else self.steps
        free = np.maximum(self.actual - self.demand, 0.0)
        # MemFree: v2's page cache counts as usable (reclaimable), not as free.
        unused = np.maximum(free - self.cache, 0.0)
        for i in due.tolist():
            actual, usable = int(self.actual[i]), int(free[i])
            self._stats[i] = BalloonStats(
                actual_kib=actual, usable_kib=usable, unused_kib=int(unused[i]),
                available_kib=actual, swap_in_kib=int(self.swap_in_kib[i]),
                major_faults=int(self.major_faults[i]), last_update=self.second)

    # -- Driver interface --------------------------------------------------

    def collect(self) -> Collection:
        now = self.now()
        stats_now = self._stats
        if self.host_model == 'v2':
            # The host's figure, current at every collection (libvirt's balloon.rss).
            stats_now = [stats._replace(rss_kib=int(rss))
                         for stats, rss in zip(self._stats, self.resident().tolist(),
                                               strict=True)]
        samples = [
            GuestSample(facts=facts, stats=stats, run_state=RunState.RUNNING,
                        stats_age_s=None if stats.last_update is None
                        else now - stats.last_update)
            for facts, stats in zip(self.facts, stats_now, strict=True)]
        used = float(self.resident().sum())
        return Collection(self.host_total_kib, int(self.host_total_kib - used), samples)

    def _guest(self, uuid: str) -> int:
        index = self._index.get(uuid)
        if index is None:
            raise GuestGone(f'no simulated guest {uuid}')
        return index

    def set_target(self, uuid: str, target_kib: int) -> None:
        index = self._guest(uuid)
        if not 0 < target_kib <= self.ceiling_kib[index]:
            raise GuestActionFailed(f'target {target_kib} KiB outside (0, '
                                    f'{int(self.ceiling_kib[index])}] KiB')
        self.target[index] = target_kib
        self.target_changes += 1

    def set_stats_period(self, uuid: str, period_s: int) -> None:
        index = self._guest(uuid)
        self.stats_period_s[index] = period_s
        self._next_refresh = self.second + 1
        self.facts[index] = dataclasses.replace(self.facts[index], stats_period_s=period_s)
