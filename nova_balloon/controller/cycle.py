"""The thin shell around the planner: collect, plan, apply, remember, report."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import threading
import time
from collections.abc import Callable, Iterator

from oslo_log import log as logging

from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import HOLD, IGNORE, Action, Decision, HostSnapshot, mib
from nova_balloon.policies import Policy
from nova_balloon.virt.driver import Driver, DriverUnavailable, GuestActionFailed

LOG = logging.getLogger(__name__)


# The young generation's collection threshold, in net new objects: Python's
# default is 700; the agent's grows with its guests.
YOUNG_GENERATION_MIN = 10_000
YOUNG_OBJECTS_PER_GUEST = 20


def _size_collector(guests: int) -> None:
    """Young collections every few cycles at most, however many guests.

    A cycle replaces a few records per guest with new ones, and reference
    counting frees the old. At Python's default threshold the new ones alone
    set off a young collection as almost every cycle ended (about 1 ms per
    1,000 guests), which found nothing to free.
    """
    young, *older = gc.get_threshold()
    wanted = max(YOUNG_GENERATION_MIN, YOUNG_OBJECTS_PER_GUEST * guests)
    if young != wanted:
        gc.set_threshold(wanted, *older)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a cycle runs.

    A cycle allocates dozens of objects per guest, all freed by reference
    counting. With the collector on, they set off collections whose full
    passes scan every object the agent holds, so that the cost per guest grew
    with the number of guests. The collector catches up once the cycle ends.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclasses.dataclass(frozen=True)
class CycleReport:
    """What one cycle did; the agent publishes it for `nova-balloon status`."""

    plan: planner.Plan | None
    applied: dict[str, int]
    errors: dict[str, str]
    outage: str | None
    duration_s: float


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
        self._periods_logged: set[str] = set()
        self._memo = planner.Memo()

    def run_cycle(self) -> CycleReport:
        with self._lock, _collector_paused():
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
        _size_collector(len(collection.samples))

        host = HostSnapshot(collection.host_total_kib, collection.host_available_kib,
                            started)
        plan = planner.plan(host, collection.samples, self.policy,
                            self.policy_file.flavors(), self.memory, self.settings,
                            self._memo)
        self._log_host(plan, host)
        applied, errors = self._apply(plan, host)
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

    def _apply(self, plan: planner.Plan, host: HostSnapshot) -> tuple[dict[str, int],
                                                                      dict[str, str]]:
        applied: dict[str, int] = {}
        errors: dict[str, str] = {}
        holds_logged = LOG.isEnabledFor(logging.DEBUG)
        for decision in plan.decisions:
            if decision.action is IGNORE:
                self._log_ignored(decision, plan)
                continue
            if self._ignore_reasons:
                self._ignore_reasons.pop(decision.uuid, None)
            if decision.action is HOLD:
                # Most guests hold: not even a call for a line not logged.
                if holds_logged:
                    self._log(decision, plan, host)
                continue
            self._log(decision, plan, host)
            if self.dry_run:
                continue
            assert decision.target_kib is not None
            try:
                self.driver.set_target(decision.uuid, decision.target_kib)
                applied[decision.uuid] = decision.target_kib
            except (GuestActionFailed, DriverUnavailable) as exc:
                LOG.info('Guest %s (%s): target %s MiB not applied: %s', decision.name,
                         decision.uuid, mib(decision.target_kib), exc)
                errors[decision.uuid] = str(exc)
        return applied, errors

    def _log_host(self, plan: planner.Plan, host: HostSnapshot) -> None:
        if plan.host_critical and not self._host_critical:
            LOG.warning('Host critically short of memory: %s MiB available of %s MiB, below '
                        '[balloon] host_critical_free_mb (%s MiB); reclaiming up to %d times '
                        'faster, never below floors', mib(host.available_kib),
                        mib(host.total_kib), mib(self.settings.host_critical_kib),
                        planner.CRITICAL_SHRINK_FACTOR)
        elif self._host_critical and not plan.host_critical:
            LOG.info('Host memory no longer critical: %s MiB available',
                     mib(host.available_kib))
        self._host_critical = plan.host_critical

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

    def restore_all(self) -> dict[str, int]:
        """Give every guest the agent shrank its full memory back (on stop)."""
        with self._lock:
            restored: dict[str, int] = {}
            try:
                collection = self.driver.collect()
            except DriverUnavailable as exc:
                LOG.warning('Cannot restore guests on stop, hypervisor unreachable: %s', exc)
                return restored
            for sample in collection.samples:
                uuid = sample.facts.uuid
                remembered = self.memory.get(uuid)
                if remembered is None or not remembered.shrunk:
                    continue
                ceiling = sample.facts.max_memory_kib
                try:
                    self.driver.set_target(uuid, ceiling)
                except (GuestActionFailed, DriverUnavailable) as exc:
                    LOG.warning('Guest %s (%s): not restored on stop: %s',
                                sample.facts.name, uuid, exc)
                    continue
                restored[uuid] = ceiling
                self.memory[uuid] = planner.GuestMemory(ceiling, sample.stats.actual_kib,
                                                        False)
                LOG.info('Guest %s (%s): restored to its full %s MiB on stop',
                         sample.facts.name, uuid, mib(ceiling))
            return restored
