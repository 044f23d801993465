"""nova-balloon-agent's oslo.service: the control cycle as a periodic task."""

from __future__ import annotations

import os
import time
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import service

from nova_balloon import flavor_policy, policies
from nova_balloon.agent import state
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import Controller, CycleReport
from nova_balloon.virt.libvirt import driver as libvirt_driver

LOG = logging.getLogger(__name__)


class BalloonAgent(service.Service):
    """Runs a control cycle every ``[balloon] interval`` seconds."""

    def __init__(self, conf: cfg.ConfigOpts):
        super().__init__()
        self.conf = conf
        self.started_at = time.time()
        self.cycles = 0
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

    def start(self) -> None:
        super().start()
        LOG.info('nova-balloon-agent starting: policy %s, interval %d s, stats period %d s, '
                 'libvirt %s%s', self.conf.balloon.policy, self.conf.balloon.interval,
                 self.conf.balloon.stats_period, self.driver.uri,
                 ', DRY RUN' if self.conf.balloon.dry_run else '')
        libvirt_driver.start_event_loop()
        self.tg.add_timer_args(self.conf.balloon.interval, self.run_cycle,
                               initial_delay=0, stop_on_exception=False)

    def run_cycle(self) -> None:
        try:
            report = self.controller.run_cycle()
        except Exception:
            # A bug, not a routine event: keep the service alive for the next cycle.
            LOG.exception('Control cycle failed; balloons stay as they are')
            return
        self.cycles += 1
        self._write_state(report, running=True)

    def _write_state(self, report: CycleReport | None, running: bool) -> None:
        previous = state.read(self.conf.balloon.state_file) or {}
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
            'cycle_ms': round(report.duration_s * 1000, 1) if report else None,
            'guests': (state.guest_rows(report.plan) if report and report.plan
                       else previous.get('guests', [])),
            'memory': state.memory_record(self.controller.memory),
        }
        try:
            state.write(self.conf.balloon.state_file, record)
        except OSError as exc:
            LOG.warning('Cannot write the state file %s: %s', self.conf.balloon.state_file,
                        exc)

    def stop(self, graceful: bool = False) -> None:
        LOG.info('nova-balloon-agent stopping')
        self.tg.stop_timers(wait=True)
        if self.conf.balloon.restore_on_stop and not self.conf.balloon.dry_run:
            restored = self.controller.restore_all()
            LOG.info('Restored %d guests to their full memory', len(restored))
        self._write_state(None, running=False)
        super().stop(graceful)
