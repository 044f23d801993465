"""The agent's Prometheus endpoint: a thin layer over ``values`` and prometheus-client.

After each cycle the agent hands its report to ``Exporter.observe``, which
keeps a reference to the plan and counts what the cycle did: a few dictionary
updates, nothing per guest. The per-guest figures are derived from the last
plan when Prometheus scrapes, on the HTTP server's thread, so a guest that
is gone from the plan is gone from the metrics, and a host nobody scrapes
pays nothing for them. The registry is the exporter's own, not
prometheus-client's global one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server

from nova_balloon.conf import metrics as metrics_conf
from nova_balloon.controller.cycle import CycleReport
from nova_balloon.controller.planner import Plan
from nova_balloon.metrics import values
from nova_balloon.metrics.values import CycleResult, LibvirtErrorKind
from nova_balloon.safety import SafetyLimits

LOG = logging.getLogger(__name__)

PREFIX = 'nova_balloon_'
GUEST_LABELS = ('instance_uuid', 'instance_name', 'flavor')
BYTES_PER_KIB = 1024
# Prometheus's default buckets: from a few guests (milliseconds) to
# thousands of them on a loaded host (seconds).
CYCLE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Per-guest gauges: (name, GuestFigures field, help).
GUEST_GAUGES = (
    ('guest_ceiling_bytes', 'ceiling_kib',
     'Flavor RAM: the most the guest can have (its maximum memory).'),
    ('guest_floor_bytes', 'floor_kib',
     'The least the agent leaves the guest, from its flavor policy.'),
    ('guest_balloon_bytes', 'balloon_kib',
     'Memory the guest has now: its balloon size (libvirt balloon.current, "actual").'),
    ('guest_target_bytes', 'target_kib', 'The balloon target the agent set or adopted.'),
    ('guest_usable_bytes', 'usable_kib',
     "The guest's MemAvailable as it reports it (libvirt's \"usable\")."),
    ('guest_demand_bytes', 'demand_kib',
     'The demand the policy is given: the most the guest can have used at its last '
     'statistics sample.'),
)


def _bytes(kib: int) -> int:
    return kib * BYTES_PER_KIB


class Exporter:
    """Counts what cycles did and renders the last plan on each scrape; thread-safe."""

    def __init__(self, limits: SafetyLimits):
        self.limits = limits
        self.registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._up = False
        self._last_success: float | None = None
        self._libvirt_calls = 0
        self._cycles = dict.fromkeys(CycleResult, 0)
        self._libvirt_errors = dict.fromkeys(LibvirtErrorKind, 0)
        # Per guest, pruned to the guests of the last plan.
        self._target_changes: dict[str, int] = {}
        self._failed_actions: dict[str, int] = {}
        self._oom_deflations: dict[str, int] = {}
        self._duration = Histogram(
            f'{PREFIX}cycle_duration_seconds', 'Wall time of one control cycle.',
            buckets=CYCLE_BUCKETS_S, registry=self.registry)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        self._server: Any = None

    # -- the cycle thread and libvirt's event thread -------------------------------

    def observe(self, report: CycleReport, libvirt_calls: int, now: float) -> None:
        """After each cycle; ``now`` is the wall-clock time (Unix seconds)."""
        result = values.cycle_result(report)
        errors = values.libvirt_errors(report)
        # First, so that a scrape that counts the cycle has its duration too.
        self._duration.observe(report.duration_s)
        with self._lock:
            self._cycles[result] += 1
            for kind, count in errors.items():
                self._libvirt_errors[kind] += count
            changes, failed = self._target_changes, self._failed_actions
            for uuid in report.applied:
                changes[uuid] = changes.get(uuid, 0) + 1
            for uuid in report.errors:
                failed[uuid] = failed.get(uuid, 0) + 1
            self._libvirt_calls = libvirt_calls
            self._up = result is CycleResult.PLANNED
            if report.plan is not None:
                self._plan = report.plan
                self._last_success = now
                self._prune(report.plan)

    def oom_deflated(self, uuid: str) -> None:
        """A balloon-change event showed the guest deflating its balloon on OOM."""
        with self._lock:
            self._oom_deflations[uuid] = self._oom_deflations.get(uuid, 0) + 1

    def _prune(self, plan: Plan) -> None:
        """Forget the counts of guests gone from the plan, once they outnumber it.

        A dictionary holds more guests than the plan only when some left:
        the check costs nothing per cycle, the pruning a pass when guests go.
        """
        guests = plan.classified
        for counts in (self._target_changes, self._failed_actions, self._oom_deflations):
            if len(counts) > len(guests):
                for uuid in [uuid for uuid in counts if uuid not in guests]:
                    del counts[uuid]

    # -- the HTTP server's thread ---------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """prometheus-client's collector interface: every family, from the last plan."""
        with self._lock:
            plan, up, last_success = self._plan, self._up, self._last_success
            cycles, libvirt_errors = dict(self._cycles), dict(self._libvirt_errors)
            libvirt_calls = self._libvirt_calls
            counts = [dict(self._target_changes), dict(self._failed_actions),
                      dict(self._oom_deflations)]
        guests = list(values.guest_figures(plan, self.limits)) if plan is not None else []
        yield from self._guest_families(guests, *counts)
        yield _gauge('agent_up', 'Whether the agent controls the balloons: 1 when its last '
                     'cycle reached libvirt and planned, 0 while libvirt is unreachable, in '
                     'grow-only safe mode, and before the first cycle.', int(up))
        if last_success is not None:
            yield _gauge('cycle_last_success_timestamp_seconds',
                         'When the last cycle that planned ended (Unix time).', last_success)
        cycle_family = CounterMetricFamily(f'{PREFIX}cycles', 'Control cycles, by result.',
                                           labels=('result',))
        for result, count in cycles.items():
            cycle_family.add_metric((result.value,), count)
        yield cycle_family
        yield CounterMetricFamily(f'{PREFIX}libvirt_calls',
                                  'libvirt calls the agent made (collections and actions).',
                                  value=libvirt_calls)
        errors_family = CounterMetricFamily(
            f'{PREFIX}libvirt_errors', 'libvirt calls that failed: collections (libvirt '
            'unreachable) and actions on a guest.', labels=('kind',))
        for kind, count in libvirt_errors.items():
            errors_family.add_metric((kind.value,), count)
        yield errors_family
        if plan is not None:
            yield from _host_families(values.host_figures(plan, guests))

    def _guest_families(self, guests: list[values.GuestFigures], target_changes: dict[str, int],
                        failed_actions: dict[str, int],
                        oom_deflations: dict[str, int]) -> Iterator[Metric]:
        labels = [(g.uuid, g.name, g.flavor) for g in guests]
        for name, field, doc in GUEST_GAUGES:
            family = GaugeMetricFamily(f'{PREFIX}{name}', doc, labels=GUEST_LABELS,
                                       unit='bytes')
            for guest, label_values in zip(guests, labels, strict=True):
                kib = getattr(guest, field)
                if kib is not None:
                    family.add_metric(label_values, _bytes(kib))
            yield family
        state = GaugeMetricFamily(
            f'{PREFIX}guest_state', "The guest's state (the series present has the value 1): "
            'managed, short, unresponsive or ignored; reason is the category of why an '
            'ignored guest is not managed, empty otherwise.',
            labels=(*GUEST_LABELS, 'state', 'reason'))
        for guest, label_values in zip(guests, labels, strict=True):
            reason = guest.reason.value if guest.reason is not None else ''
            state.add_metric((*label_values, guest.state.value, reason), 1)
        yield state
        for name, counts, doc in (
                ('guest_target_changes', target_changes,
                 'Balloon targets the agent set on the guest.'),
                ('guest_oom_deflations', oom_deflations,
                 'Balloon-change events in which the guest deflated its balloon on '
                 'out-of-memory, above the target.'),
                ('guest_failed_actions', failed_actions,
                 'Balloon targets that libvirt failed to set on the guest.')):
            family = CounterMetricFamily(f'{PREFIX}{name}', doc, labels=GUEST_LABELS)
            for guest, label_values in zip(guests, labels, strict=True):
                family.add_metric(label_values, counts.get(guest.uuid, 0))
            yield family

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics from a daemon thread; raises OSError when it cannot listen."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        shown = f'[{host}]' if ':' in host else host
        LOG.info('Serving Prometheus metrics at http://%s:%d/metrics', shown, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f'{PREFIX}{name}', doc, value=value)


def _host_families(host: values.HostFigures) -> Iterator[Metric]:
    yield _gauge('host_total_bytes', "The host's memory (MemTotal).", _bytes(host.total_kib))
    yield _gauge('host_available_bytes', "The host's MemAvailable.",
                 _bytes(host.available_kib))
    yield _gauge('host_free_bytes', 'Memory the agent counts the host can count on: '
                 'MemAvailable less the part of the balloons the guests have not touched.',
                 _bytes(host.free_kib))
    yield _gauge('host_reclaimed_bytes', 'Memory reclaimed from the guests: the sum of '
                 'ceiling - balloon.', _bytes(host.reclaimed_kib))
    yield _gauge('host_committed_bytes', 'Memory committed to the guests: the sum of their '
                 'balloon sizes (the ceiling of a guest without one).',
                 _bytes(host.committed_kib))
    yield _gauge('host_critical', 'Whether the host is critically short of memory (below '
                 '[balloon] host_critical_free_mb): the agent takes memory back.',
                 int(host.critical))
    yield _gauge('host_contended', 'Whether guests short of free memory lack more than the '
                 'host has free: the others keep [balloon] contended_headroom_percent of '
                 'headroom and give the rest.', int(host.contended))
    by_state = GaugeMetricFamily(f'{PREFIX}guests', 'Guests on the host, by state.',
                                 labels=('state',))
    for state, count in host.guests_by_state.items():
        by_state.add_metric((state.value,), count)
    yield by_state
    if host.stats_age_max_s is not None:
        yield _gauge('stats_age_max_seconds', 'Age of the oldest balloon statistics among '
                     'the managed guests.', host.stats_age_max_s)


def start(conf: cfg.ConfigOpts) -> Exporter | None:
    """The exporter, serving, when ``[metrics] listen`` names an address; else None.

    A value that cannot be used stops the agent with a message that names it.
    The group is registered here too (a no-op on the agent's own ConfigOpts),
    so that a ConfigOpts made without it means metrics off.
    """
    metrics_conf.register_opts(conf)
    try:
        address = metrics_conf.listen_address(conf.metrics.listen)
    except metrics_conf.ListenAddressError as exc:
        LOG.error('Not starting: %s', exc)
        sys.exit(f'nova-balloon: not starting: {exc}')
    if address is None:
        return None
    exporter = Exporter(SafetyLimits.from_conf(conf.balloon))
    try:
        exporter.serve(*address)
    except OSError as exc:
        LOG.error('Not starting: cannot serve metrics on [metrics] listen = %s: %s',
                  conf.metrics.listen, exc)
        sys.exit(f'nova-balloon: not starting: cannot serve metrics on [metrics] listen = '
                 f'{conf.metrics.listen}: {exc}')
    return exporter

