"""The default policy: hold recent peaks, size shortages, pace growth by the host.

Reacting to demand is not enough: statistics arrive late, a balloon deflates
at a bounded rate and the safety rules shrink a guest only step by step, so
memory withheld leaves a guest short until the agent catches up, and memory
given comes back slowly. Each cycle the policy plans every guest from what it
has seen of it, fits the plan to the host, then paces the growth:

* **Once per sample, in guest time**: the policy looks at a guest when it
  reports new statistics, whatever the cycle, and counts rates and
  half-lives in seconds between its samples.
* **Grow fast, shrink slowly** (as ESXi's active-memory estimate): a guest's
  demand estimate rises to its demand at once and falls back by half every
  ``[adaptive_policy] demand_half_life`` seconds, so a guest whose demand keeps
  returning to a peak keeps the memory for it.
* **Cover the ramp until the next correction lands**: a guest whose demand
  rose in its last two samples is filling its memory. Reacting to what it
  uses now is too late: the next sample, the next cycle and the balloon's
  move all come before more memory does. So it gets what the ramp, at the
  slower of its last two rates, will use in that time. After a single rise
  it gets the same when its free memory would not last that long, if the
  agent watches it closely: a rise over a second is a rate, a rise over a
  slow period may as well be a jump that is over.
* **Room for the next surge**: a guest whose demand once jumped is likely to
  jump again, and no reaction beats a jump: statistics show it late and a
  balloon deflates at a bounded rate. A guest wants its estimate plus half
  the largest jump it made between two looks, a memory that halves every
  two demand half-lives.
* **Signals beyond free memory**: a guest that swaps in, deflated its balloon
  on OOM, or has almost no free memory uses all it has plus what it reads
  back from swap per second, so that one step grows it by what it lacks.
* **Memory buffer** (as Hyper-V's): a guest wants its estimate plus
  ``[adaptive_policy] buffer_percent`` of it, within its flavor's bounds,
  and never less than its demand plus the safety rules' headroom: a guest
  that grew keeps the margin that one shrunk by the rules keeps, whichever
  way its balloon last moved.
* **No growth for noise, few and large shrinks**: a target below what the
  guest wants stays put while it keeps at least half of the buffer; one above
  stays put until the want falls below two thirds of the target's height
  above the floor and by at least 2 % of the flavor RAM, and then goes down
  to the want (each balloon move costs the guest
  and the host, and the safety rules shrink a guest in bounded steps).
* **Shares under contention, with an idle memory tax** (as VMware's): when the
  wants do not fit the host less ``[adaptive_policy] host_reserve_mb``, every guest
  first gets its demand, and the rest goes by ``balloon:shares``, memory that
  a guest would hold idle weighing ``1 / (1 - [adaptive_policy] idle_tax_percent)``
  times as much as memory in use.
* **Never overflow the host**: one cycle's growth, as the safety rules will
  apply it, comes out of what is free now, short guests first. Memory that
  moves between guests is freed by shrinks first and handed out as it frees
  up (squeezed's two phases).
* **Guests it cannot read**: with stale statistics, or a balloon the
  controller found unresponsive (squeezed's stuck domains), a guest gets no
  proposal and counts at the most it may hold.

Memory no guest needs stays free on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from oslo_config import cfg

from nova_balloon.conf import adaptive_policy
from nova_balloon.model import KIB_PER_MIB, GuestView, HostSnapshot
from nova_balloon.policies import Policy
from nova_balloon.safety import SafetyLimits, guard_target

# A guest with less free memory than this share of its size is short: it is
# about to swap, if it does not already.
SHORT_FREE_FRACTION = 0.02
# A single rise may be the first part of a ramp, begun at any moment since the
# sample before it: the ramp's rate may be up to this many times the rise's.
FIRST_RISE_MARGIN = 2
# The share of a guest's largest recent jump in demand that it keeps free, and
# how many demand half-lives it takes to forget half of that jump.
SURGE_SHARE = 0.5
SURGE_HALF_LIVES = 2
# A target below what the guest wants stays put while it keeps at least this
# share of the guest's buffer.
BAND_BELOW = 0.5
# A target above what the guest wants stays put while the excess is at most
# this share of the want's height above the floor ...
BAND_ABOVE = 0.5
# ... or less than this share of the guest's flavor RAM: the least worth a
# shrink (a balloon move).
SMALLEST_SHRINK = 0.02


def share_out(budget: int, wants: Mapping[str, int],
              shares: Mapping[str, float]) -> dict[str, int]:
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
            give = min(wants[u] - given[u], int(left * shares[u] // total))
            given[u] += give
            spent += give
        hungry = {u for u in hungry if given[u] < wants[u]}
        if spent == 0:
            break
        left -= spent
    return given


class Seen(NamedTuple):
    """What the policy remembers of a guest from its last sample."""

    # The guest time of the sample (GuestView.sampled_at).
    sampled_at: int | None
    demand_kib: int
    estimate_kib: float
    # How much demand rose since the sample before (negative: it fell).
    rise_kib: int
    # The largest rise, fading by half every SURGE_HALF_LIVES demand half-lives.
    surge_kib: float
    swap_in_kib: int | None


class Need(NamedTuple):
    """A guest's plan: the least it must have now, and what it would like."""

    least_kib: int
    want_kib: int
    demand_kib: int


def observe(guest: GuestView, before: Seen | None, half_life_s: float) -> Seen:
    """What the policy knows of a guest with usable statistics, after a new sample.

    The estimate's excess over the demand halves every ``half_life_s``
    seconds of guest time between the samples; the largest surge every
    SURGE_HALF_LIVES of them.
    """
    assert guest.usable_kib is not None and guest.demand_bound_kib is not None, guest
    # While the balloon moves, the most the guest can have used: never short.
    demand = guest.demand_bound_kib
    elapsed = 0.0
    if before is not None and before.sampled_at is not None and guest.sampled_at is not None:
        elapsed = float(guest.sampled_at - before.sampled_at)
    swap_rate = 0.0
    if before is not None and before.swap_in_kib is not None and \
            guest.swap_in_kib is not None and elapsed > 0:
        swapped_in = guest.swap_in_kib - before.swap_in_kib
        if swapped_in > 0:
            swap_rate = swapped_in / elapsed
    if guest.deflated_on_oom or swap_rate or \
            guest.usable_kib < SHORT_FREE_FRACTION * guest.actual_kib:
        demand = max(demand, int(guest.actual_kib + swap_rate))
    if before is None:
        return Seen(sampled_at=guest.sampled_at, demand_kib=demand, estimate_kib=demand,
                    rise_kib=0, surge_kib=0.0, swap_in_kib=guest.swap_in_kib)
    decay = 0.5 ** (elapsed / half_life_s) if elapsed > 0 else 1.0
    rise = demand - before.demand_kib
    above = before.estimate_kib - demand
    surge = before.surge_kib * decay ** (1 / SURGE_HALF_LIVES)
    return Seen(sampled_at=guest.sampled_at, demand_kib=demand,
                estimate_kib=demand + above * decay if above > 0 else demand,
                rise_kib=rise, surge_kib=max(rise, surge), swap_in_kib=guest.swap_in_kib)


def ramp_room(guest: GuestView, watched_closely: bool) -> float:
    """What the guest's rising demand will use before a correction can land.

    The trend's rate over ``reaction_s``; after a single rise in a guest
    watched closely, its rate when the free memory would not last that long
    (growth for every rise would hand memory to noise).
    """
    room = guest.trend_rate_kib_s * guest.reaction_s
    if not watched_closely:
        return room
    rise_room = FIRST_RISE_MARGIN * guest.demand_rate_kib_s * guest.reaction_s
    usable = guest.usable_kib if guest.usable_kib is not None else 0
    return rise_room if rise_room > room and usable < rise_room else room


def need_of(guest: GuestView, seen: Seen, buffer_fraction: float,
            ramp_kib: float = 0.0, headroom_kib: int = 0) -> Need:
    """The least a guest must have now (its demand) and what it wants: its
    estimate, or its demand plus ``ramp_kib`` (what a ramp will use until the
    next correction), plus the larger of the buffer and room for half its
    largest recent surge, and at least its demand plus ``headroom_kib`` (the
    safety rules' headroom: what they leave a guest on the way down, it gets
    on the way up); both within its bounds."""
    demand, floor, ceiling = seen.demand_kib, guest.floor_kib, guest.ceiling_kib
    peak = max(demand + ramp_kib, seen.estimate_kib)
    want = max(peak + max(peak * buffer_fraction, SURGE_SHARE * seen.surge_kib),
               demand + headroom_kib)
    return Need(least_kib=min(ceiling, max(floor, demand)),
                want_kib=int(min(ceiling, max(floor, want))), demand_kib=demand)


def _steady(guest: GuestView, need: Need) -> int:
    """The current target while it keeps half the buffer and the want is
    at least two thirds of its height above the floor (BAND_ABOVE), or
    within SMALLEST_SHRINK of it; else the want.

    Growth for noise costs a balloon move now and a shrink later; a shrink
    by a little costs a move for little memory.
    """
    current = guest.current_kib
    want = need.want_kib
    if current < need.least_kib + BAND_BELOW * (want - need.least_kib):
        return want
    band = max(BAND_ABOVE * (want - guest.floor_kib), SMALLEST_SHRINK * guest.ceiling_kib)
    return current if current - want <= band else want


class AdaptivePolicy(Policy):
    shares_headroom_when_contended = True

    def __init__(self, conf: cfg.ConfigOpts):
        super().__init__(conf)
        # Its own options, registered where it is loaded (the agent, the
        # simulator, tests).
        adaptive_policy.register_opts(conf)
        group = conf.adaptive_policy
        self.buffer_fraction = group.buffer_percent / 100
        reserve_mb = group.host_reserve_mb
        if reserve_mb is None:
            reserve_mb = conf.reserved_host_memory_mb
        self.host_reserve_kib = reserve_mb * KIB_PER_MIB
        # Short guests may use the reserve, down to the host's critical level.
        self.host_critical_kib = min(self.host_reserve_kib,
                                     conf.balloon.host_critical_free_mb * KIB_PER_MIB)
        self.half_life_s = float(group.demand_half_life)
        self.slow_period_s = conf.balloon.stats_period
        self.idle_cost = 1 / (1 - group.idle_tax_percent / 100)
        self.limits = SafetyLimits.from_conf(conf.balloon)
        self._seen: dict[str, Seen] = {}

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        needs: dict[str, Need] = {}
        # Each planned guest's target when the host has room for every want.
        steady: dict[str, int] = {}
        planned: list[GuestView] = []
        before = self._seen
        seen: dict[str, Seen] = {}
        # What the planned guests could hold if the host were full.
        held_kib = host.free_kib
        wanted_kib = steady_kib = 0
        for guest in guests:
            uuid = guest.uuid
            held_kib += guest.actual_kib
            if guest.demand_bound_kib is None or not guest.stats_fresh or guest.unresponsive:
                # The controller gives an unresponsive guest its ceiling.
                held_kib -= guest.ceiling_kib if guest.unresponsive else \
                    max(guest.actual_kib, guest.current_kib)
                # A guest that is only stale for now keeps its history.
                if uuid in before:
                    seen[uuid] = before[uuid]
                continue
            look = before.get(uuid)
            if guest.new_sample or look is None:
                look = observe(guest, look, self.half_life_s)
            seen[uuid] = look
            ramp = ramp_room(guest, guest.stats_period_s < self.slow_period_s)
            need = needs[uuid] = need_of(guest, look, self.buffer_fraction, ramp,
                                         self.limits.headroom_for(guest))
            target = steady[uuid] = _steady(guest, need)
            wanted_kib += need.want_kib
            steady_kib += target
            planned.append(guest)
        # A gone guest loses its history.
        self._seen = seen
        room = held_kib - self.host_reserve_kib
        if wanted_kib <= room:
            targets = steady if steady_kib <= room else \
                {u: n.want_kib for u, n in needs.items()}
        else:
            targets = self._fit(planned, needs, held_kib)
        return self._pace(host, guests, planned, needs, targets)

    def _fit(self, planned: Sequence[GuestView], needs: Mapping[str, Need],
             held_kib: int) -> dict[str, int]:
        """Targets for the planned guests when the host cannot hold every want.

        Wants fit in what the host has less its reserve (``propose`` takes
        them then); beyond that, each guest keeps its demand, if need be into
        the reserve (down to the host's critical level), and the rest is shared.
        """
        room = held_kib - self.host_reserve_kib
        wants = {u: n.want_kib for u, n in needs.items()}
        least = {u: n.least_kib for u, n in needs.items()}
        weights = {g.uuid: self._weight(g, needs[g.uuid]) for g in planned}
        short_room = held_kib - self.host_critical_kib
        if sum(least.values()) > short_room:
            floors = {g.uuid: g.floor_kib for g in planned}
            given = share_out(short_room - sum(floors.values()),
                              {u: least[u] - floors[u] for u in needs}, weights)
            return {u: floors[u] + given[u] for u in needs}
        extra = share_out(room - sum(least.values()),
                          {u: wants[u] - least[u] for u in needs}, weights)
        return {u: least[u] + extra[u] for u in needs}

    def _weight(self, guest: GuestView, need: Need) -> float:
        """Shares per KiB wanted, idle KiB taxed (VMware's shares-per-page ratio)."""
        idle = max(0, need.want_kib - need.demand_kib)
        in_use = need.want_kib - idle
        return guest.shares * need.want_kib / max(1.0, in_use + self.idle_cost * idle)

    def _pace(self, host: HostSnapshot, guests: Sequence[GuestView],
              planned: Sequence[GuestView], needs: Mapping[str, Need],
              proposals: dict[str, int]) -> dict[str, int]:
        """Bound this cycle's growth by the memory free now.

        Short guests grow first, into the reserve if need be (down to the
        host's critical level); buffers only out of what is free beyond it.
        ``proposals``, the planned guests' targets, is changed in place.
        """
        if len(planned) < len(guests):
            for guest in guests:
                if guest.uuid not in proposals:  # Not planned: it keeps its target.
                    proposals[guest.uuid] = guest.current_kib
        free = host.free_kib - self.host_reserve_kib
        free_for_short = host.free_kib - self.host_critical_kib
        if self._growth(guests, proposals) <= free:
            if len(planned) == len(guests):
                return proposals
            return {g.uuid: proposals[g.uuid] for g in planned}
        growing = {g.uuid: proposals[g.uuid] - g.current_kib for g in planned
                   if proposals[g.uuid] > g.current_kib}
        shares = {g.uuid: float(g.shares) for g in planned if g.uuid in growing}
        for guest in planned:
            if guest.uuid in growing:
                proposals[guest.uuid] = guest.current_kib
        committed = self._growth(guests, proposals)
        urgent = share_out(free_for_short - committed,
                           {u: min(grow, max(0, needs[u].least_kib - proposals[u]))
                            for u, grow in growing.items()}, shares)
        more = share_out(min(free, free_for_short) - committed - sum(urgent.values()),
                         {u: growing[u] - urgent[u] for u in growing}, shares)
        for uuid in growing:
            proposals[uuid] += urgent[uuid] + more[uuid]
        if self._growth(guests, proposals) > free_for_short:
            # The safety rules still add growth (stalled shrinks): wait.
            for guest in planned:
                if guest.uuid in growing:
                    proposals[guest.uuid] = guest.current_kib
        return {g.uuid: proposals[g.uuid] for g in planned}

    def _growth(self, guests: Sequence[GuestView], proposals: dict[str, int]) -> int:
        """Memory the guests may take on their way to the targets the safety
        rules will set for these proposals.

        A balloon is somewhere between its last reported size and its target,
        so growth counts from the lower of the two: growth still under way,
        and a stalled shrink taken back, use memory as much as new growth.
        The rules keep a shrinking guest's use plus headroom, which can be
        more than it has: such a shrink becomes growth, so the proposal is
        changed into a hold.
        """
        growth = 0
        limits = self.limits
        for guest in guests:
            actual, current = guest.actual_kib, guest.current_kib
            proposal = proposals[guest.uuid]
            if proposal == current and actual <= current and guest.unresponsive is None and \
                    guest.floor_kib <= current <= guest.ceiling_kib:
                # What most guests get most cycles: the rules keep the target.
                growth += current - actual
                continue
            target = guard_target(guest, proposal, limits)
            if target > max(proposal, current):
                proposals[guest.uuid] = max(current, min(actual, target))
                target = guard_target(guest, proposals[guest.uuid], limits)
            growth += max(0, target - min(actual, current))
        return growth
