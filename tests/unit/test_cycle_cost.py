"""What keeps a cycle cheap changes nothing it decides: the policy memo, the paused collector."""

from __future__ import annotations

import gc

from nova_balloon.controller import cycle, planner
from nova_balloon.flavor_policy import OVERCOMMIT_RATIO, PolicyDefaults, PolicyError
from nova_balloon.model import FlavorPolicy

MiB = 1024
CEILING = 4096 * MiB
DEFAULTS = PolicyDefaults(overcommit_ratio=2.0, min_memory_mb=256, shares=1000)


def test_memo_resolves_once_while_sources_stay_the_same():
    memo = planner.PolicyMemo()
    specs = {OVERCOMMIT_RATIO: '4.0'}
    first = memo.resolve('u1', specs, None, DEFAULTS, CEILING)
    assert isinstance(first, FlavorPolicy) and first.overcommit_ratio == 4.0
    assert memo.resolve('u1', specs, None, DEFAULTS, CEILING) is first


def test_memo_resolves_again_when_a_source_changes():
    memo = planner.PolicyMemo()
    specs = {OVERCOMMIT_RATIO: '4.0'}
    memo.resolve('u1', specs, None, DEFAULTS, CEILING)
    specs[OVERCOMMIT_RATIO] = '3.0'  # changed in place
    assert memo.resolve('u1', specs, None, DEFAULTS, CEILING).overcommit_ratio == 3.0
    entry = {OVERCOMMIT_RATIO: 8}
    assert memo.resolve('u1', {}, entry, DEFAULTS, CEILING).overcommit_ratio == 8.0
    assert memo.resolve('u1', {}, {OVERCOMMIT_RATIO: 1.5}, DEFAULTS,
                        CEILING).overcommit_ratio == 1.5
    assert memo.resolve('u1', {}, None, DEFAULTS, CEILING).overcommit_ratio == 2.0


def test_memo_keeps_errors_and_forgets_gone_guests():
    memo = planner.PolicyMemo()
    specs = {OVERCOMMIT_RATIO: 'lots'}
    error = memo.resolve('u1', specs, None, DEFAULTS, CEILING)
    assert isinstance(error, PolicyError) and error.__traceback__ is None
    assert memo.resolve('u1', specs, None, DEFAULTS, CEILING) is error
    memo.resolve('u2', {}, None, DEFAULTS, CEILING)
    memo.retain({'u2': None})
    assert memo.resolve('u1', specs, None, DEFAULTS, CEILING) is not error


def test_collector_paused_in_a_cycle_and_back_after_it():
    assert gc.isenabled()
    with cycle._collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collector_left_off_when_it_was_off():
    gc.disable()
    try:
        with cycle._collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
