"""The Placement ratio mode's figures in the agent's Prometheus metrics.

A collector of its own, registered on the agent's metrics registry when
both ``[metrics] listen`` and ``[placement_ratio] enabled`` are on; it
renders the updater's last outcome at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from nova_balloon.placement.updater import RatioUpdater

PREFIX = 'nova_balloon_placement_'


class RatioCollector:
    def __init__(self, updater: RatioUpdater):
        self.updater = updater

    def collect(self) -> Iterator[Metric]:
        updater = self.updater
        outcome = updater.last_outcome
        yield CounterMetricFamily(f'{PREFIX}ratio_changes',
                                  "Changes of this node's MEMORY_MB allocation_ratio the "
                                  'agent made in Placement since it started.',
                                  value=updater.changes)
        yield CounterMetricFamily(f'{PREFIX}ratio_failures',
                                  'Looks at the advice that could not read or set the ratio '
                                  '(Placement unreachable or refusing, provider not found).',
                                  value=updater.failures)
        if outcome is None:
            return
        in_placement = outcome.ratio_after if outcome.action == 'set' else \
            outcome.ratio_before
        if in_placement is not None:
            yield GaugeMetricFamily(f'{PREFIX}allocation_ratio',
                                    "This node's MEMORY_MB allocation_ratio in Placement, "
                                    'as the agent last read or set it.', value=in_placement)
        if outcome.advised is not None:
            yield GaugeMetricFamily(f'{PREFIX}advised_ratio',
                                    'The ratio the capacity history supports at '
                                    '[placement_ratio] risk_percent, before the guard rails.',
                                    value=outcome.advised)
