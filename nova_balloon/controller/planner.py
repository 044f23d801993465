"""One control cycle as a pure function: samples and memory in, decisions out.

``plan`` classifies every guest (managed, or ignored with a reason), turns the
managed ones into ``GuestView``s, asks the policy for targets and passes each
one through the safety rules. It does no I/O; the caller supplies the time,
the flavor policy file's contents and what the agent remembers per guest.

Two host states change the rules for a cycle. Critical (less memory the host
can count on than ``host_critical_free_mb``): guests with memory to spare
give it back, faster. Contended (guests short of free memory lack more than
the host has free above that level): the others keep only the contended
headroom and give the rest to those that lack it, since memory a guest holds
idle helps nobody while another swaps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from nova_balloon import flavor_policy
from nova_balloon.model import (
    KIB_PER_MIB,
    Action,
    BalloonStats,
    Decision,
    FlavorPolicy,
    GuestSample,
    GuestView,
    HostSnapshot,
    RunState,
)
from nova_balloon.policies import Policy
from nova_balloon.safety import SafetyLimits, guard, is_short
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB, unresponsive_reason

# Statistics count as fresh for this many stats periods plus one cycle.
STALE_AFTER_PERIODS = 2
# QEMU reports balloon size changes at most once a second (event throttling),
# so libvirt's balloon size can be this late.
BALLOON_REPORT_LAG_S = 1.0
# How long a balloon takes to move once its target is set, as the agent
# plans its reactions: a second covers a few hundred MiB on a loaded host.
BALLOON_MOVE_S = 1.0
CRITICAL_SHRINK_FACTOR = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    defaults: flavor_policy.PolicyDefaults
    manage_unmanaged_guests: bool
    limits: SafetyLimits
    interval_s: float
    stats_period_s: int
    unresponsive_after_s: float = 60.0
    unresponsive_retry_s: float = 300.0
    # Below this much host MemAvailable, shrinks may go CRITICAL_SHRINK_FACTOR
    # times faster (never below floors or headroom).
    host_critical_kib: int = 0
    # The headroom_percent guests keep while the host is contended (plan);
    # at headroom_percent or more, the headroom never falls.
    contended_headroom_percent: float = 100.0
    # Guests with less free memory than this get the fast stats period.
    fast_stats_period_s: int = 1
    fast_free_kib: int = 0

    @classmethod
    def from_conf(cls, group: Any) -> Settings:
        """From the [balloon] option group (or anything with the same attributes)."""
        return cls(
            defaults=flavor_policy.PolicyDefaults(
                overcommit_ratio=group.default_overcommit_ratio,
                min_memory_mb=group.default_min_memory_mb,
                shares=group.default_shares),
            manage_unmanaged_guests=group.manage_unmanaged_guests,
            limits=SafetyLimits.from_conf(group),
            interval_s=group.interval,
            stats_period_s=group.stats_period,
            unresponsive_after_s=group.unresponsive_after,
            unresponsive_retry_s=group.unresponsive_retry,
            host_critical_kib=group.host_critical_free_mb * KIB_PER_MIB,
            contended_headroom_percent=group.contended_headroom_percent,
            fast_stats_period_s=group.fast_stats_period,
            fast_free_kib=group.fast_free_mb * KIB_PER_MIB)


class GuestMemory(NamedTuple):
    """What the agent remembers of a guest from one cycle to the next."""

    target_kib: int | None
    actual_kib: int | None
    # The agent set a target below the ceiling: it owes the guest a restore.
    shrunk: bool
    # When (HostSnapshot.now) the balloon was first seen at actual_kib.
    actual_since: float | None = None
    # When the agent last changed the target.
    target_set_at: float | None = None
    # Until when the balloon is treated as unresponsive, and why.
    unresponsive_until: float | None = None
    unresponsive: str | None = None
    # The last statistics sample observed (GuestView.sampled_at), the demand
    # it showed (GuestView.demand_bound_kib) and the rates as of it.
    sampled_at: int | None = None
    sample_demand_kib: int | None = None
    demand_rate_kib_s: float = 0.0
    trend_rate_kib_s: float = 0.0
    # The largest balloon size seen since that sample was observed: what the
    # guest may have had when the next sample is taken.
    actual_high_kib: int | None = None
    # When (HostSnapshot.now) the guest last reported statistics at all.
    stats_seen_at: float | None = None
    # The run of the domain all this belongs to (GuestSample.run_id); None
    # when not known (adopted from the state file).
    run_id: str | None = None


class Classified(NamedTuple):
    """A guest's bounds and whether the agent manages it."""

    sample: GuestSample
    policy: FlavorPolicy | None
    floor_kib: int | None
    ignore_reason: str | None
    # The reason is a mistake an operator should fix (logged as a warning).
    misconfigured: bool = False

    @property
    def ceiling_kib(self) -> int:
        return self.sample.facts.max_memory_kib


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    decisions: list[Decision]
    classified: dict[str, Classified]
    views: dict[str, GuestView]
    memory: dict[str, GuestMemory]
    host_critical: bool = False
    # Guests short of free memory lack more than the host has free above its
    # critical level (lacking_kib): the others keep the contended headroom.
    host_contended: bool = False
    lacking_kib: int = 0
    # The stats period to set, for the managed guests whose period must change.
    stats_periods: dict[str, int] = dataclasses.field(default_factory=dict)
    # Some guest is short of free memory: cycle at the fast stats period.
    watching_closely: bool = False
    # The host as the plan counted it (with the guests' untouched memory).
    host: HostSnapshot | None = None


Resolved = FlavorPolicy | flavor_policy.PolicyError


# Flavor policies resolved: a host has few flavors and every guest is
# classified every cycle, so each set of balloon keys is parsed once.
BOUNDS_CACHE_SIZE = 1024

BalloonKeys = tuple[tuple[str, Any], ...]


def bounds(extra_specs: Mapping[str, Any] | None, file_entry: Mapping[str, Any] | None,
           defaults: flavor_policy.PolicyDefaults,
           ceiling_kib: int) -> tuple[Resolved, int | None]:
    """``flavor_policy.resolve`` (with the error returned rather than raised), and its floor.

    Only the balloon keys count, so the result is kept by their values
    (``_resolved``); a value that cannot be a key (a list in the policy file,
    say) is resolved afresh, to the same answer.
    """
    specs, entry = _balloon_keys(extra_specs), _balloon_keys(file_entry)
    try:
        return _resolved(specs, entry, defaults, ceiling_kib)
    except TypeError:  # unhashable value
        return _resolve(specs, entry, defaults, ceiling_kib)


def _balloon_keys(source: Mapping[str, Any] | None) -> BalloonKeys | None:
    if source is None:
        return None
    return tuple((name, source[name]) for name in flavor_policy.KEYS_BY_NAME if name in source)


def _resolve(specs: BalloonKeys | None, entry: BalloonKeys | None,
             defaults: flavor_policy.PolicyDefaults,
             ceiling_kib: int) -> tuple[Resolved, int | None]:
    try:
        policy = flavor_policy.resolve(None if specs is None else dict(specs),
                                       None if entry is None else dict(entry),
                                       defaults, ceiling_kib)
    except flavor_policy.PolicyError as exc:
        return exc.with_traceback(None), None
    return policy, policy.floor_kib(ceiling_kib)


_resolved = functools.lru_cache(maxsize=BOUNDS_CACHE_SIZE)(_resolve)


def classify(sample: GuestSample, policy_file: Mapping[str, Mapping[str, Any]],
             settings: Settings) -> Classified:
    """Decide whether the agent may manage this guest, and within which bounds."""
    facts = sample.facts
    if facts.unballoonable:
        return Classified(sample, None, None, facts.unballoonable)
    if sample.run_state is RunState.MIGRATING:
        return Classified(sample, None, None, 'migration in progress')
    if sample.run_state is not RunState.RUNNING:
        return Classified(sample, None, None, f'not running ({sample.run_state.value})')
    nova = facts.nova
    if nova is None and not settings.manage_unmanaged_guests:
        return Classified(sample, None, None,
                          'no Nova metadata (see [balloon] manage_unmanaged_guests)')
    flavor_name = nova.flavor_name if nova else None
    extra_specs = nova.extra_specs if nova else None
    file_entry = policy_file.get(flavor_name) if flavor_name else None
    policy, floor = bounds(extra_specs, file_entry, settings.defaults, facts.max_memory_kib)
    if isinstance(policy, flavor_policy.PolicyError):
        return Classified(sample, None, None, f'invalid flavor policy: {policy}',
                          misconfigured=True)
    if not policy.enabled:
        return Classified(sample, policy, floor, f'{flavor_policy.ENABLED}=false')
    assert floor is not None
    if floor >= facts.max_memory_kib:
        return Classified(sample, policy, floor, f'not reclaimable: floor equals flavor RAM '
                                                 f'(ratio {policy.overcommit_ratio:g})')
    return Classified(sample, policy, floor, None)


def _valid_stats(stats: BalloonStats) -> bool:
    """The guest writes these figures: accept only self-consistent ones."""
    actual, usable = stats.actual_kib, stats.usable_kib
    unused, available, swap_in, faults = (stats.unused_kib, stats.available_kib,
                                          stats.swap_in_kib, stats.major_faults)
    if actual is None or usable is None or actual < 0 or usable < 0 or usable > actual:
        return False
    # Counters the guest may not report (None), but never below zero.
    return not (unused is not None and unused < 0 or available is not None and available < 0
                or swap_in is not None and swap_in < 0 or faults is not None and faults < 0)


def stats_fresh(sample: GuestSample, settings: Settings) -> bool:
    period = sample.facts.stats_period_s or settings.stats_period_s
    age = sample.stats_age_s
    return age is not None and -settings.interval_s <= age <= \
        STALE_AFTER_PERIODS * period + settings.interval_s


def actual_since(sample: GuestSample, memory: GuestMemory | None, now: float) -> float:
    """Since when the balloon has had its current size, as far as the agent saw."""
    if memory is not None and memory.actual_since is not None and \
            memory.actual_kib == sample.stats.actual_kib:
        return memory.actual_since
    return now


def _unresponsive(sample: GuestSample, actual: int, memory: GuestMemory | None,
                  since: float, settings: Settings, now: float) -> str | None:
    """A verdict stands until its retry time; then the balloon gets a new chance."""
    if memory is not None and memory.unresponsive_until is not None and \
            now < memory.unresponsive_until:
        return memory.unresponsive
    return unresponsive_reason(
        now=now, actual_kib=actual, target_kib=memory.target_kib if memory else None,
        target_set_at=memory.target_set_at if memory else None, actual_since=since,
        stats_age_s=sample.stats_age_s, after_s=settings.unresponsive_after_s,
        stats_missing_since=memory.stats_seen_at
        if memory is not None and memory.stats_seen_at is not None else since)


class SampleView(NamedTuple):
    """What the planner makes of a guest's statistics sample (see GuestView)."""

    new_sample: bool
    demand_bound_kib: int | None
    demand_rate_kib_s: float
    trend_rate_kib_s: float


def observe_sample(sampled_at: int | None, usable: int | None, actual: int,
                   demand: int | None, memory: GuestMemory | None) -> SampleView:
    """Demand and its rates, from each sample once, in seconds of guest time.

    A guest refreshes its statistics every stats period, whatever the cycle:
    a 10 s period seen by a 2 s cycle is one sample seen five times, not four
    flat looks and a jump. While the balloon moves, the sample still bounds
    the demand from above: the balloon was at most the largest size seen
    since the last sample, or the target it grows to (libvirt learns of a
    move up to a second late, after the guest's statistics may show it).
    While a shrink is under way, that bound is the size before it: the
    guest's free memory already shows the shrink, libvirt's size not yet. So
    such a sample waits for one taken once the balloon settled; the safety
    rules left the guest its headroom when they let the shrink through.
    """
    last = memory if memory is not None and memory.sampled_at is not None else None
    high = actual
    if last is not None and last.actual_high_kib is not None and last.actual_high_kib > actual:
        high = last.actual_high_kib
    target = memory.target_kib if memory is not None else None
    shrinking = demand is None and target is not None and target + SETTLE_TOLERANCE_KIB < high
    if usable is None or sampled_at is None or shrinking or (
            last is not None and last.sampled_at == sampled_at):
        if last is None:
            return SampleView(False, None, 0.0, 0.0)
        bound = last.sample_demand_kib if usable is not None else None
        return SampleView(False, bound, last.demand_rate_kib_s, last.trend_rate_kib_s)
    bound = demand
    if bound is None:
        bound = (target if target is not None and target > high else high) - usable
    if last is None or last.sample_demand_kib is None or last.sampled_at is None or \
            sampled_at <= last.sampled_at:
        return SampleView(True, bound, 0.0, 0.0)
    rise = bound - last.sample_demand_kib
    rate = rise / (sampled_at - last.sampled_at) if rise > 0 else 0.0
    before = last.demand_rate_kib_s
    return SampleView(True, bound, rate, min(rate, before) if rate > 0 and before > 0 else 0.0)


def make_view(item: Classified, memory: GuestMemory | None, since: float, settings: Settings,
              now: float) -> GuestView:
    """A managed guest as policies see it.

    ``since`` is ``actual_since(item.sample, memory, now)``.
    """
    sample = item.sample
    stats = sample.stats
    facts = sample.facts
    assert item.policy is not None and item.floor_kib is not None
    actual = stats.actual_kib if stats.actual_kib is not None else facts.max_memory_kib
    target = memory.target_kib if memory else None
    previous_actual = memory.actual_kib if memory else None
    usable = stats.usable_kib if _valid_stats(stats) else None
    age = sample.stats_age_s
    moving = age is None or now - age <= since + BALLOON_REPORT_LAG_S
    demand = actual - usable if usable is not None and not moving else None
    seen = observe_sample(stats.last_update, usable, actual, demand, memory)
    period = stats_period_for(actual, facts.max_memory_kib, usable, seen.demand_rate_kib_s,
                              facts.stats_period_s, settings)
    cycle = settings.fast_stats_period_s if period < settings.stats_period_s else \
        settings.interval_s
    return GuestView(
        uuid=facts.uuid, name=facts.name, ceiling_kib=facts.max_memory_kib,
        floor_kib=item.floor_kib, shares=item.policy.shares, actual_kib=actual,
        target_kib=target, usable_kib=usable, demand_kib=demand,
        swap_in_kib=stats.swap_in_kib, major_faults=stats.major_faults,
        stats_fresh=stats_fresh(sample, settings), balloon_moving=moving,
        deflated_on_oom=(target is not None and previous_actual is not None
                         and actual > target + SETTLE_TOLERANCE_KIB
                         and actual > previous_actual),
        unresponsive=_unresponsive(sample, actual, memory, since, settings, now),
        sampled_at=stats.last_update, new_sample=seen.new_sample,
        demand_bound_kib=seen.demand_bound_kib, demand_rate_kib_s=seen.demand_rate_kib_s,
        trend_rate_kib_s=seen.trend_rate_kib_s, stats_period_s=period,
        reaction_s=period + cycle + BALLOON_MOVE_S)


def plan(host: HostSnapshot, samples: Sequence[GuestSample], policy: Policy,
         policy_file: Mapping[str, Mapping[str, Any]],
         memory: Mapping[str, GuestMemory], settings: Settings) -> Plan:
    now = host.now
    host = dataclasses.replace(host, untouched_kib=untouched_kib(samples))
    classified: dict[str, Classified] = {}
    views: dict[str, GuestView] = {}
    # Per guest: what the second pass needs of the first.
    rows: list[tuple[str, Classified, GuestMemory | None, GuestView | None, float]] = []
    # Guests in a new run that the agent had shrunk in the last one.
    new_runs: set[str] = set()
    for sample in samples:
        uuid = sample.facts.uuid
        item = classified[uuid] = classify(sample, policy_file, settings)
        remembered = memory.get(uuid)
        if remembered is not None and new_run(sample, remembered):
            if remembered.shrunk:
                new_runs.add(uuid)
            remembered = None
        since = actual_since(sample, remembered, now)
        view = None
        if item.ignore_reason is None:
            view = views[uuid] = make_view(item, remembered, since, settings, now)
        rows.append((uuid, item, remembered, view, since))
    proposals = policy.propose(host, list(views.values())) if views else {}

    limits = settings.limits
    spare_kib = host.free_kib - settings.host_critical_kib
    critical = 0 < settings.host_critical_kib and spare_kib < 0
    lacking = lacking_kib(views.values(), limits)
    contended = lacking > max(0, spare_kib) and policy.shares_headroom_when_contended and \
        settings.contended_headroom_percent < limits.headroom_percent
    reclaim_kib = -spare_kib if critical else 0
    if critical:
        limits = dataclasses.replace(
            limits, max_shrink_kib=limits.max_shrink_kib * CRITICAL_SHRINK_FACTOR,
            max_shrink_percent=min(100.0, limits.max_shrink_percent * CRITICAL_SHRINK_FACTOR))
    if contended:
        limits = dataclasses.replace(limits,
                                     headroom_percent=settings.contended_headroom_percent)
        reclaim_kib = max(reclaim_kib, lacking - max(0, spare_kib))
    if reclaim_kib > 0:
        proposals = reclaim_for_host(list(views.values()), proposals, reclaim_kib, limits)
    decisions = []
    new_memory = {}
    periods = {}
    closely = False
    for uuid, item, remembered, view, since in rows:
        if uuid in new_runs and item.sample.run_state is RunState.RUNNING:
            decision = _new_run_decision(item)
            period = view.stats_period_s if view is not None else None
            if period is not None and period != item.sample.facts.stats_period_s:
                periods[uuid] = period
        elif view is not None:
            decision = guard(view, proposals.get(uuid), limits)
            period = view.stats_period_s
            if period != item.sample.facts.stats_period_s:
                periods[uuid] = period
            if period < settings.stats_period_s:
                closely = True
        else:
            decision = _ignored_decision(item, remembered)
        decisions.append(decision)
        new_memory[uuid] = _remember(item, remembered, decision, view, since, settings, now)
    return Plan(decisions, classified, views, new_memory, critical, contended, lacking,
                periods, closely, host)


def new_run(sample: GuestSample, remembered: GuestMemory) -> bool:
    """Whether the guest runs anew since the agent remembered it.

    What the agent learnt of a guest belongs to one run of the domain: after
    a hard reboot, a rescue, a resize or a restore from a managed save (a new
    QEMU process) or a reboot from inside the guest, an old target would
    make the jump to full memory read as a deflation on OOM, and later as a
    balloon stuck above its target.
    """
    return remembered.run_id is not None and sample.run_id is not None and \
        remembered.run_id != sample.run_id


def _new_run_decision(item: Classified) -> Decision:
    """A guest the agent had shrunk starts its new run with its full memory.

    A guest booting needs its memory now, and after a reboot inside the guest
    its old target lives on in QEMU: the agent gives it all back and reclaims
    again from what the new run shows. (A guest missing from a collection,
    as during a managed save, is forgotten instead: when it comes back, from
    its saved live XML, it is managed from what it has, as a guest that
    arrives by migration is.)
    """
    facts = item.sample.facts
    return Decision(facts.uuid, facts.name, Action.GROW, facts.max_memory_kib,
                    (('new run of the domain (reboot, restore or rescue): full memory {} MiB '
                      'until it shows what it needs', facts.max_memory_kib),))


def lacking_kib(views: Iterable[GuestView], limits: SafetyLimits) -> int:
    """What the guests short of free memory lack: each one's use plus headroom,
    up to its ceiling, above what it has or grows to.

    A guest is short as the safety rules count it (``is_short``); one whose
    use is not known now lacks nothing that can be told, and one at its full
    memory nothing a balloon can give.
    """
    lacking = 0
    for view in views:
        if view.demand_kib is None or not view.stats_fresh or view.unresponsive:
            continue
        if is_short(view, limits):
            wanted = min(view.ceiling_kib, view.demand_kib + limits.headroom_for(view))
            lacking += max(0, wanted - view.current_kib)
    return lacking


def untouched_kib(samples: Sequence[GuestSample]) -> int:
    """The part of the guests' balloons they have not touched (HostSnapshot.untouched_kib)."""
    untouched = 0
    for sample in samples:
        actual, rss = sample.stats.actual_kib, sample.stats.rss_kib
        if actual is not None and rss is not None and actual > rss:
            untouched += actual - rss
    return untouched


def reclaim_for_host(views: Sequence[GuestView], proposals: Mapping[str, int],
                     short_kib: int, limits: SafetyLimits) -> dict[str, int]:
    """The proposals, lowered so that the guests give ``short_kib`` back to the host.

    Whatever the policy proposes, a host below its critical level takes
    memory back from the guests that have it to spare: what each has above
    its floor and above its use plus headroom (the safety rules' own line),
    in proportion to that spare. Guests whose use is not known give nothing.
    """
    lowered = dict(proposals)
    spare = {}
    for view in views:
        if view.demand_kib is None or not view.stats_fresh or view.unresponsive:
            continue
        keep = max(view.floor_kib, view.demand_kib + limits.headroom_for(view))
        current = view.current_kib
        if current > keep:
            spare[view.uuid] = (current, current - keep)
    total = sum(extra for _, extra in spare.values())
    if short_kib <= 0 or total <= 0:
        return lowered
    for uuid, (current, extra) in spare.items():
        cap = current - min(extra, int(short_kib * extra / total) + 1)
        lowered[uuid] = min(lowered.get(uuid, current), cap)
    return lowered


def stats_period_for(actual_kib: int, ceiling_kib: int, usable_kib: int | None,
                     demand_rate_kib_s: float, current_s: int | None,
                     settings: Settings) -> int:
    """Shrunk guests whose demand rises, or that are short of free memory (or of
    unknown free memory), are watched closely; the others keep the slow period.

    A watched guest goes back to the slow period only with half as much free
    memory again, so a guest near the line does not flip every cycle.
    """
    slow = settings.stats_period_s
    if actual_kib >= ceiling_kib - SETTLE_TOLERANCE_KIB:
        return slow  # Nothing to give back: no use watching.
    fast = settings.fast_stats_period_s if settings.fast_stats_period_s < slow else slow
    line = settings.fast_free_kib * 3 // 2 if current_s == fast else settings.fast_free_kib
    if usable_kib is None or usable_kib < line or demand_rate_kib_s > 0:
        return fast
    return slow


def _remember(item: Classified, remembered: GuestMemory | None, decision: Decision,
              view: GuestView | None, since: float, settings: Settings,
              now: float) -> GuestMemory:
    """What the agent remembers of the guest now."""
    action = decision.action
    changed = action in (Action.GROW, Action.SHRINK)
    target = decision.target_kib if action is not Action.IGNORE else (
        remembered.target_kib if remembered else None)
    shrunk = remembered.shrunk if remembered else False
    if changed:
        shrunk = decision.target_kib is not None and decision.target_kib < item.ceiling_kib
    until = remembered.unresponsive_until if remembered else None
    reason = view.unresponsive if view else None
    if reason is None:
        until = None
    elif until is None or now >= until:
        until = now + settings.unresponsive_retry_s
    actual = item.sample.stats.actual_kib
    set_at = now if changed else (remembered.target_set_at if remembered else None)
    stats_seen_at = now if item.sample.stats_age_s is not None else (
        remembered.stats_seen_at if remembered else None)
    return GuestMemory(target_kib=target, actual_kib=actual, shrunk=shrunk, actual_since=since,
                       target_set_at=set_at, unresponsive_until=until, unresponsive=reason,
                       stats_seen_at=stats_seen_at, run_id=item.sample.run_id,
                       **_sample_memory(remembered, view))


def _sample_memory(remembered: GuestMemory | None,
                   view: GuestView | None) -> dict[str, Any]:
    """GuestMemory's sample fields: the view's sample once observed, else as they were."""
    if view is not None and view.new_sample:
        return {'sampled_at': view.sampled_at, 'sample_demand_kib': view.demand_bound_kib,
                'demand_rate_kib_s': view.demand_rate_kib_s,
                'trend_rate_kib_s': view.trend_rate_kib_s, 'actual_high_kib': view.actual_kib}
    if remembered is None:
        return {}
    high = remembered.actual_high_kib
    if view is not None and (high is None or view.actual_kib > high):
        high = view.actual_kib
    return {'sampled_at': remembered.sampled_at,
            'sample_demand_kib': remembered.sample_demand_kib,
            'demand_rate_kib_s': remembered.demand_rate_kib_s,
            'trend_rate_kib_s': remembered.trend_rate_kib_s, 'actual_high_kib': high}


def _ignored_decision(item: Classified, remembered: GuestMemory | None) -> Decision:
    """Guests the agent does not manage; one it shrank earlier gets its memory back.

    So does a guest whose memory cannot be ballooned (a device pins it, as a
    vGPU or a vDPA port hot-plugged after the agent shrank it, or one that
    arrived shrunk): whoever shrank it, its balloon holds memory the host
    cannot use, and deflating is always allowed. Each is asked once; a guest
    without a balloon device is at its full size and never asked.
    """
    facts = item.sample.facts
    assert item.ignore_reason is not None
    running = item.sample.run_state is RunState.RUNNING
    owed = remembered is not None and remembered.shrunk and facts.unballoonable is None
    if facts.unballoonable is not None and facts.balloon_device:
        actual = item.sample.stats.actual_kib
        asked = remembered is not None and remembered.target_kib == facts.max_memory_kib
        owed = actual is not None and not asked and \
            actual < facts.max_memory_kib - SETTLE_TOLERANCE_KIB
    if owed and running:
        return Decision(facts.uuid, facts.name, Action.GROW, facts.max_memory_kib,
                        (('restoring full memory {} MiB: {}', facts.max_memory_kib,
                          item.ignore_reason),))
    return Decision(facts.uuid, facts.name, Action.IGNORE, None, (('{}', item.ignore_reason),))
