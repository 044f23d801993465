"""What the agent's metrics say, as pure functions of a cycle's report and plan.

No I/O, no clock, no prometheus-client: ``exporter`` turns these figures into
metric families when Prometheus scrapes. A guest's state and, for a guest
the agent ignores, the category of its reason are small enums, so that no
label takes free text.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import NamedTuple

from nova_balloon.controller.cycle import CycleReport
from nova_balloon.controller.planner import Classified, Plan
from nova_balloon.model import GuestView, RunState
from nova_balloon.safety import SafetyLimits, is_short
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB


class GuestState(enum.Enum):
    # Managed, with its headroom free.
    MANAGED = 'managed'
    # Managed and below its full memory, with less free memory than its
    # headroom, or it just deflated its balloon on out-of-memory (the safety
    # rules' "short"). At its full memory no balloon can help it: managed.
    SHORT = 'short'
    # Managed, but its balloon does not respond: given its full memory.
    UNRESPONSIVE = 'unresponsive'
    # Not managed; IgnoredReason says why.
    IGNORED = 'ignored'


class IgnoredReason(enum.Enum):
    """Why the agent does not manage a guest, by category (planner.classify's order)."""

    # No balloon device, hugepage or locked memory, PCI host devices, SEV.
    UNBALLOONABLE = 'unballoonable'
    MIGRATING = 'migrating'
    NOT_RUNNING = 'not_running'
    INVALID_FLAVOR_POLICY = 'invalid_flavor_policy'
    NO_NOVA_METADATA = 'no_nova_metadata'
    DISABLED = 'disabled'
    # Its floor equals its flavor RAM (ratio 1.0).
    NOT_RECLAIMABLE = 'not_reclaimable'


class CycleResult(enum.Enum):
    PLANNED = 'planned'
    # libvirt could not be reached: balloons stay as they are.
    LIBVIRT_UNREACHABLE = 'libvirt_unreachable'
    # Planning or applying failed (a bug): grow-only safe mode.
    SAFE_MODE = 'safe_mode'


class LibvirtErrorKind(enum.Enum):
    # The cycle's collection failed: libvirt unreachable.
    UNREACHABLE = 'unreachable'
    # A call on one guest failed (setting its balloon target).
    GUEST_ACTION = 'guest_action'


class GuestFigures(NamedTuple):
    uuid: str
    # Nova's instance name, else the domain name.
    name: str
    # Nova's flavor name, '' for a guest without Nova metadata.
    flavor: str
    state: GuestState
    reason: IgnoredReason | None
    ceiling_kib: int
    floor_kib: int | None
    balloon_kib: int | None
    target_kib: int | None
    usable_kib: int | None
    # The demand the policy is given: the most the guest can have used when
    # its last statistics were taken (GuestView.demand_bound_kib).
    demand_kib: int | None


class HostFigures(NamedTuple):
    total_kib: int
    available_kib: int
    # What the agent counts on: MemAvailable less the guests' untouched memory.
    free_kib: int
    # Sum over guests of ceiling - balloon.
    reclaimed_kib: int
    # Sum over guests of their balloon sizes (the ceiling where none is known).
    committed_kib: int
    critical: bool
    # Guests short of free memory lack more than the host has free (Plan.host_contended).
    contended: bool
    guests_by_state: dict[GuestState, int]
    # The oldest statistics among managed guests, None when none has any.
    stats_age_max_s: float | None


def ignored_reason(item: Classified) -> IgnoredReason:
    """The category of a guest's ignore reason, from the facts planner.classify used."""
    sample = item.sample
    if sample.facts.unballoonable:
        return IgnoredReason.UNBALLOONABLE
    if sample.run_state is RunState.MIGRATING:
        return IgnoredReason.MIGRATING
    if sample.run_state is not RunState.RUNNING:
        return IgnoredReason.NOT_RUNNING
    if item.misconfigured:
        return IgnoredReason.INVALID_FLAVOR_POLICY
    if item.policy is None:
        return IgnoredReason.NO_NOVA_METADATA
    if not item.policy.enabled:
        return IgnoredReason.DISABLED
    # classify's last reason: a floor at the ceiling.
    return IgnoredReason.NOT_RECLAIMABLE


def guest_state(view: GuestView | None, limits: SafetyLimits) -> GuestState:
    if view is None:
        return GuestState.IGNORED
    if view.unresponsive is not None:
        return GuestState.UNRESPONSIVE
    if view.actual_kib >= view.ceiling_kib - SETTLE_TOLERANCE_KIB:
        return GuestState.MANAGED
    if is_short(view, limits):
        return GuestState.SHORT
    return GuestState.MANAGED


def guest_figures(plan: Plan, limits: SafetyLimits) -> Iterator[GuestFigures]:
    """One entry per guest the plan saw, in the plan's order.

    The plan's memory is read by key only: after the cycle, the controller
    may still add to it from its own thread.
    """
    views, memory = plan.views, plan.memory
    for uuid, item in plan.classified.items():
        facts = item.sample.facts
        nova = facts.nova
        view = views.get(uuid)
        remembered = memory.get(uuid)
        stats = item.sample.stats
        state = guest_state(view, limits)
        yield GuestFigures(
            uuid=uuid,
            name=(nova.instance_name if nova is not None and nova.instance_name
                  else facts.name),
            flavor=(nova.flavor_name or '') if nova is not None else '',
            state=state,
            reason=ignored_reason(item) if state is GuestState.IGNORED else None,
            ceiling_kib=facts.max_memory_kib,
            floor_kib=item.floor_kib,
            balloon_kib=stats.actual_kib,
            target_kib=remembered.target_kib if remembered is not None else None,
            usable_kib=view.usable_kib if view is not None else stats.usable_kib,
            demand_kib=view.demand_bound_kib if view is not None else None)


def host_figures(plan: Plan, guests: list[GuestFigures]) -> HostFigures:
    host = plan.host
    assert host is not None, 'a plan counts the host'
    by_state = dict.fromkeys(GuestState, 0)
    reclaimed = committed = 0
    for guest in guests:
        by_state[guest.state] += 1
        balloon = guest.balloon_kib if guest.balloon_kib is not None else guest.ceiling_kib
        committed += balloon
        if balloon < guest.ceiling_kib:
            reclaimed += guest.ceiling_kib - balloon
    ages = [item.sample.stats_age_s for uuid, item in plan.classified.items()
            if uuid in plan.views and item.sample.stats_age_s is not None]
    return HostFigures(
        total_kib=host.total_kib, available_kib=host.available_kib, free_kib=host.free_kib,
        reclaimed_kib=reclaimed, committed_kib=committed, critical=plan.host_critical,
        contended=plan.host_contended,
        guests_by_state=by_state, stats_age_max_s=max(ages) if ages else None)


def cycle_result(report: CycleReport) -> CycleResult:
    if report.outage is not None:
        return CycleResult.LIBVIRT_UNREACHABLE
    if report.plan is None:
        return CycleResult.SAFE_MODE
    return CycleResult.PLANNED


def libvirt_errors(report: CycleReport) -> dict[LibvirtErrorKind, int]:
    """The libvirt calls that failed in the cycle, by kind (kinds without any left out)."""
    errors = {}
    if report.outage is not None:
        errors[LibvirtErrorKind.UNREACHABLE] = 1
    if report.errors:
        errors[LibvirtErrorKind.GUEST_ACTION] = len(report.errors)
    return errors
