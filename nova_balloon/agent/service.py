"""nova-balloon-agent's oslo.service: the control cycle as a periodic task.

Signals (the launcher runs the agent in its main process, ``no_fork``):
SIGTERM stops the agent after its cycle, restoring guests with
``restore_on_stop``; SIGHUP reloads, between two cycles, the mutable options
(oslo.log's ``debug``, for one) and the flavor policy file, instead of the
threading backend's exit from the middle of a cycle.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import service

from nova_balloon import flavor_policy, policies
from nova_balloon.agent import state
from nova_balloon.capacity.keeper import HistoryKeeper
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import Controller, CycleReport, tune_collector
from nova_balloon.metrics import exporter as metrics_exporter
from nova_balloon.notifications import Notifier
from nova_balloon.placement import agent as placement_ratio
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB
from nova_balloon.virt.libvirt import driver as libvirt_driver

LOG = logging.getLogger(__name__)

# Seconds kept, before oslo.service's graceful_shutdown_timeout, for the end
# of a stop once restoring guests is cut short.
RESTORE_MARGIN_S = 5.0


class BalloonAgent(service.Service):
    """Runs a control cycle every ``[balloon] interval`` seconds."""

    def __init__(self, conf: cfg.ConfigOpts):
        super().__init__()
        self.conf = conf
        tune_collector(conf.balloon.gc_threshold)
        self.started_at = time.time()
        self.cycles = 0
        self._stopping = threading.Event()
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._wake = threading.Event()
        self._reload = threading.Event()
        # The process's exit status once it stops by itself (failed cycles).
        self.exit_code = 0
        # uuid -> (run id, balloon KiB) of the last balloon size event.
        self._last_actual: dict[str, tuple[str, int]] = {}
        self._loop_thread: threading.Thread | None = None
        previous = state.read(conf.balloon.state_file)
        memory = state.adopted_memory(previous)
        if memory:
            LOG.info('Adopting the targets of %d guests from %s', len(memory),
                     conf.balloon.state_file)
        self.driver = libvirt_driver.LibvirtDriver(conf.libvirt.connection_uri)
        self.controller = Controller(
            self.driver, policies.load(conf.balloon.policy, conf),
            planner.Settings.from_conf(conf.balloon),
            flavor_policy.PolicyFile(conf.balloon.flavor_policy_file),
            dry_run=conf.balloon.dry_run, memory=memory)
        # Prometheus metrics, when [metrics] listen names an address.
        self.metrics = metrics_exporter.start(conf)
        # Notifications of state changes, when [oslo_messaging_notifications] driver is set.
        self.notifier = Notifier(conf)
        self.capacity = HistoryKeeper.from_conf(conf)

    def start(self) -> None:
        super().start()
        LOG.info('nova-balloon-agent starting: policy %s, interval %d s, stats period %d s, '
                 'libvirt %s%s', self.conf.balloon.policy, self.conf.balloon.interval,
                 self.conf.balloon.stats_period, self.driver.uri,
                 ', DRY RUN' if self.conf.balloon.dry_run else '')
        self.notifier.agent_started()
        libvirt_driver.start_event_loop()
        self.driver.on_balloon_change = self._balloon_changed
        # start() runs in the main thread, after the launcher set its signal
        # handlers: its SIGHUP handler would exit from the middle of a cycle.
        signal.signal(signal.SIGHUP, self._hangup)
        self._loop_thread = threading.Thread(target=self._loop, name='balloon-cycle',
                                             daemon=True)
        self._loop_thread.start()
        # [placement_ratio]: Placement's MEMORY_MB ratio from the history, in its own thread.
        self.placement_ratio = placement_ratio.start(
            self.conf, self.capacity, self._stopping,
            self.metrics.registry if self.metrics is not None else None,
            self.notifier.placement_ratio_changed)

    def _loop(self) -> None:
        """A cycle every interval, sooner when a guest needs it.

        While a guest is short of free memory the cycle runs at the fast stats
        period, and a guest that deflates its balloon on OOM wakes it at once.
        """
        while not self._stopping.is_set():
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            report = self.run_cycle()
            if self.controller.failed_cycles >= self.conf.balloon.max_failed_cycles:
                LOG.error('%d control cycles failed in a row ([balloon] max_failed_cycles): '
                          'exiting with status 1 so that the service manager restarts the '
                          'agent', self.controller.failed_cycles)
                self.exit_code = 1
                self._stopping.set()
                return
            closely = report is not None and report.plan is not None and \
                report.plan.watching_closely
            wait = self.conf.balloon.fast_stats_period if closely else \
                self.conf.balloon.interval
            self._wake.wait(min(wait, self.conf.balloon.interval))
            self._wake.clear()

    def _hangup(self, signo: int, frame: FrameType | None) -> None:
        """SIGHUP: reload between two cycles, never in the middle of one."""
        self._reload.set()
        self._wake.set()

    def reload(self) -> None:
        """Re-read the config files' mutable options and the flavor policy file.

        oslo.config applies the mutable options (and oslo.log's hook, the log
        level); the others need a restart and it logs each one that changed.
        The flavor policy file is read again even if its time stamp did not
        change; a file that cannot be used leaves the policies in force.
        """
        LOG.info('SIGHUP: reloading the configuration files and the flavor policy file')
        try:
            self.conf.mutate_config_files()
        except Exception:  # a bad file must not end the agent
            LOG.warning('SIGHUP: configuration files not reloaded', exc_info=True)
        path = self.conf.balloon.flavor_policy_file
        if not path:
            return
        try:
            with open(path, encoding='utf-8') as f:
                flavors = flavor_policy.parse_policy_file(f.read(), path)
        except (OSError, UnicodeDecodeError, flavor_policy.PolicyFileError) as exc:
            LOG.warning('SIGHUP: flavor policy file unusable, keeping the policies in '
                        'force: %s', exc)
            return
        fresh = flavor_policy.PolicyFile(path)
        fresh.flavors()
        self.controller.policy_file = fresh
        LOG.info('SIGHUP: flavor policy file %s re-read: %d flavors', path, len(flavors))

    def _balloon_changed(self, uuid: str, actual_kib: int, run_id: str) -> None:
        """On libvirt's event thread: wake the loop if the guest deflated on OOM.

        A balloon that grows while above its target was deflated by the guest
        itself (autodeflate); one that shrinks toward its target is just moving.
        Sizes and targets of another run of the domain compare with nothing:
        a new run's balloon starts at full size.
        """
        last, self._last_actual[uuid] = self._last_actual.get(uuid), (run_id, actual_kib)
        before = last[1] if last is not None and last[0] == run_id else None
        remembered = self.controller.memory.get(uuid)
        if before is None or actual_kib <= before or remembered is None or \
                remembered.run_id not in (None, run_id) or remembered.target_kib is None or \
                actual_kib <= remembered.target_kib + SETTLE_TOLERANCE_KIB:
            return
        if self.metrics is not None:
            self.metrics.oom_deflated(uuid)
        LOG.info('Guest %s deflated its balloon to %d MiB, above its target %d MiB: '
                 'running a cycle now', uuid, actual_kib // 1024,
                 remembered.target_kib // 1024)
        self._wake.set()

    def run_cycle(self) -> CycleReport | None:
        try:
            report = self.controller.run_cycle()
        except Exception:
            # A bug outside planning (which the controller's safe mode covers):
            # counted as a failed cycle, logged at ERROR the first time.
            self.controller.failed_cycles += 1
            if self.controller.failed_cycles == 1:
                LOG.exception('Control cycle failed; balloons stay as they are')
            else:
                LOG.warning('Control cycle failed again (%d in a row)',
                            self.controller.failed_cycles, exc_info=True)
            return None
        self.cycles += 1
        if self.capacity is not None and report.plan is not None:
            self.capacity.observe(report.plan)
        if self.metrics is not None:
            self.metrics.observe(report, self.driver.calls, time.time())
        known = self.controller.memory
        self._last_actual = {u: a for u, a in self._last_actual.items() if u in known}
        self._write_state(report, running=True)
        self.notifier.cycle(report)
        return report

    def _write_state(self, report: CycleReport | None, running: bool) -> None:
        record: dict[str, Any] = {
            'pid': os.getpid(),
            'running': running,
            'started_at': self.started_at,
            'updated_at': time.time(),
            'interval_s': self.conf.balloon.interval,
            'policy': self.conf.balloon.policy,
            'dry_run': self.conf.balloon.dry_run,
            'libvirt_uri': self.driver.uri,
            'outage': report.outage if report else None,
            'cycles': self.cycles,
            'libvirt_calls': self.driver.calls,
            'cycle_ms': round(report.duration_s * 1000, 1) if report else None,
            # Without a plan (an outage, or stopping), keep the last rows.
            'guests': (state.guest_rows(report.plan) if report and report.plan
                       else (state.read(self.conf.balloon.state_file) or {}).get('guests', [])),
            'memory': state.memory_record(self.controller.memory),
        }
        try:
            state.write(self.conf.balloon.state_file, record)
        except OSError as exc:
            LOG.warning('Cannot write the state file %s: %s', self.conf.balloon.state_file,
                        exc)

    def wait(self) -> None:
        """Block the main thread until stopped; it must stay free for signals."""
        while not self._stopping.wait(1):
            pass

    def stop(self, graceful: bool = False) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        LOG.info('nova-balloon-agent stopping')
        self._stopping.set()
        self._wake.set()
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join()
        restored: dict[str, int] = {}
        if self.conf.balloon.restore_on_stop and not self.conf.balloon.dry_run:
            restored = self.controller.restore_all(self.conf.balloon.restore_mb_per_second,
                                                   self._restore_deadline())
            LOG.info('Restored %d guests to their full memory', len(restored))
        self._write_state(None, running=False)
        self.notifier.agent_stopped(restored)
        super().stop(graceful)

    def _restore_deadline(self) -> float | None:
        """Restoring on stop ends before oslo.service's graceful_shutdown_timeout.

        Past that timeout the launcher ends the process mid-restore; stopping
        first leaves time to write the state file and log who is still owed.
        """
        try:
            timeout = self.conf.graceful_shutdown_timeout
        except cfg.NoSuchOptError:
            return None
        if not timeout:
            return None
        return self.controller.clock() + max(1.0, timeout - RESTORE_MARGIN_S)
