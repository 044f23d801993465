"""The thin part: sends what ``events`` decides with oslo.messaging, as Nova does.

``oslo_messaging.get_notification_transport(conf)`` takes
``[oslo_messaging_notifications] transport_url``, else ``[DEFAULT]
transport_url``, so a compute node's nova.conf works as it is; the
notifier's publisher is ``nova-balloon:<[DEFAULT] host>``, and its drivers,
topics and retries are ``[oslo_messaging_notifications]``'s. Notifications
are off unless ``driver`` is set, as for Nova.

Sending runs on a thread of its own through a bounded queue: a broker may be
slow, and oslo.messaging retries a lost connection forever by default
(``retry = -1``); a cycle must never wait for it. When the queue is full,
further notifications are dropped with a warning until it drains. A
notification the broker does not take is logged as one warning: oslo.messaging
swallows the error and logs it at ERROR with a traceback and the whole
payload, which ``SendFailures`` turns into that warning on the sender thread.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging as std_logging
import queue
import socket
import threading
import time
from collections.abc import Iterable, Mapping

import oslo_messaging
import oslo_messaging.opts
import pbr.version
from oslo_config import cfg
from oslo_log import log as logging

from nova_balloon.conf import balloon as balloon_conf
from nova_balloon.conf import notifications as notifications_conf
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import CycleReport
from nova_balloon.model import KIB_PER_MIB
from nova_balloon.notifications import events
from nova_balloon.safety import SafetyLimits

LOG = logging.getLogger(__name__)

NOTIFICATIONS_GROUP = 'oslo_messaging_notifications'
# Notifications waiting for the broker; beyond this they are dropped.
QUEUE_SIZE = 1000
# How long a stopping agent waits for its last notifications to leave.
CLOSE_TIMEOUT_S = 3.0


# Where oslo.messaging logs, and swallows, a failed send: its notifier and
# its messaging drivers.
OSLO_SEND_LOGGERS = ('oslo_messaging.notify.notifier', 'oslo_messaging.notify.messaging')


class SendFailures(std_logging.Filter):
    """Keeps the errors oslo.messaging logs while the sender thread sends.

    Records from other threads (another user of oslo.messaging in the
    process) pass untouched.
    """

    def __init__(self, sender: threading.Thread):
        super().__init__()
        self.sender = sender
        self.errors: list[str] = []

    def filter(self, record: std_logging.LogRecord) -> bool:
        if threading.current_thread() is not self.sender or \
                record.levelno < std_logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        self.errors.append(f'{type(exc).__name__}: {exc}' if exc else record.getMessage())
        return False


class Notifier:
    """The agent's notifications: give it the agent's ConfigOpts.

    Call ``agent_started()`` once, ``cycle(report)`` after each cycle and
    ``agent_stopped(restored)`` at the end; each sends only what changed.
    """

    def __init__(self, conf: cfg.ConfigOpts):
        balloon_conf.register_opts(conf)
        notifications_conf.register_opts(conf)
        for group, opts in oslo_messaging.opts.list_opts():
            if group == NOTIFICATIONS_GROUP:
                conf.register_opts(opts, group=group)
        self.conf = conf
        try:
            self.host: str = conf.host
        except (cfg.ConfigFileValueError, ValueError) as exc:
            self.host = socket.gethostname()
            LOG.warning('Notifications: [DEFAULT] host is invalid (%s); they name this host '
                        '%s', exc, self.host)
        self.publisher_id = events.publisher_id(self.host)
        self.limits = SafetyLimits.from_conf(conf.balloon)
        self.guests: dict[str, events.GuestState] = {}
        self.host_critical = False
        # The last cycle's plan: the figures of the guests restored on stop.
        self._last_plan: planner.Plan | None = None
        self._queue: queue.Queue[events.Event | None] = queue.Queue(QUEUE_SIZE)
        self._dropped = 0
        self._transport: oslo_messaging.Transport | None = None
        self._notifier: oslo_messaging.Notifier | None = None
        self._sender: threading.Thread | None = None
        self._failures: SendFailures | None = None
        self._connect()

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def _connect(self) -> None:
        """A notifier on the configured transport, or none (off) with the reason logged."""
        group = self.conf[NOTIFICATIONS_GROUP]
        drivers = [d for d in group.driver if d != 'noop']
        if not drivers:
            LOG.info('Notifications off: [%s] driver is not set', NOTIFICATIONS_GROUP)
            return
        known = {e.name for e in importlib.metadata.entry_points(
            group='oslo.messaging.notify.drivers')}
        unknown = sorted(set(drivers) - known)
        if unknown:
            LOG.warning('Notifications%s: [%s] driver %s unknown (oslo.messaging has %s)',
                        ' off' if set(unknown) == set(drivers) else '', NOTIFICATIONS_GROUP,
                        ', '.join(unknown), ', '.join(sorted(known)))
            drivers = [d for d in drivers if d in known]
            if not drivers:
                return
        try:
            self._transport = oslo_messaging.get_notification_transport(self.conf)
        except (oslo_messaging.MessagingException, cfg.Error, ValueError) as exc:
            LOG.warning('Notifications off: the transport URL ([%s] transport_url, else '
                        '[DEFAULT] transport_url) is unusable: %s', NOTIFICATIONS_GROUP, exc)
            return
        self._notifier = oslo_messaging.Notifier(self._transport,
                                                 publisher_id=self.publisher_id)
        self._sender = threading.Thread(target=self._send_queued, name='notifications',
                                        daemon=True)
        self._failures = SendFailures(self._sender)
        for name in OSLO_SEND_LOGGERS:
            std_logging.getLogger(name).addFilter(self._failures)
        self._sender.start()
        LOG.info('Notifications on: driver %s, topics %s, publisher %s',
                 ', '.join(drivers), ', '.join(group.topics), self.publisher_id)

    def agent_started(self) -> None:
        self.send([self._agent_event(events.EventType.AGENT_START)])

    def cycle(self, report: CycleReport | None) -> None:
        """The notifications of one cycle: guests and host that changed state.

        A cycle without a plan (hypervisor unreachable, a failed cycle)
        changes no state.
        """
        if not self.enabled or report is None or report.plan is None:
            return
        plan = report.plan
        guests = events.guest_states(plan, self.guests, self.limits)
        found = events.guest_events(self.guests, guests,
                                    functools.partial(events.guest_figures, plan), self.host)
        if plan.host is not None:
            critical_kib = self.conf.balloon.host_critical_free_mb * KIB_PER_MIB
            found += events.host_events(
                self.host_critical, plan.host_critical,
                functools.partial(events.host_figures, plan, critical_kib), self.host)
            self.host_critical = plan.host_critical
        self.guests = guests
        self._last_plan = plan
        self.send(found)

    def placement_ratio_changed(self, provider: str, ratio_before: float,
                                ratio_after: float, advised: float | None, window_s: float,
                                risk: float, reason: str) -> None:
        """The ``[placement_ratio]`` mode set the host's MEMORY_MB allocation ratio."""
        self.send([events.placement_ratio_event(self.host, provider, ratio_before,
                                                ratio_after, advised, window_s, risk,
                                                reason)])

    def agent_stopped(self, restored: Mapping[str, int]) -> None:
        """The guests restored on stop, the agent's stop, then the last sends."""
        plan = self._last_plan
        found = [] if plan is None else events.restored_on_stop(
            self.guests, restored, functools.partial(events.guest_figures, plan), self.host)
        self.send(found + [self._agent_event(events.EventType.AGENT_STOP, len(restored))])
        self.close()

    def _agent_event(self, kind: events.EventType,
                     guests_restored: int | None = None) -> events.Event:
        group = self.conf.balloon
        return events.agent_event(
            kind, self.host, pbr.version.VersionInfo('nova-balloon').version_string(),
            group.policy, group.interval, group.dry_run, group.restore_on_stop,
            guests_restored)

    def send(self, found: Iterable[events.Event]) -> None:
        """Queue the events for the sender thread; never waits for the broker."""
        if not self.enabled:
            return
        for event in found:
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                if not self._dropped:
                    LOG.warning('Notifications: %d waiting for the broker (slow or '
                                'unreachable); dropping %s and the next ones until half '
                                'of them left', self._queue.maxsize, event.event_type.value)
                self._dropped += 1
                continue
            # Once half the queue left: a slow broker does not make this flap.
            if self._dropped and self._queue.qsize() <= self._queue.maxsize // 2:
                LOG.info('Notifications flow again; %d were dropped', self._dropped)
                self._dropped = 0

    def _send_queued(self) -> None:
        assert self._notifier is not None and self._failures is not None
        while (event := self._queue.get()) is not None:
            send = self._notifier.warn if event.priority is events.Priority.WARNING \
                else self._notifier.info
            try:
                send({}, event.event_type.value, event.payload)
            except Exception as exc:  # a notification must never end the sender
                self._failures.errors.append(f'{type(exc).__name__}: {exc}')
            if self._failures.errors:
                LOG.warning('Notification %s not sent: %s', event.event_type.value,
                            '; '.join(self._failures.errors))
                self._failures.errors.clear()
                continue
            LOG.debug('Notification %s sent: %s', event.event_type.value,
                      event.payload['nova_object.data'])

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Send what is queued, for at most ``timeout`` seconds, then let go of the broker."""
        if self._sender is None or self._transport is None:
            return
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._sender.join(max(0.0, deadline - time.monotonic()))
        if self._sender.is_alive():
            LOG.warning('Notifications: %d not sent within %.0f s of stopping (the broker is '
                        'slow or unreachable)', self._queue.qsize(), timeout)
            return
        assert self._failures is not None
        for name in OSLO_SEND_LOGGERS:
            std_logging.getLogger(name).removeFilter(self._failures)
        self._transport.cleanup()
        self._notifier = self._sender = None
