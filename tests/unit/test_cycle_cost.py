"""What keeps a cycle cheap changes nothing it decides.

Reasons formatted only when read, the target-only guard for policies.
"""

from __future__ import annotations

import gc

from hypothesis import given

from nova_balloon.controller.cycle import tune_collector
from nova_balloon.model import Action, Decision
from nova_balloon.safety.rules import guard, guard_target
from tests.unit.test_safety import CEILING as VIEW_CEILING
from tests.unit.test_safety import LIMITS, PROPERTY, GiB, cases, view


@PROPERTY
@given(cases())
def test_guard_target_is_the_target_of_guard(case):
    guest, proposal, limits = case
    assert guard_target(guest, proposal, limits) == guard(guest, proposal, limits).target_kib


@PROPERTY
@given(cases(shrinkable=True))
def test_guard_target_is_the_target_of_guard_for_shrinkable_guests(case):
    guest, proposal, limits = case
    assert guard_target(guest, proposal, limits) == guard(guest, proposal, limits).target_kib


def test_reason_formatted_when_read():
    """Every note in MiB, as the f-strings formatted it before notes were deferred."""
    guest = view(actual=VIEW_CEILING, usable=VIEW_CEILING - 2000 * 1024,
                 target=VIEW_CEILING - 64 * 1024)
    d = guard(guest, 1 * GiB, LIMITS)
    assert d.reason == ('proposed 1024 MiB, bounds [1024, 4096] MiB; keeps use 2000 MiB + '
                        'headroom 409 MiB; shrink limited to 128 MiB per cycle; balloon '
                        'still moving to 4032 MiB')
    oom = guard(view(actual=3 * GiB, usable=0, target=2 * GiB, deflated_on_oom=True),
                None, LIMITS)
    assert oom.reason == ('proposed 2048 MiB, bounds [1024, 4096] MiB; no shrink: guest '
                          'deflated its balloon on OOM (actual 3072 MiB > target 2048 MiB)')
    held = guard(view(actual=3 * GiB, usable=2 * GiB, target=3 * GiB), 3 * GiB - 1, LIMITS)
    assert held.reason == ('proposed 3071 MiB, bounds [1024, 4096] MiB; change -1 MiB '
                           'inside the dead band')
    unresponsive = guard(view(actual=2 * GiB, unresponsive='stuck {0}'), None, LIMITS)
    assert unresponsive.reason == ('proposed 2048 MiB, bounds [1024, 4096] MiB; '
                                   'unresponsive: stuck {0}; full memory given back')


def test_reason_of_a_decision_without_kib():
    """Strings pass through as they are, braces and all; None reads as None."""
    d = Decision('u', 'g', Action.IGNORE, None, (('{}', 'weird {reason}'),
                                                 ('target {} MiB', None)))
    assert d.reason == 'weird {reason}; target None MiB'


def test_the_collector_is_tuned_once_as_configured():
    before = gc.get_threshold()
    try:
        tune_collector(100_000)
        assert gc.get_threshold() == (100_000, *before[1:])
        tune_collector(0)  # Python's default stays as it is.
        assert gc.get_threshold() == (100_000, *before[1:])
    finally:
        gc.set_threshold(*before)
