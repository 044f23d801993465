"""The control-quality metrics of one simulated run, and their table.

Every figure is computed from the per-second record of the run (demand and
balloon size of every guest), the guests' bounds and the host's capacity, as
the benchmark's spec defines it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from nova_balloon.model import KIB_PER_MIB

SECONDS_PER_HOUR = 3600


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    title: str
    # True when a larger value is better, False when smaller is, None when
    # the figure does not depend on the policy.
    higher_is_better: bool | None
    # How to show it: a percentage with this many decimals, or a plain number.
    percent_decimals: int | None


METRICS = (
    Metric('reclaimed', 'reclaimed (% of flavor RAM)', True, 2),
    Metric('shortfall', 'shortfall (% of flavor RAM)', False, 4),
    Metric('pressure', 'pressure (% of guest-time)', False, 3),
    Metric('host_overflow', 'host_overflow (% of time)', False, 3),
    Metric('host_overflow_mib', 'host_overflow (mean MiB over H)', False, None),
    Metric('host_saved', 'host_saved (% of flavor RAM)', True, 2),
    Metric('ops', 'ops (target changes per guest-hour)', False, None),
    Metric('unavoidable', 'unavoidable (% of flavor RAM)', None, 4),
)


@dataclasses.dataclass(frozen=True)
class Metrics:
    reclaimed: float
    shortfall: float
    pressure: float
    host_overflow: float
    host_overflow_mib: float
    ops: float
    unavoidable: float
    # What the host actually has back: flavor RAM less what the guests
    # occupy (their balloons under host model v1, their RSS under v2).
    host_saved: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def measure(demand_kib: np.ndarray, actual_kib: np.ndarray, ceiling_kib: np.ndarray,
            floor_kib: np.ndarray, host_total_kib: float, target_changes: int,
            resident_kib: np.ndarray | None = None) -> Metrics:
    """The run's figures from its per-second record (shape (seconds, guests)).

    ``resident_kib``: per second, what the guests occupy on the host in all,
    when it is not their balloon sizes (host model v2): the host overflows on it.
    """
    seconds, guests = actual_kib.shape
    flavor_ram = float(ceiling_kib.sum())
    short = np.maximum(demand_kib - actual_kib, 0.0)
    used = actual_kib.sum(axis=1)
    occupied = used if resident_kib is None else resident_kib
    over = occupied - host_total_kib
    needed = np.maximum(demand_kib, floor_kib).sum(axis=1)
    return Metrics(
        reclaimed=float(np.mean(flavor_ram - used)) / flavor_ram,
        shortfall=float(np.mean(short.sum(axis=1))) / flavor_ram,
        pressure=float(np.count_nonzero(short > 0)) / (seconds * guests),
        host_overflow=float(np.count_nonzero(over > KIB_PER_MIB)) / seconds,
        host_overflow_mib=float(np.mean(np.maximum(over, 0.0))) / KIB_PER_MIB,
        ops=target_changes / (guests * seconds / SECONDS_PER_HOUR),
        unavoidable=float(np.mean(np.maximum(needed - host_total_kib, 0.0))) / flavor_ram,
        host_saved=float(np.mean(flavor_ram - occupied)) / flavor_ram,
    )


def best(results: Mapping[str, Metrics], metric: Metric) -> set[str]:
    """The policies with the best value of a metric (all of them on a tie)."""
    if metric.higher_is_better is None or not results:
        return set()
    values = {name: getattr(m, metric.name) for name, m in results.items()}
    top = (max if metric.higher_is_better else min)(values.values())
    return {name for name, value in values.items() if value == top}


def _cell(value: float, metric: Metric) -> str:
    if metric.percent_decimals is not None:
        return f'{100 * value:.{metric.percent_decimals}f}'
    return f'{value:.1f}'


def table(results: Mapping[str, Metrics]) -> str:
    """A markdown table: one row per metric, one column per policy; * marks the best."""
    header = ['metric', *results]
    rows = []
    for metric in METRICS:
        winners = best(results, metric)
        rows.append([metric.title] + [
            _cell(getattr(m, metric.name), metric) + (' *' if name in winners else '')
            for name, m in results.items()])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return '| ' + ' | '.join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + ' |'

    rule = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
    return '\n'.join([line(header), rule, *(line(row) for row in rows)])
