"""Plots of simulated runs: one column per policy.

The top row shows the host's memory in use against its capacity; each row
below follows one guest: its demand, its balloon size and the target the
controller set.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from nova_balloon.model import KIB_PER_MIB
from nova_balloon.virt.simulated.run import RunResult

KIB_PER_GIB = 1024 * KIB_PER_MIB
# Enough points for a smooth line; more only make the PNG bigger.
MAX_POINTS = 2000


def draw(results: Sequence[RunResult], path: str, title: str) -> None:
    """Write a PNG of the runs (all of the same node) to path."""
    rows = 1 + max(len(r.watched) for r in results)
    # A Figure of its own, not pyplot's: no global state, no display needed.
    figure = Figure(figsize=(3.6 * len(results), 1.9 * rows), dpi=80)
    axes = figure.subplots(rows, len(results), squeeze=False, sharex=True, sharey='row')
    seconds = len(results[0].host_used_kib)
    every = max(1, seconds // MAX_POINTS)
    hours = [s / 3600 for s in range(0, seconds, every)]
    for column, result in enumerate(results):
        host = axes[0][column]
        host.plot(hours, result.host_used_kib[::every] / KIB_PER_GIB, lw=0.8,
                  label='host in use')
        host.axhline(result.host_total_kib / KIB_PER_GIB, color='red', lw=0.8,
                     label='capacity')
        host.set_title(result.policy, fontsize=9)
        for row, guest in enumerate(result.watched, start=1):
            ax = axes[row][column]
            ax.plot(hours, guest.demand_kib[::every] / KIB_PER_GIB, lw=0.8, color='black',
                    label='demand')
            ax.plot(hours, guest.actual_kib[::every] / KIB_PER_GIB, lw=0.8, label='balloon')
            ax.plot(hours, guest.target_kib[::every] / KIB_PER_GIB, lw=0.6, ls='--',
                    label='target')
            if column == 0:
                ax.set_ylabel(f'{guest.name}\nGiB', fontsize=7)
        if column == 0:
            host.set_ylabel('host\nGiB', fontsize=7)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
        ax.ticklabel_format(axis='y', useOffset=False)
    for ax in axes[-1]:
        ax.set_xlabel('simulated hours', fontsize=7)
    axes[0][-1].legend(fontsize=6, loc='lower right')
    if rows > 1:
        axes[1][-1].legend(fontsize=6, loc='upper right')
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path)
