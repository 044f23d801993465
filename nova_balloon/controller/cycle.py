"""The thin shell around the planner: collect, plan, apply, remember, report."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections.abc import Callable

from oslo_log import log as logging

from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import (
    KIB_PER_MIB,
    Action,
    Decision,
    GuestSample,
    HostSnapshot,
    RunState,
    mib,
)
from nova_balloon.policies import Policy
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB
from nova_balloon.virt.driver import Driver, DriverUnavailable, GuestActionFailed

LOG = logging.getLogger(__name__)


def tune_collector(young_threshold: int) -> None:
    """Set the young generation's collection threshold, once where the process starts.

    ``[balloon] gc_threshold`` says why; 0 leaves Python's default.
    """
    if young_threshold:
        gc.set_threshold(young_threshold, *gc.get_threshold()[1:])


@dataclasses.dataclass(frozen=True)
class CycleReport:
    """What one cycle did; the agent publishes it for `nova-balloon status`."""

    plan: planner.Plan | None
    applied: dict[str, int]
    errors: dict[str, str]
    outage: str | None
    duration_s: float
    # Why planning or applying failed (a bug); the cycle ran in grow-only
    # safe mode instead.
    failure: str | None = None


def owes_memory(sample: GuestSample, manage_unmanaged_guests: bool,
                target_kib: int | None = None) -> str | None:
    """Why the guest is not owed its memory back now, or None when it is.

    From live state: a running guest with a balloon below its ceiling is
    owed, whoever shrank it (this agent, an earlier one, or the source host
    of a migration). So is one whose balloon is still at its ceiling but
    which the agent last set to a lower ``target_kib``: a shrink ordered
    just before a stop is still under way, and would settle below the
    ceiling with no agent left. Guests that are migrating or in post-copy are
    not touched, nor guests outside Nova unless the agent manages them.
    """
    facts = sample.facts
    actual = sample.stats.actual_kib
    if actual is None:
        return facts.unballoonable or 'no balloon size reported'
    full = facts.max_memory_kib - SETTLE_TOLERANCE_KIB
    if actual >= full and (target_kib is None or target_kib >= full):
        return 'at its full memory'
    if sample.run_state is not RunState.RUNNING:
        return f'not running ({sample.run_state.value})'
    if facts.nova is None and not manage_unmanaged_guests:
        return 'no Nova metadata (see [balloon] manage_unmanaged_guests)'
    return None


class Pacer:
    """At most ``rate_kib_s`` of memory given back per second, on average.

    The first guest goes at once; each next one waits until the memory
    given so far fits the rate. A guest owed more than a second's worth
    still goes in one step: a balloon moves in one call.
    """

    def __init__(self, rate_kib_s: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate_kib_s = rate_kib_s
        self.clock = clock
        self.sleep = sleep
        self._next_at: float | None = None

    def wait(self, deadline: float | None = None) -> bool:
        """Wait for the next turn; False when it comes after the deadline."""
        now = self.clock()
        if self._next_at is not None and self._next_at > now:
            if deadline is not None and self._next_at > deadline:
                return False
            self.sleep(self._next_at - now)
        return True

    def gave(self, kib: int) -> None:
        start = max(self.clock(), self._next_at or 0.0)
        self._next_at = start + kib / self.rate_kib_s


def restore_guests(driver: Driver, samples: list[GuestSample], pacer: Pacer,
                   deadline: float | None = None,
                   why: str = 'restore') -> tuple[dict[str, int], dict[str, str]]:
    """Set each guest's balloon to its ceiling, paced, neediest first.

    Returns the targets set and, per guest not restored, why (a failed call,
    or the deadline).
    """
    restored: dict[str, int] = {}
    left: dict[str, str] = {}

    def free(sample: GuestSample) -> int:
        return sample.stats.usable_kib if sample.stats.usable_kib is not None else -1

    for sample in sorted(samples, key=free):
        facts = sample.facts
        if not pacer.wait(deadline):
            left[facts.uuid] = 'out of time'
            continue
        ceiling = facts.max_memory_kib
        try:
            driver.set_target(facts.uuid, ceiling)
        except (GuestActionFailed, DriverUnavailable) as exc:
            LOG.warning('Guest %s (%s): not restored (%s): %s', facts.name, facts.uuid,
                        why, exc)
            left[facts.uuid] = str(exc)
            continue
        given = ceiling - (sample.stats.actual_kib or ceiling)
        pacer.gave(given)
        restored[facts.uuid] = ceiling
        LOG.info('Guest %s (%s): restored from %s to its full %s MiB (%s, %s MiB/s)',
                 facts.name, facts.uuid, mib(sample.stats.actual_kib), mib(ceiling), why,
                 mib(pacer.rate_kib_s))
    if left:
        LOG.warning('%d guest(s) not restored (%s): %s; `nova-balloon restore --all` gives '
                    'them their memory back', len(left), why, ', '.join(sorted(left)))
    return restored, left


class Controller:
    """Runs control cycles on one driver; thread-safe, one cycle at a time."""

    def __init__(self, driver: Driver, policy: Policy, settings: planner.Settings,
                 policy_file: PolicyFile, dry_run: bool,
                 memory: dict[str, planner.GuestMemory] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.driver = driver
        self.policy = policy
        self.settings = settings
        self.policy_file = policy_file
        self.dry_run = dry_run
        self.memory: dict[str, planner.GuestMemory] = dict(memory or {})
        self.clock = clock
        self._lock = threading.Lock()
        self._outage: str | None = None
        self._ignore_reasons: dict[str, str] = {}
        self._host_critical = False
        self._host_contended = False
        self._periods_logged: set[str] = set()
        # Consecutive cycles whose planning or applying failed.
        self.failed_cycles = 0

    def run_cycle(self) -> CycleReport:
        with self._lock:
            return self._run_cycle()

    def _run_cycle(self) -> CycleReport:
        started = self.clock()
        try:
            collection = self.driver.collect()
        except DriverUnavailable as exc:
            if self._outage is None:
                LOG.warning('Hypervisor unreachable, balloons stay as they are until it '
                            'is back: %s', exc)
            self._outage = str(exc)
            return CycleReport(None, {}, {}, self._outage, self.clock() - started)
        if self._outage is not None:
            LOG.info('Hypervisor reachable again after an outage; resuming with the '
                     'targets in force')
            self._outage = None
        host = HostSnapshot(collection.host_total_kib, collection.host_available_kib,
                            started)
        try:
            plan = planner.plan(host, collection.samples, self.policy,
                                self.policy_file.flavors(), self.memory, self.settings)
            self._log_host(plan)
            applied, errors = self._apply(plan, host)
        except Exception as exc:
            return self._safe_mode(collection.samples, started, exc)
        if self.failed_cycles:
            LOG.info('Control cycle works again after %d failed cycle(s); grow-only safe '
                     'mode ends', self.failed_cycles)
            self.failed_cycles = 0
        previous, self.memory = self.memory, plan.memory
        not_applied = set(errors)
        if self.dry_run:
            not_applied |= {d.uuid for d in plan.decisions
                            if d.action in (Action.GROW, Action.SHRINK)}
        for uuid in not_applied:
            # The guest keeps the target the agent remembered before.
            before = previous.get(uuid)
            self.memory[uuid] = self.memory[uuid]._replace(
                target_kib=before.target_kib if before else None,
                shrunk=before.shrunk if before else False,
                target_set_at=before.target_set_at if before else None)
        self._set_stats_periods(plan)
        return CycleReport(plan, applied, errors, None, self.clock() - started)

    def _safe_mode(self, samples: list[GuestSample], started: float,
                   exc: Exception) -> CycleReport:
        """A cycle that failed (a bug): grow the guests short of memory, shrink none.

        Without a plan, no guest may be shrunk; but a guest running out of
        memory must not wait for the bug to be fixed. Growing to the ceiling
        passes every safety rule (they bound shrinking only). The controller's
        memory is kept, so a later good cycle goes on from it.
        """
        self.failed_cycles += 1
        failure = f'{type(exc).__name__}: {exc}'
        if self.failed_cycles == 1:
            LOG.exception('Control cycle failed (a bug); grow-only safe mode until a cycle '
                          'works: guests with less than %s MiB free get their full memory, '
                          'none is shrunk', mib(self.settings.fast_free_kib))
        else:
            LOG.warning('Control cycle failed again (%d in a row, grow-only safe mode): %s',
                        self.failed_cycles, failure)
        short = []
        for sample in samples:
            if owes_memory(sample, self.settings.manage_unmanaged_guests) is not None:
                continue
            usable = sample.stats.usable_kib
            if usable is None or usable < self.settings.fast_free_kib:
                short.append(sample)
        applied: dict[str, int] = {}
        errors: dict[str, str] = {}
        if short and not self.dry_run:
            # Short guests cannot wait: no pacing.
            pacer = Pacer(1 << 62, self.clock)
            applied, errors = restore_guests(self.driver, short, pacer,
                                             why='safe mode, short of free memory')
            now = self.clock()
            for sample in short:
                uuid = sample.facts.uuid
                if uuid not in applied:
                    continue
                before = self.memory.get(uuid)
                if before is None:
                    self.memory[uuid] = planner.GuestMemory(applied[uuid],
                                                            sample.stats.actual_kib, False)
                else:
                    self.memory[uuid] = before._replace(target_kib=applied[uuid],
                                                        shrunk=False, target_set_at=now)
        elif short:
            LOG.info('DRY RUN, not applied: safe mode would give %d guest(s) short of free '
                     'memory their full memory', len(short))
        return CycleReport(None, applied, errors, None, self.clock() - started, failure)

    def _apply(self, plan: planner.Plan, host: HostSnapshot) -> tuple[dict[str, int],
                                                                      dict[str, str]]:
        """Apply the plan's targets: every growth before any shrink.

        Memory a shrink frees may be what a growing guest needs, but the
        balloon takes its time to inflate, while a guest short of memory
        needs its growth now.
        """
        applied: dict[str, int] = {}
        errors: dict[str, str] = {}
        holds_logged = LOG.isEnabledFor(logging.DEBUG)
        shrinks: list[Decision] = []
        for decision in plan.decisions:
            if decision.action is Action.IGNORE:
                self._log_ignored(decision, plan)
                continue
            if self._ignore_reasons:
                self._ignore_reasons.pop(decision.uuid, None)
            if decision.action is Action.HOLD:
                # Most guests hold: not even a call for a line not logged.
                if holds_logged:
                    self._log(decision, plan, host)
                continue
            self._log(decision, plan, host)
            if self.dry_run:
                continue
            if decision.action is Action.SHRINK:
                shrinks.append(decision)
            else:
                self._set_target(decision, applied, errors)
        for decision in shrinks:
            self._set_target(decision, applied, errors)
        return applied, errors

    def _set_target(self, decision: Decision, applied: dict[str, int],
                    errors: dict[str, str]) -> None:
        assert decision.target_kib is not None
        try:
            self.driver.set_target(decision.uuid, decision.target_kib)
            applied[decision.uuid] = decision.target_kib
        except (GuestActionFailed, DriverUnavailable) as exc:
            LOG.info('Guest %s (%s): target %s MiB not applied: %s', decision.name,
                     decision.uuid, mib(decision.target_kib), exc)
            errors[decision.uuid] = str(exc)

    def _log_host(self, plan: planner.Plan) -> None:
        host = plan.host
        assert host is not None
        if plan.host_critical and not self._host_critical:
            LOG.warning('Host critically short of memory: %s MiB it can count on (%s MiB '
                        'available of %s MiB, less %s MiB the guests have not touched), below '
                        '[balloon] host_critical_free_mb (%s MiB); taking memory back from '
                        'guests with some to spare, up to %d times faster, never below '
                        'floors', mib(host.free_kib), mib(host.available_kib),
                        mib(host.total_kib), mib(host.untouched_kib),
                        mib(self.settings.host_critical_kib), planner.CRITICAL_SHRINK_FACTOR)
        elif self._host_critical and not plan.host_critical:
            LOG.info('Host memory no longer critical: %s MiB it can count on',
                     mib(host.free_kib))
        self._host_critical = plan.host_critical
        if plan.host_contended and not self._host_contended:
            LOG.info('Host contended: guests short of free memory lack %s MiB, the host has '
                     '%s MiB free above [balloon] host_critical_free_mb (%s MiB); the other '
                     'guests keep [balloon] contended_headroom_percent (%g %%) of headroom, '
                     'not %g %%, and give the rest', mib(plan.lacking_kib),
                     mib(max(0, host.free_kib - self.settings.host_critical_kib)),
                     mib(self.settings.host_critical_kib),
                     self.settings.contended_headroom_percent,
                     self.settings.limits.headroom_percent)
        elif self._host_contended and not plan.host_contended:
            LOG.info('Host no longer contended: %s MiB free, guests short of free memory '
                     'lack %s MiB; every guest gets its headroom back as the host has room',
                     mib(host.free_kib), mib(plan.lacking_kib))
        self._host_contended = plan.host_contended

    def _log_ignored(self, decision: Decision, plan: planner.Plan) -> None:
        """Once per reason: a guest stays ignored cycle after cycle."""
        if self._ignore_reasons.get(decision.uuid) != decision.reason:
            item = plan.classified[decision.uuid]
            instance = item.sample.facts.nova.instance_name if item.sample.facts.nova \
                else None
            log = LOG.warning if item.misconfigured else LOG.info
            log('Guest %s (%s%s) not managed: %s', decision.name, decision.uuid,
                f', instance {instance}' if instance else '', decision.reason)
        self._ignore_reasons[decision.uuid] = decision.reason

    def _log(self, decision: Decision, plan: planner.Plan, host: HostSnapshot) -> None:
        view = plan.views.get(decision.uuid)
        figures = ''
        if view is not None:
            figures = (f'actual {mib(view.actual_kib)} MiB, usable {mib(view.usable_kib)} '
                       f'MiB, use {mib(view.demand_kib)} MiB, stats '
                       f'{"fresh" if view.stats_fresh else "stale"}, host available '
                       f'{mib(host.available_kib)} MiB; ')
        if decision.action is Action.HOLD:
            LOG.debug('Guest %s (%s): hold at %s MiB (%s%s)', decision.name, decision.uuid,
                      mib(decision.target_kib), figures, decision.reason)
            return
        LOG.info('%sGuest %s (%s): %s to %s MiB (%s%s)',
                 'DRY RUN, not applied: ' if self.dry_run else '', decision.name,
                 decision.uuid, decision.action.value, mib(decision.target_kib), figures,
                 decision.reason)

    def _set_stats_periods(self, plan: planner.Plan) -> None:
        """Guests short of free memory are polled often, the others seldom.

        One line per cycle and period: guests cross the line in numbers on a
        busy host, and each change is routine.
        """
        changed: dict[tuple[int | None, int], list[str]] = {}
        for uuid, period in plan.stats_periods.items():
            facts = plan.classified[uuid].sample.facts
            if self.dry_run:
                if uuid not in self._periods_logged:
                    LOG.info('DRY RUN, not applied: guest %s (%s): would set the balloon '
                             'stats period to %d s', facts.name, uuid, period)
                    self._periods_logged.add(uuid)
                continue
            try:
                self.driver.set_stats_period(uuid, period)
            except (GuestActionFailed, DriverUnavailable) as exc:
                LOG.info('Guest %s (%s): stats period not set: %s', facts.name, uuid, exc)
                continue
            changed.setdefault((facts.stats_period_s, period), []).append(
                f'{facts.name} ({uuid})')
        for (before, period), guests in changed.items():
            LOG.info('Balloon stats period %s -> %d s for %d guest(s): %s', before or 'none',
                     period, len(guests), ', '.join(guests))

    def _target_of(self, uuid: str) -> int | None:
        remembered = self.memory.get(uuid)
        return remembered.target_kib if remembered is not None else None

    def restore_all(self, rate_mb_s: int, deadline: float | None = None,
                    why: str = 'on stop') -> dict[str, int]:
        """Give every guest that is owed memory its full memory back, paced.

        Who is owed comes from live state (``owes_memory``), not only from
        what this agent remembers shrinking: guests shrunk by an earlier
        agent, or that arrived shrunk by migration, are owed as well.
        ``deadline`` is on the controller's clock.
        """
        with self._lock:
            try:
                collection = self.driver.collect()
            except DriverUnavailable as exc:
                LOG.warning('Cannot restore guests %s, hypervisor unreachable: %s', why, exc)
                return {}
            owed = [s for s in collection.samples
                    if owes_memory(s, self.settings.manage_unmanaged_guests,
                                   self._target_of(s.facts.uuid)) is None]
            LOG.info('Restoring %d guest(s) below their full memory (%s MiB in all) %s, at '
                     '%d MiB/s', len(owed),
                     mib(sum(s.facts.max_memory_kib - (s.stats.actual_kib or 0)
                             for s in owed)), why, rate_mb_s)
            pacer = Pacer(rate_mb_s * KIB_PER_MIB, self.clock)
            restored, _ = restore_guests(self.driver, owed, pacer, deadline, why)
            by_uuid = {s.facts.uuid: s for s in owed}
            for uuid, ceiling in restored.items():
                self.memory[uuid] = planner.GuestMemory(
                    ceiling, by_uuid[uuid].stats.actual_kib, False)
            return restored
