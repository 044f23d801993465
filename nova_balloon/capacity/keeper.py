"""The agent's side of the capacity history: a minute per minute, kept on disk.

Nothing here may stop or slow the agent: a history that cannot be written
costs a warning (once until it can be written again), never a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from oslo_log import log as logging

from nova_balloon.capacity import history, record
from nova_balloon.conf import capacity as capacity_conf
from nova_balloon.controller.planner import Plan
from nova_balloon.safety import SafetyLimits

LOG = logging.getLogger(__name__)


class HistoryKeeper:
    """Folds each cycle's plan into the current minute and appends finished minutes."""

    def __init__(self, path: str, days: float, reserved_mb: int, limits: SafetyLimits,
                 clock: Callable[[], float] = time.time):
        self.file = history.HistoryFile(path, days)
        self.reserved_mb = reserved_mb
        self.limits = limits
        self.clock = clock
        self.recorder = record.MinuteRecorder()
        self._failing = False

    @classmethod
    def from_conf(cls, conf: Any) -> HistoryKeeper | None:
        """None when ``[capacity] record_history`` is off.

        The group is registered here too (a no-op on the agent's own
        ConfigOpts), so that a ConfigOpts made without it gets the defaults.
        """
        capacity_conf.register_opts(conf)
        if not conf.capacity.record_history:
            return None
        return cls(conf.capacity.history_file, conf.capacity.history_days,
                   conf.reserved_host_memory_mb, SafetyLimits.from_conf(conf.balloon))

    def observe(self, plan: Plan) -> None:
        minute = record.minute_of_plan(plan, self.clock(), self.reserved_mb, self.limits)
        done = self.recorder.add(minute) if minute is not None else None
        if done is None:
            return
        try:
            self.file.append(done)
        except OSError as exc:
            if not self._failing:
                LOG.warning('Cannot write the capacity history %s: %s (the agent goes on; '
                            'recommend has no new minutes)', self.file.path, exc)
            self._failing = True
            return
        if self._failing:
            LOG.info('Capacity history %s written again', self.file.path)
        self._failing = False
