"""VM memory traces in the CSV format of the shared traces, as guest demand.

One row per VM and sample: ``vm,timestamp_s,mem_capacity_kb,mem_usage_kb,...``
(gzip or plain), rows of a VM in time order. A VM's demand fraction at a
sample is usage / capacity; the guest built from it has the capacity of the
VM's first sample as its flavor RAM.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
from typing import IO

import numpy as np

from nova_balloon.model import KIB_PER_MIB

COLUMNS = ('vm', 'timestamp_s', 'mem_capacity_kb', 'mem_usage_kb')
# Demand never falls below this fraction of flavor RAM: the guest's kernel.
BASE_DEMAND_FRACTION = 0.05


class TraceError(ValueError):
    """The trace file cannot be used; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class VmTrace:
    vm: str
    timestamps_s: np.ndarray
    # usage / capacity of each sample; 0 where the trace reports no capacity.
    usage_fraction: np.ndarray
    first_capacity_kib: int

    @property
    def ceiling_kib(self) -> int:
        """Flavor RAM: the first sample's capacity in whole MiB."""
        return self.first_capacity_kib // KIB_PER_MIB * KIB_PER_MIB


def _open_text(path: str) -> IO[str]:
    with open(path, 'rb') as probe:
        compressed = probe.read(2) == b'\x1f\x8b'
    if compressed:
        return gzip.open(path, 'rt', encoding='utf-8', newline='')
    return open(path, encoding='utf-8', newline='')


def read(path: str, vms: int) -> list[VmTrace]:
    """The first ``vms`` VMs of the trace, in the order they first appear."""
    samples: dict[str, list[tuple[int, int, int]]] = {}
    with _open_text(path) as stream:
        reader = csv.reader(stream)
        header = next(reader, [])
        if not set(COLUMNS) <= set(header):
            raise TraceError(f'{path}: expected a header with the columns {", ".join(COLUMNS)}')
        vm_col, time_col, cap_col, use_col = (header.index(c) for c in COLUMNS)
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            vm = row[vm_col]
            if vm not in samples:
                if len(samples) == vms:
                    continue
                samples[vm] = []
            try:
                samples[vm].append((int(row[time_col]), int(row[cap_col]), int(row[use_col])))
            except (ValueError, IndexError):
                raise TraceError(f'{path}:{number}: not a valid sample: {row!r}') from None
    traces = []
    for vm, rows_of_vm in samples.items():
        data = np.array(rows_of_vm, dtype=np.int64)
        if np.any(np.diff(data[:, 0]) < 0):
            raise TraceError(f'{path}: samples of {vm} are not in time order')
        capacity, usage = data[:, 1].astype(float), data[:, 2].astype(float)
        fraction = np.divide(usage, capacity, out=np.zeros_like(usage), where=capacity > 0)
        traces.append(VmTrace(vm, data[:, 0], fraction, int(data[0, 1])))
    if len(traces) < vms:
        raise TraceError(f'{path}: {len(traces)} VMs, {vms} wanted')
    return traces


def start_of(traces: list[VmTrace]) -> int:
    """Trace time of the simulation's t = 0: the earliest sample of these VMs."""
    return min(int(t.timestamps_s[0]) for t in traces)


def demand_kib(traces: list[VmTrace], start_s: int, steps: int,
               compression: float) -> np.ndarray:
    """Demand of every guest at every second, shape (steps, guests), in KiB.

    Second t reads the latest sample at or before trace time
    ``start_s + compression * t`` (a step function); before a VM's first
    sample its usage counts as zero. Demand is 5 % of flavor RAM (the
    guest's own kernel) plus the usage fraction of it, capped at flavor RAM.
    """
    trace_times = start_s + compression * np.arange(steps, dtype=float)
    demand = np.empty((steps, len(traces)))
    for column, trace in enumerate(traces):
        latest = np.searchsorted(trace.timestamps_s, trace_times, side='right') - 1
        fraction = np.where(latest >= 0, trace.usage_fraction[np.maximum(latest, 0)], 0.0)
        ceiling = trace.ceiling_kib
        demand[:, column] = np.minimum(ceiling,
                                       (BASE_DEMAND_FRACTION + fraction) * ceiling)
    return demand
