"""doc/notification_samples/ shows what the agent sends: same keys, types and versions.

Each sample is checked against the payload class the code builds for its
event, and against an event the code builds for the same transition, so
neither the samples nor doc/source/notifications.rst can drift.
"""

from __future__ import annotations

import json
import re
import types
import typing
from pathlib import Path

import pytest

from nova_balloon.notifications import events as ev
from nova_balloon.notifications.events import EventType, GuestFigures, HostFigures

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / 'doc' / 'notification_samples'
PAGE = REPO / 'doc' / 'source' / 'notifications.rst'
HOST = 'compute-1'

GUEST = GuestFigures(uuid='u1', name='instance-1', display_name='web-1', flavor='m1.large',
                     ceiling_kib=4 << 20, floor_kib=2 << 20, target_kib=3 << 20,
                     balloon_kib=3 << 20, free_kib=1 << 20)
HOST_FIGURES = HostFigures(total_kib=64 << 20, available_kib=8 << 20, untouched_kib=1 << 20,
                           critical_kib=512 << 10, guests_reclaimed=1, reclaimed_kib=1 << 20)


def built(kind: EventType) -> ev.Event:
    """The event the code sends for ``kind``, from a transition that causes it."""
    guest_changes = {
        EventType.GUEST_RECLAIMED: ({}, {'reclaimed': True}),
        EventType.GUEST_RESTORED: ({'reclaimed': True}, {}),
        EventType.GUEST_SHORT: ({}, {'short': 'low'}),
        EventType.GUEST_COVERED: ({'short': 'low'}, {}),
        EventType.GUEST_UNRESPONSIVE: ({}, {'unresponsive': 'stuck'}),
        EventType.GUEST_RESPONDING: ({'unresponsive': 'stuck'}, {}),
    }
    if kind in guest_changes:
        before, after = guest_changes[kind]
        found = ev.guest_events({'u1': ev.NOMINAL._replace(**before)},
                                {'u1': ev.NOMINAL._replace(**after)}, lambda uuid: GUEST, HOST)
    elif kind is EventType.PLACEMENT_RATIO_CHANGED:
        found = [ev.placement_ratio_event(HOST, 'compute-1.example.org', 1.5, 1.75, 2.14,
                                          7 * 86400, 0.001, '1.50 -> 1.75')]
    elif kind in (EventType.HOST_CRITICAL, EventType.HOST_NORMAL):
        critical = kind is EventType.HOST_CRITICAL
        found = ev.host_events(not critical, critical, lambda: HOST_FIGURES, HOST)
    else:
        found = [ev.agent_event(kind, HOST, '1.0', 'adaptive', 2, False, True,
                                3 if kind is EventType.AGENT_STOP else None)]
    assert [e.event_type for e in found] == [kind]
    return found[0]


PAYLOAD_CLASSES = {cls.__name__: cls for cls in typing.get_args(ev.Payload)}


def sample_path(kind: EventType) -> Path:
    return SAMPLES / f"{kind.value.replace('.', '-')}.json"


def check_types(data: dict, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    assert list(data) == list(hints), f'{cls.__name__}: fields differ'
    for name, value in data.items():
        hint = hints[name]
        allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        if isinstance(value, bool):
            assert bool in allowed, (cls.__name__, name, value)
        else:
            assert isinstance(value, allowed), (cls.__name__, name, value)


@pytest.mark.parametrize('kind', list(EventType), ids=lambda k: k.value)
def test_sample_matches_what_the_code_sends(kind):
    sample = json.loads(sample_path(kind).read_text())
    event = built(kind)
    assert sample['event_type'] == kind.value
    assert sample['priority'] == event.priority.value
    assert sample['publisher_id'] == ev.publisher_id(sample['payload']['nova_object.data']['host'])
    payload = sample['payload']
    assert list(payload) == list(event.payload)
    assert payload['nova_object.name'] == event.payload['nova_object.name']
    assert payload['nova_object.namespace'] == event.payload['nova_object.namespace']
    assert payload['nova_object.version'] == event.payload['nova_object.version']
    cls = PAYLOAD_CLASSES[payload['nova_object.name']]
    assert payload['nova_object.version'] == cls.VERSION
    check_types(payload['nova_object.data'], cls)
    check_types(event.payload['nova_object.data'], cls)


def test_no_sample_without_an_event():
    names = {sample_path(kind).name for kind in EventType}
    assert {p.name for p in SAMPLES.glob('*.json')} == names


def page_sections() -> dict[str, str]:
    """notifications.rst cut at each event's title: event type -> its text."""
    parts = re.split(r'^``(balloon\.[a-z._]+)``\n-+\n', PAGE.read_text(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_page_shows_every_event_with_its_priority_and_sample():
    sections = page_sections()
    assert sorted(sections) == sorted(kind.value for kind in EventType)
    for kind in EventType:
        text = sections[kind.value]
        priority = 'WARNING' if built(kind).priority is ev.Priority.WARNING else 'INFO'
        assert text.lstrip().startswith(f'Priority: {priority}.'), kind
        assert f'.. literalinclude:: ../notification_samples/{sample_path(kind).name}' in text
