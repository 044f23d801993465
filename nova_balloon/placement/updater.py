"""The Placement ratio mode's shell: once per interval, advice in, guard rails, one PUT.

Everything it decides, ``guard.decide`` and ``advise`` decide; this module
does the I/O around them: the capacity history, the hypervisor hostname,
Placement (through ``PlacementClient``), the clock and the state file that
keeps the last change's time across restarts. It runs in its own thread, so
a slow Placement never delays a control cycle, and nothing it meets (no
Placement, no provider, a refused write) stops the agent: it logs why and
tries again at the next interval.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable

import libvirt
from oslo_config import cfg
from oslo_log import log as logging

from nova_balloon.capacity.advice import advise
from nova_balloon.capacity.history import History
from nova_balloon.conf import placement_ratio as placement_ratio_conf
from nova_balloon.placement import guard
from nova_balloon.placement.client import (
    GenerationConflict,
    PlacementClient,
    PlacementError,
    PlacementRefused,
    load_adapter,
)

LOG = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600


def nova_overwrites(conf: cfg.ConfigOpts) -> str | None:
    """Why nova-compute would undo the agent's ratio, or None when it leaves it alone.

    nova.virt.driver.ComputeDriver._get_allocation_ratios (used by the
    libvirt driver's update_provider_tree at every resource update) takes
    ``[DEFAULT] ram_allocation_ratio`` when it is set and not 0.0, and the
    ratio already in Placement otherwise (``initial_ram_allocation_ratio``
    only for a new inventory).
    """
    configured = conf.ram_allocation_ratio
    if not configured:
        return None
    return (f'[DEFAULT] ram_allocation_ratio = {configured:g} in nova-compute\'s config: '
            f'nova-compute writes it into Placement\'s MEMORY_MB inventory at every resource '
            f'update, so any ratio set here would be undone; remove the option (Nova then '
            f'keeps the ratio in Placement) to let [placement_ratio] enabled act')


def libvirt_hostname(uri: str | None) -> str:
    """libvirt's getHostname(), the name nova-compute's libvirt driver gives the node.

    The ratio mode's only libvirt call, on a read-only connection of its own
    (the agent's driver has no such call), made when the name is needed.
    """
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as exc:
        raise PlacementError(f'cannot learn the hypervisor hostname from libvirt {uri}: '
                             f'{exc}; set [placement_ratio] hypervisor_hostname') from exc
    try:
        return str(conn.getHostname())
    finally:
        conn.close()


@dataclasses.dataclass(frozen=True, slots=True)
class LastChange:
    """The mode's last change of the ratio, as kept in its state file."""

    provider: str
    at_s: float
    from_ratio: float
    to_ratio: float


def read_last_change(path: str) -> LastChange | None:
    """The last change recorded in ``path``; None without one (a bad file is warned of)."""
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
        return LastChange(str(record['provider']), float(record['at_s']),
                          float(record['from_ratio']), float(record['to_ratio']))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        LOG.warning('[placement_ratio] state_file %s unusable (%s): the time of the last '
                    'change is unknown, so the next change is not held back', path, exc)
        return None


def write_last_change(path: str, change: LastChange) -> None:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    temporary = path + '.new'
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(dataclasses.asdict(change), f)
    os.replace(temporary, path)


RatioChanged = Callable[[str, float, float, float | None, float, float, str], None]


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one look at the advice did (for the log, the tests and the caller)."""

    # 'set', 'would_set' (dry run), 'unchanged' or 'failed'.
    action: str
    reason: str
    # The ratio read from Placement, and the one set (or, dry, that would be).
    ratio_before: float | None = None
    ratio_after: float | None = None
    # The advice's ratio; None without enough history (or before it was worked out).
    advised: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    limits: guard.Limits
    window_s: float
    risk: float
    dry_run: bool
    state_file: str
    # None: libvirt's getHostname() on libvirt_uri.
    hypervisor_hostname: str | None
    libvirt_uri: str | None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Settings:
        """Raises placement_ratio_conf.InvalidOptions naming what does not fit."""
        placement_ratio_conf.check(conf)
        group = conf.placement_ratio
        return cls(limits=guard.Limits(min_ratio=group.min_ratio, max_ratio=group.max_ratio,
                                       max_step=group.max_step, hysteresis=group.hysteresis,
                                       interval_s=group.interval),
                   window_s=group.window_hours * SECONDS_PER_HOUR,
                   risk=group.risk_percent / 100,
                   dry_run=group.dry_run or conf.balloon.dry_run,
                   state_file=group.state_file,
                   hypervisor_hostname=group.hypervisor_hostname,
                   libvirt_uri=conf.libvirt.connection_uri)


class RatioUpdater:
    """One look at the advice per call of ``update``; ``start`` calls it every interval."""

    def __init__(self, client: PlacementClient, settings: Settings,
                 history: Callable[[], History], clock: Callable[[], float] = time.time):
        self.client = client
        self.settings = settings
        self.history = history
        self.clock = clock
        self._provider_uuid: str | None = None
        self._provider_name: str | None = None
        self._thread: threading.Thread | None = None
        # For the metrics: the last look's outcome, and counts since start.
        self.last_outcome: Outcome | None = None
        self.changes = 0
        self.failures = 0
        # Called after each change set in Placement, with the provider's name,
        # the ratio before and after, the advised one, the advice's window (s)
        # and risk, and why: the agent's notifications.
        self.on_change: RatioChanged | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts,
                  history: Callable[[], History]) -> RatioUpdater | None:
        """The mode as configured, or None when it is off or must not act (logged why)."""
        try:
            for opt in placement_ratio_conf.placement_ratio_opts:
                getattr(conf.placement_ratio, opt.dest)
        except (cfg.ConfigFileValueError, ValueError) as exc:
            LOG.warning('The agent will not set the ratio in Placement: invalid value for '
                        '[placement_ratio] %s: %s', opt.name, exc)
            return None
        if not conf.placement_ratio.enabled:
            return None
        refusal = nova_overwrites(conf)
        if refusal:
            LOG.warning('[placement_ratio] enabled, but the agent will not set the ratio: %s',
                        refusal)
            return None
        try:
            settings = Settings.from_conf(conf)
            client = PlacementClient(load_adapter(conf))
        except (placement_ratio_conf.InvalidOptions, PlacementError) as exc:
            LOG.warning('[placement_ratio] enabled, but the agent will not set the ratio: %s',
                        exc)
            return None
        return cls(client, settings, history)

    def provider_name(self) -> str:
        if self._provider_name is None:
            self._provider_name = self.settings.hypervisor_hostname or \
                libvirt_hostname(self.settings.libvirt_uri)
        return self._provider_name

    def update(self) -> Outcome:
        """Look at the advice once and set the ratio if the guard rails allow it."""
        try:
            outcome = self._update()
        except PlacementError as exc:
            outcome = Outcome('failed', str(exc))
            # The provider may have been re-created; look it up again next time.
            self._provider_uuid = None
            LOG.warning('Placement ratio: nothing changed: %s', exc)
        self.last_outcome = outcome
        self.changes += outcome.action == 'set'
        self.failures += outcome.action == 'failed'
        return outcome

    def _update(self) -> Outcome:
        now = self.clock()
        settings = self.settings
        advice = advise(self.history(), now, settings.window_s, settings.risk)
        for line in advice.arithmetic:
            LOG.debug('Placement ratio advice: %s', line)
        if advice.ratio is None:
            LOG.info('Placement ratio: no advice, nothing changed: %s', advice.reason)
            return Outcome('unchanged', advice.reason)
        name = self.provider_name()
        if self._provider_uuid is None:
            self._provider_uuid = self.client.find_provider(name)
        last = read_last_change(settings.state_file)
        last_at = last.at_s if last is not None and last.provider == name else None
        for attempt in (1, 2):
            memory = self.client.read_memory(self._provider_uuid, name)
            before = memory.inventory.allocation_ratio
            if attempt == 1 and last is not None and last.provider == name and \
                    round(before, 2) != round(last.to_ratio, 2):
                LOG.warning('Placement ratio of %s: MEMORY_MB allocation_ratio is %.2f, not '
                            'the %.2f the agent set at %s: another writer changed it (an '
                            'operator, or nova-compute with [DEFAULT] ram_allocation_ratio '
                            'in a config file the agent does not read); going on from %.2f',
                            name, before, last.to_ratio,
                            time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(last.at_s)),
                            before)
            decision = guard.decide(memory.inventory, advice.ratio, settings.limits,
                                    last_at, now)
            if decision.ratio is None:
                LOG.info('Placement ratio of %s: unchanged at %.2f: %s', name, before,
                         decision.reason)
                return Outcome('unchanged', decision.reason, before, before, advice.ratio)
            if settings.dry_run:
                LOG.info('Placement ratio of %s: DRY RUN, would set MEMORY_MB '
                         'allocation_ratio %s (%s)', name, decision.reason, advice.reason)
                return Outcome('would_set', decision.reason, before, decision.ratio,
                               advice.ratio)
            try:
                self.client.set_memory_ratio(memory, decision.ratio)
            except GenerationConflict as exc:
                if attempt == 1:
                    LOG.info('Placement ratio of %s: %s; reading it again', name, exc)
                    continue
                raise
            except PlacementRefused as exc:
                LOG.warning('Placement ratio of %s: Placement refused %.2f, the ratio stays '
                            '%.2f: %s', name, decision.ratio, before, exc)
                return Outcome('failed', str(exc), before, before, advice.ratio)
            break
        try:
            write_last_change(settings.state_file,
                              LastChange(name, now, before, decision.ratio))
        except OSError as exc:
            LOG.warning('Cannot write [placement_ratio] state_file %s: %s',
                        settings.state_file, exc)
        LOG.info('Placement ratio of %s: set MEMORY_MB allocation_ratio %s (%s)', name,
                 decision.reason, advice.reason)
        if self.on_change is not None:
            self.on_change(name, before, decision.ratio, advice.ratio, settings.window_s,
                           settings.risk, decision.reason)
        return Outcome('set', decision.reason, before, decision.ratio, advice.ratio)

    def start(self, stopping: threading.Event) -> None:
        """Update now and then every interval in a thread of its own, until ``stopping``."""
        def loop() -> None:
            while not stopping.is_set():
                try:
                    self.update()
                except Exception:  # a bug here must not end the agent's other work
                    LOG.exception('Placement ratio: update failed')
                stopping.wait(self.settings.limits.interval_s)

        LOG.info('Placement ratio mode on: every %g s, ratio within [%g, %g], steps of at '
                 'most %g, hysteresis %g, advice over %g h at %g %% risk%s',
                 self.settings.limits.interval_s, self.settings.limits.min_ratio,
                 self.settings.limits.max_ratio, self.settings.limits.max_step,
                 self.settings.limits.hysteresis, self.settings.window_s / SECONDS_PER_HOUR,
                 100 * self.settings.risk, ', DRY RUN' if self.settings.dry_run else '')
        self._thread = threading.Thread(target=loop, name='placement-ratio', daemon=True)
        self._thread.start()
