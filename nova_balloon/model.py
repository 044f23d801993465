"""Immutable snapshots the controller decides on.

Everything here is data: the libvirt driver, the simulator and the tests build
these records, and the policies and safety rules are pure functions of them.
Memory is in KiB, as libvirt counts it; field names carry the unit. The records
a cycle makes for every guest are NamedTuples: as immutable as the frozen
dataclasses, at a third of the cost to build.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, NamedTuple

KIB_PER_MIB = 1024


def mib(kib: int | None) -> int | None:
    """KiB to whole MiB, for logs and tables."""
    return None if kib is None else kib // KIB_PER_MIB


@dataclasses.dataclass(frozen=True, slots=True)
class NovaMetadata:
    """What Nova's libvirt driver wrote into the domain's <metadata>."""

    instance_name: str | None
    flavor_name: str | None
    flavor_memory_mb: int | None
    # None when this Nova writes no extra specs (before 2025.2).
    extra_specs: dict[str, str] | None


@dataclasses.dataclass(frozen=True, slots=True)
class GuestFacts:
    """Per-domain facts from its XML: parsed when the domain appears or changes."""

    uuid: str
    name: str
    max_memory_kib: int
    nova: NovaMetadata | None
    # Why the hypervisor cannot balloon this guest at all (device level), or None.
    unballoonable: str | None
    stats_period_s: int | None
    # The domain has a balloon device (a guest without one cannot even be
    # given memory back through it).
    balloon_device: bool = True


class BalloonStats(NamedTuple):
    """One guest's balloon statistics as libvirt reports them.

    libvirt's names are a trap: ``usable`` is the guest's MemAvailable,
    ``available`` its MemTotal, ``actual`` the balloon size. The guest writes
    all of these itself, so none of them is trusted blindly.
    """

    actual_kib: int | None = None
    usable_kib: int | None = None
    unused_kib: int | None = None
    available_kib: int | None = None
    swap_in_kib: int | None = None
    major_faults: int | None = None
    last_update: int | None = None
    # What the guest occupies on the host (its QEMU process's resident set):
    # with lazy allocation and free page reporting, less than its balloon.
    rss_kib: int | None = None


class RunState(enum.Enum):
    RUNNING = 'running'
    PAUSED = 'paused'
    MIGRATING = 'migrating'
    OTHER = 'other'


class GuestSample(NamedTuple):
    """What a driver observed of one guest in one collection."""

    facts: GuestFacts
    stats: BalloonStats
    run_state: RunState
    # Seconds since the guest last refreshed its statistics, None if unknown.
    stats_age_s: float | None
    # One run of the domain: what the agent learns of a guest (its targets,
    # rates, verdicts) holds only within it. A new QEMU process (hard
    # reboot, rescue, resize, managed save and restore, migration) or a
    # reboot from inside the guest starts a new run. None when unknown.
    run_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class HostSnapshot:
    """The compute node's memory, as /proc/meminfo shows it."""

    total_kib: int
    available_kib: int
    # Seconds on a monotonic clock; lets policies keep rates and history
    # without reading a clock themselves.
    now: float
    # The part of the guests' balloons they have not touched (balloon size
    # less resident set): QEMU allocates guest RAM lazily and free page
    # reporting hands freed pages back, so MemAvailable counts this memory,
    # yet each guest may take its part back at any moment.
    untouched_kib: int = 0

    @property
    def free_kib(self) -> int:
        """What the host can count on: MemAvailable less the guests' untouched memory."""
        return self.available_kib - self.untouched_kib


@dataclasses.dataclass(frozen=True, slots=True)
class FlavorPolicy:
    """The balloon bounds an operator set for one flavor."""

    overcommit_ratio: float
    min_memory_mb: int
    shares: int
    enabled: bool
    # Where each value came from, for `status` and logs.
    source: str

    def floor_kib(self, ceiling_kib: int) -> int:
        """The higher of flavor RAM / ratio and the absolute minimum, capped at the ceiling."""
        by_ratio = int(ceiling_kib / self.overcommit_ratio)
        return min(ceiling_kib, max(by_ratio, self.min_memory_mb * KIB_PER_MIB))


class GuestView(NamedTuple):
    """A managed guest as a policy sees it: bounds, balloon and validated stats."""

    uuid: str
    name: str
    ceiling_kib: int
    floor_kib: int
    shares: int
    actual_kib: int
    # The target the agent set last (or adopted), None when none is known.
    target_kib: int | None
    # MemAvailable; None when the statistics are missing or invalid.
    usable_kib: int | None
    # The memory the guest cannot give up (actual - usable); None also while
    # the balloon moves, since libvirt reports the balloon size and the guest
    # its free memory at different moments.
    demand_kib: int | None
    swap_in_kib: int | None
    major_faults: int | None
    stats_fresh: bool
    # The balloon changed size after the guest's statistics were taken.
    balloon_moving: bool
    # actual above the target: the guest deflated its balloon on OOM
    # (autodeflate) and is short of memory right now.
    deflated_on_oom: bool
    # Why the balloon counts as not responding, or None.
    unresponsive: str | None = None
    # The guest time of the statistics (libvirt's balloon.last-update, in
    # seconds): a new value is a new sample. None until the guest reports.
    sampled_at: int | None = None
    # This cycle is the first to see the sample: policies observe a guest
    # once per sample, not once per cycle.
    new_sample: bool = False
    # The most the guest can have been using when the sample was taken:
    # demand_kib, or while the balloon moves, the larger balloon size it had
    # since the sample less its free memory. None without usable statistics.
    demand_bound_kib: int | None = None
    # How fast demand rose between the last two samples, per second of guest
    # time; 0 when it held, fell or is not known.
    demand_rate_kib_s: float = 0.0
    # The smaller of the last two such rates: a guest filling its memory.
    trend_rate_kib_s: float = 0.0
    # The statistics period the guest has from this cycle on.
    stats_period_s: int = 10
    # Seconds from the sample until a correction that the next sample
    # prompts can take effect: the stats period, a cycle and a balloon move.
    reaction_s: float = 0.0

    @property
    def current_kib(self) -> int:
        """The target the agent set (or adopted), else the balloon size."""
        return self.target_kib if self.target_kib is not None else self.actual_kib


class Action(enum.Enum):
    GROW = 'grow'
    SHRINK = 'shrink'
    HOLD = 'hold'
    IGNORE = 'ignore'


# One part of a decision's reason: a str.format template, then its arguments,
# which are KiB (shown in MiB) unless they are strings.
Note = tuple[Any, ...]


def _note_text(note: Note) -> str:
    return note[0].format(*[a if isinstance(a, str) else mib(a) for a in note[1:]])


class Decision(NamedTuple):
    """The outcome of one cycle for one guest: what to apply and why."""

    uuid: str
    name: str
    action: Action
    # The target to apply now (GROW/SHRINK), or the one kept (HOLD).
    target_kib: int | None
    # Why, formatted only when ``reason`` is read: every guest gets a decision
    # each cycle, but few reasons are read.
    notes: tuple[Note, ...]

    @property
    def reason(self) -> str:
        return '; '.join(map(_note_text, self.notes))
