"""Which notifications a cycle calls for: pure functions of two snapshots.

A notification marks a change of state, never a cycle. The states, from a
cycle's plan (``planner.Plan``), per guest:

* reclaimed: the agent holds the guest below its full memory, its target
  below its ceiling (``GuestMemory.shrunk``). ``balloon.guest.reclaimed`` on
  the first shrink below the full memory; ``balloon.guest.restored`` when the
  agent sets the guest back to its full memory (a growth to the ceiling, or
  the restore when the agent stops).
* short: a guest below its full memory that deflated its balloon on
  out-of-memory, or whose free memory (MemAvailable) fell below the headroom
  the safety rules keep for it. ``balloon.guest.covered`` once it is back at
  its full memory, or has ``COVERED_HEADROOM_FACTOR`` times that headroom
  free and no deflation, so that a guest near the line does not flap.
  Without statistics the state stays as it was.
* unresponsive: the planner's verdict on the balloon (``GuestView.unresponsive``);
  ``balloon.guest.responding`` when the verdict clears.

and for the host, critical (``Plan.host_critical``: less memory it can
count on than ``[balloon] host_critical_free_mb``) and normal again.

A guest first seen is compared with the nominal state (full memory, covered,
responding): after an agent restart, a guest still reclaimed is announced
again. A guest the agent does not manage keeps its short and unresponsive
states (the agent has no statistics to judge them by); a guest that leaves
the host is forgotten without a notification.

Payloads are versioned as Nova's are: ``nova_object.name``, ``.namespace``,
``.version`` and ``.data``. Memory figures are in MiB (``*_mb``), rounded
down. A field added bumps the minor version; one changed or removed, the
major.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from nova_balloon.controller import planner
from nova_balloon.model import KIB_PER_MIB, GuestView, mib
from nova_balloon.safety import SafetyLimits
from nova_balloon.safety.responsiveness import SETTLE_TOLERANCE_KIB

NAMESPACE = 'nova_balloon'
PUBLISHER = 'nova-balloon'
# A short guest is covered again with this many times its headroom free.
COVERED_HEADROOM_FACTOR = 1.5


class Priority(enum.Enum):
    """Notification priorities, as oslo.messaging puts them on the wire."""

    INFO = 'INFO'
    WARNING = 'WARN'


class EventType(enum.Enum):
    GUEST_RECLAIMED = 'balloon.guest.reclaimed'
    GUEST_RESTORED = 'balloon.guest.restored'
    GUEST_SHORT = 'balloon.guest.short'
    GUEST_COVERED = 'balloon.guest.covered'
    GUEST_UNRESPONSIVE = 'balloon.guest.unresponsive'
    GUEST_RESPONDING = 'balloon.guest.responding'
    HOST_CRITICAL = 'balloon.host.critical'
    HOST_NORMAL = 'balloon.host.normal'
    AGENT_START = 'balloon.agent.start'
    AGENT_STOP = 'balloon.agent.stop'
    PLACEMENT_RATIO_CHANGED = 'balloon.placement.ratio_changed'


PRIORITIES = {
    EventType.GUEST_SHORT: Priority.WARNING,
    EventType.GUEST_UNRESPONSIVE: Priority.WARNING,
    EventType.HOST_CRITICAL: Priority.WARNING,
}


class Event(NamedTuple):
    event_type: EventType
    payload: dict[str, Any]

    @property
    def priority(self) -> Priority:
        return PRIORITIES.get(self.event_type, Priority.INFO)


class BalloonGuestPayload(NamedTuple):
    """A guest, for the ``balloon.guest.*`` notifications."""

    host: str
    # The instance's uuid, which is its libvirt domain's.
    uuid: str
    # The libvirt domain name (instance-0000002a) and Nova's display name.
    name: str
    display_name: str | None
    flavor: str | None
    # Its full memory: the flavor's RAM, the balloon's ceiling.
    memory_mb: int
    # The least the agent may leave it (None while it is not managed).
    floor_mb: int | None
    # The balloon target the agent set last, and the size it was last seen at.
    target_mb: int | None
    balloon_mb: int | None
    # The guest's MemAvailable (None without statistics).
    free_mb: int | None
    # Why it is short or unresponsive; None for the other events.
    reason: str | None

    VERSION = '1.0'


class BalloonHostPayload(NamedTuple):
    """The host, for ``balloon.host.critical`` and ``balloon.host.normal``."""

    host: str
    total_mb: int
    # MemAvailable, the part of the guests' balloons they have not touched,
    # and the difference: the memory the host can count on.
    available_mb: int
    untouched_mb: int
    free_mb: int
    # [balloon] host_critical_free_mb.
    critical_free_mb: int
    # How many guests the agent holds below their full memory, and by how much.
    guests_reclaimed: int
    reclaimed_mb: int

    VERSION = '1.0'


class BalloonAgentPayload(NamedTuple):
    """The agent, for ``balloon.agent.start`` and ``balloon.agent.stop``."""

    host: str
    version: str
    policy: str
    interval_s: int
    dry_run: bool
    restore_on_stop: bool
    # On stop: how many guests it gave their full memory back. None on start.
    guests_restored: int | None

    VERSION = '1.0'


class BalloonPlacementRatioPayload(NamedTuple):
    """The host's MEMORY_MB allocation ratio in Placement, set by ``[placement_ratio]``."""

    host: str
    # The resource provider: the compute node's hypervisor hostname.
    provider: str
    ratio_before: float
    ratio_after: float
    # What the capacity history advised, over the window at the stated risk.
    advised: float | None
    window_hours: float
    risk_percent: float
    # Why this ratio (the guard rails' reason).
    reason: str

    VERSION = '1.0'


Payload = (BalloonGuestPayload | BalloonHostPayload | BalloonAgentPayload
           | BalloonPlacementRatioPayload)


def versioned(payload: Payload) -> dict[str, Any]:
    """The payload as Nova sends its versioned objects."""
    return {
        'nova_object.name': type(payload).__name__,
        'nova_object.namespace': NAMESPACE,
        'nova_object.version': payload.VERSION,
        'nova_object.data': payload._asdict(),
    }


def publisher_id(host: str) -> str:
    return f'{PUBLISHER}:{host}'


class GuestState(NamedTuple):
    """The states of one guest that notifications follow.

    Built for every guest every cycle, so it holds only the states; the
    figures of a payload (``GuestFigures``) are read for the few guests
    whose state changed.
    """

    reclaimed: bool
    # Why the guest is short, None while it is covered.
    short: str | None
    # Why the balloon counts as unresponsive, None while it responds.
    unresponsive: str | None


# Full memory, covered, responding: what a guest first seen is compared with.
NOMINAL = GuestState(reclaimed=False, short=None, unresponsive=None)


class GuestFigures(NamedTuple):
    """What a guest's payload tells of it besides the reason."""

    uuid: str
    name: str
    display_name: str | None
    flavor: str | None
    ceiling_kib: int
    floor_kib: int | None
    target_kib: int | None
    balloon_kib: int | None
    free_kib: int | None


class HostFigures(NamedTuple):
    total_kib: int
    available_kib: int
    untouched_kib: int
    critical_kib: int
    guests_reclaimed: int
    reclaimed_kib: int


def _short(view: GuestView, limits: SafetyLimits, before: str | None) -> str | None:
    """Why the managed guest, below its full memory, is short of it now, or None."""
    if view.deflated_on_oom:
        return (f'deflated its balloon on out-of-memory: {mib(view.actual_kib)} MiB, above '
                f'its target {mib(view.target_kib)} MiB')
    if view.usable_kib is None:
        return before
    headroom = limits.headroom_for(view)
    line = int(headroom * COVERED_HEADROOM_FACTOR) if before else headroom
    if view.usable_kib >= line:
        return None
    return before or (f'{mib(view.usable_kib)} MiB free, below its headroom of '
                      f'{mib(headroom)} MiB')


def guest_states(plan: planner.Plan, previous: Mapping[str, GuestState],
                 limits: SafetyLimits) -> dict[str, GuestState]:
    """Every guest's states after the cycle that made ``plan``.

    ``plan.memory`` must be what the controller kept: the targets it could
    not apply (errors, dry run) are the ones it had before.
    """
    states = {}
    views = plan.views
    memory = plan.memory
    for uuid in plan.classified:
        before = previous.get(uuid, NOMINAL)
        remembered = memory.get(uuid)
        reclaimed = remembered.shrunk if remembered is not None else False
        view = views.get(uuid)
        if view is None:
            # Not managed: no statistics to judge short or unresponsive by.
            short, unresponsive = before.short, before.unresponsive
        elif view.actual_kib >= view.ceiling_kib - SETTLE_TOLERANCE_KIB:
            short, unresponsive = None, view.unresponsive
        else:
            short, unresponsive = _short(view, limits, before.short), view.unresponsive
        if reclaimed is before.reclaimed and short is before.short and \
                unresponsive is before.unresponsive:
            states[uuid] = before
        else:
            states[uuid] = GuestState(reclaimed, short, unresponsive)
    return states


def guest_figures(plan: planner.Plan, uuid: str) -> GuestFigures:
    """A guest's figures as the cycle that made ``plan`` saw them."""
    item = plan.classified[uuid]
    facts = item.sample.facts
    view = plan.views.get(uuid)
    remembered = plan.memory.get(uuid)
    return GuestFigures(
        uuid=uuid, name=facts.name,
        display_name=facts.nova.instance_name if facts.nova else None,
        flavor=facts.nova.flavor_name if facts.nova else None,
        ceiling_kib=facts.max_memory_kib, floor_kib=item.floor_kib,
        target_kib=remembered.target_kib if remembered else None,
        balloon_kib=item.sample.stats.actual_kib,
        free_kib=view.usable_kib if view is not None else item.sample.stats.usable_kib)


def host_figures(plan: planner.Plan, critical_kib: int) -> HostFigures:
    """The host as the cycle that made ``plan`` saw it (the plan has its host)."""
    host = plan.host
    assert host is not None
    held = [item.ceiling_kib - remembered.target_kib
            for uuid, item in plan.classified.items()
            if (remembered := plan.memory.get(uuid)) is not None and remembered.shrunk
            and remembered.target_kib is not None]
    return HostFigures(
        total_kib=host.total_kib, available_kib=host.available_kib,
        untouched_kib=host.untouched_kib, critical_kib=critical_kib,
        guests_reclaimed=len(held), reclaimed_kib=sum(held))


def guest_payload(figures: GuestFigures, host: str,
                  reason: str | None = None) -> dict[str, Any]:
    return versioned(BalloonGuestPayload(
        host=host, uuid=figures.uuid, name=figures.name, display_name=figures.display_name,
        flavor=figures.flavor, memory_mb=figures.ceiling_kib // KIB_PER_MIB,
        floor_mb=mib(figures.floor_kib), target_mb=mib(figures.target_kib),
        balloon_mb=mib(figures.balloon_kib), free_mb=mib(figures.free_kib), reason=reason))


def host_payload(figures: HostFigures, host: str) -> dict[str, Any]:
    return versioned(BalloonHostPayload(
        host=host, total_mb=figures.total_kib // KIB_PER_MIB,
        available_mb=figures.available_kib // KIB_PER_MIB,
        untouched_mb=figures.untouched_kib // KIB_PER_MIB,
        free_mb=(figures.available_kib - figures.untouched_kib) // KIB_PER_MIB,
        critical_free_mb=figures.critical_kib // KIB_PER_MIB,
        guests_reclaimed=figures.guests_reclaimed,
        reclaimed_mb=figures.reclaimed_kib // KIB_PER_MIB))


def guest_events(previous: Mapping[str, GuestState], current: Mapping[str, GuestState],
                 figures: Callable[[str], GuestFigures], host: str) -> list[Event]:
    """The notifications for the guests whose states changed.

    ``figures`` gives a guest's figures (``guest_figures`` of the plan), read
    only for the guests that changed.
    """
    events = []
    for uuid, state in current.items():
        before = previous.get(uuid, NOMINAL)
        if state is before or state == before:
            continue
        seen = figures(uuid)
        if state.reclaimed != before.reclaimed:
            kind = EventType.GUEST_RECLAIMED if state.reclaimed else EventType.GUEST_RESTORED
            events.append(Event(kind, guest_payload(seen, host)))
        if (state.short is None) != (before.short is None):
            kind = EventType.GUEST_SHORT if state.short else EventType.GUEST_COVERED
            events.append(Event(kind, guest_payload(seen, host, state.short)))
        if (state.unresponsive is None) != (before.unresponsive is None):
            kind = EventType.GUEST_UNRESPONSIVE if state.unresponsive else \
                EventType.GUEST_RESPONDING
            events.append(Event(kind, guest_payload(seen, host, state.unresponsive)))
    return events


def host_events(was_critical: bool, critical: bool, figures: Callable[[], HostFigures],
                host: str) -> list[Event]:
    """``balloon.host.critical`` or ``.normal`` when the host changed state.

    ``figures`` (``host_figures`` of the plan) is read only then.
    """
    if critical == was_critical:
        return []
    kind = EventType.HOST_CRITICAL if critical else EventType.HOST_NORMAL
    return [Event(kind, host_payload(figures(), host))]


def restored_on_stop(states: Mapping[str, GuestState], restored: Mapping[str, int],
                     figures: Callable[[str], GuestFigures], host: str) -> list[Event]:
    """``balloon.guest.restored`` for each reclaimed guest the stopping agent restored.

    ``restored`` maps a guest to the target set (its ceiling); ``figures``
    gives its figures as last seen. A guest the agent never saw reclaimed
    gets no event (none said it was reclaimed); the agent's stop
    notification counts it.
    """
    return [Event(EventType.GUEST_RESTORED,
                  guest_payload(figures(uuid)._replace(target_kib=target), host))
            for uuid, target in restored.items()
            if uuid in states and states[uuid].reclaimed]


def agent_event(kind: EventType, host: str, version: str, policy: str, interval_s: int,
                dry_run: bool, restore_on_stop: bool,
                guests_restored: int | None = None) -> Event:
    return Event(kind, versioned(BalloonAgentPayload(
        host=host, version=version, policy=policy, interval_s=interval_s, dry_run=dry_run,
        restore_on_stop=restore_on_stop, guests_restored=guests_restored)))


def placement_ratio_event(host: str, provider: str, ratio_before: float, ratio_after: float,
                          advised: float | None, window_s: float, risk: float,
                          reason: str) -> Event:
    return Event(EventType.PLACEMENT_RATIO_CHANGED, versioned(BalloonPlacementRatioPayload(
        host=host, provider=provider, ratio_before=round(ratio_before, 2),
        ratio_after=round(ratio_after, 2),
        advised=None if advised is None else round(advised, 2),
        window_hours=window_s / 3600, risk_percent=round(100 * risk, 4), reason=reason)))
