"""Unit tests of nova_balloon.flavor_policy: precedence, floors, checks, the file."""

from __future__ import annotations

import os

import pytest

from nova_balloon import flavor_policy
from nova_balloon.flavor_policy import (
    ENABLED,
    MIN_MEMORY_MB,
    OVERCOMMIT_RATIO,
    SHARES,
    PolicyDefaults,
    PolicyError,
    PolicyFile,
    PolicyFileError,
    parse_policy_file,
    resolve,
)
from nova_balloon.model import FlavorPolicy

MiB = 1024
GiB = 1024 * MiB
CEILING = 4 * GiB  # a 4096 MiB flavor, in KiB
DEFAULTS = PolicyDefaults(overcommit_ratio=1.0, min_memory_mb=256, shares=1000)


def policy(ratio: float = 1.0, min_mb: int = 0) -> FlavorPolicy:
    return FlavorPolicy(overcommit_ratio=ratio, min_memory_mb=min_mb, shares=1,
                        enabled=True, source='test')


# -- precedence ---------------------------------------------------------------

def test_defaults_only():
    p = resolve(None, None, DEFAULTS, CEILING)
    assert (p.overcommit_ratio, p.min_memory_mb, p.shares, p.enabled) == (1.0, 256, 1000, True)
    assert p.source == 'defaults'


def test_policy_file_beats_defaults_key_by_key():
    p = resolve(None, {OVERCOMMIT_RATIO: 2, SHARES: '50'}, DEFAULTS, CEILING)
    assert p.overcommit_ratio == 2.0
    assert p.shares == 50
    assert p.min_memory_mb == 256  # not in the file: default
    assert p.source == 'defaults, policy file'


def test_extra_specs_beat_policy_file_key_by_key():
    specs = {OVERCOMMIT_RATIO: '3.0', ENABLED: 'false'}
    entry = {OVERCOMMIT_RATIO: 2, MIN_MEMORY_MB: 1024, SHARES: 7}
    p = resolve(specs, entry, DEFAULTS, CEILING)
    assert p.overcommit_ratio == 3.0  # extra spec wins
    assert p.enabled is False  # extra spec only
    assert p.min_memory_mb == 1024  # file only
    assert p.shares == 7  # file only
    assert p.source == 'extra specs, policy file'


def test_all_three_sources_named():
    p = resolve({SHARES: '5'}, {OVERCOMMIT_RATIO: '2'}, DEFAULTS, CEILING)
    assert (p.overcommit_ratio, p.min_memory_mb, p.shares) == (2.0, 256, 5)
    assert p.source == 'defaults, extra specs, policy file'


def test_unrelated_extra_specs_ignored_and_empty_specs_fall_through():
    p = resolve({'hw:mem_page_size': 'large'}, {SHARES: 9}, DEFAULTS, CEILING)
    assert p.shares == 9
    p = resolve({}, {SHARES: 9}, DEFAULTS, CEILING)
    assert p.shares == 9


@pytest.mark.parametrize('raw, expected', [
    ('true', True), ('True', True), (' yes ', True), ('on', True), ('1', True), (True, True),
    ('false', False), ('FALSE', False), ('no', False), ('off', False), ('0', False),
    (False, False),
])
def test_enabled_spellings(raw, expected):
    assert resolve({ENABLED: raw}, None, DEFAULTS, CEILING).enabled is expected


@pytest.mark.parametrize('raw, expected', [('1.0', 1.0), (' 1.5 ', 1.5), (64, 64.0), ('2', 2.0)])
def test_ratio_accepted(raw, expected):
    assert resolve({OVERCOMMIT_RATIO: raw}, None, DEFAULTS, CEILING).overcommit_ratio == expected


def test_min_memory_equal_to_flavor_ram_is_accepted():
    assert resolve({MIN_MEMORY_MB: '4096'}, None, DEFAULTS, CEILING).min_memory_mb == 4096


def test_default_min_above_flavor_ram_is_not_an_error():
    """Only an operator-set min_memory_mb is checked against the flavor RAM."""
    defaults = PolicyDefaults(overcommit_ratio=2.0, min_memory_mb=8192, shares=1)
    p = resolve(None, None, defaults, CEILING)
    assert p.floor_kib(CEILING) == CEILING


# -- floor arithmetic -----------------------------------------------------------

@pytest.mark.parametrize('ceiling, ratio, min_mb, floor', [
    (4 * GiB, 2.0, 0, 2 * GiB),          # by ratio: 4194304 / 2
    (4 * GiB, 2.0, 256, 2 * GiB),        # ratio wins over a small min
    (4 * GiB, 2.0, 3000, 3000 * MiB),    # min wins: 3072000 > 2097152
    (4 * GiB, 1.5, 0, 2796202),          # 4194304 / 1.5 = 2796202.67, truncated
    (4 * GiB, 1.0, 0, 4 * GiB),          # ratio 1.0: never reclaimed
    (4 * GiB, 2.0, 5000, 4 * GiB),       # min above ceiling: capped at the ceiling
    (1000, 3.0, 0, 333),                 # 333.33 truncated
    (4 * GiB, 64.0, 0, 65536),           # 4194304 / 64
])
def test_floor_kib(ceiling, ratio, min_mb, floor):
    assert policy(ratio, min_mb).floor_kib(ceiling) == floor


# -- bad values -----------------------------------------------------------------

BAD_VALUES = [
    (OVERCOMMIT_RATIO, 'abc'),
    (OVERCOMMIT_RATIO, '0.5'),
    (OVERCOMMIT_RATIO, 'inf'),
    (OVERCOMMIT_RATIO, 'nan'),
    (OVERCOMMIT_RATIO, '-2'),
    (OVERCOMMIT_RATIO, True),
    (OVERCOMMIT_RATIO, '64.5'),
    (OVERCOMMIT_RATIO, ''),
    (MIN_MEMORY_MB, '-1'),
    (MIN_MEMORY_MB, '1.5'),
    (MIN_MEMORY_MB, 'abc'),
    (MIN_MEMORY_MB, True),
    (SHARES, '0'),
    (SHARES, 'x'),
    (SHARES, '1000001'),
    (SHARES, '-3'),
    (ENABLED, 'maybe'),
    (ENABLED, ''),
]


@pytest.mark.parametrize('key, value', BAD_VALUES)
def test_bad_extra_spec_raises_policy_error_naming_key_and_value(key, value):
    with pytest.raises(PolicyError) as info:
        resolve({key: value}, None, DEFAULTS, CEILING)
    exc = info.value
    assert exc.key == key
    assert exc.value == value
    assert exc.source == 'extra specs'
    assert key in str(exc)
    assert repr(value) in str(exc)


@pytest.mark.parametrize('key, value', BAD_VALUES)
def test_bad_policy_file_entry_raises_policy_error(key, value):
    with pytest.raises(PolicyError) as info:
        resolve(None, {key: value}, DEFAULTS, CEILING)
    assert info.value.source == 'policy file'
    assert key in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize('specs, entry, source', [
    ({MIN_MEMORY_MB: '4097'}, None, 'extra specs'),
    (None, {MIN_MEMORY_MB: 8192}, 'policy file'),
])
def test_min_memory_above_flavor_ram(specs, entry, source):
    with pytest.raises(PolicyError) as info:
        resolve(specs, entry, DEFAULTS, CEILING)
    message = str(info.value)
    assert info.value.key == MIN_MEMORY_MB
    assert MIN_MEMORY_MB in message
    assert ('4097' if specs else '8192') in message
    assert '4096 MiB' in message  # the flavor RAM it is compared with
    assert info.value.source == source


def test_bad_value_in_overridden_source_still_rejected():
    """A bad value is refused even when a higher source sets the same key."""
    with pytest.raises(PolicyError):
        resolve({OVERCOMMIT_RATIO: '2'}, {OVERCOMMIT_RATIO: 'abc'}, DEFAULTS, CEILING)


# -- parse_policy_file ------------------------------------------------------------

def test_parse_valid_yaml():
    text = ('m1.large:\n'
            '  balloon:overcommit_ratio: 1.5\n'
            '  balloon:min_memory_mb: 2048\n'
            'm1.small:\n'
            '  balloon:enabled: false\n'
            '  balloon:shares: "10"\n')
    assert parse_policy_file(text, '/p.yaml') == {
        'm1.large': {OVERCOMMIT_RATIO: 1.5, MIN_MEMORY_MB: 2048},
        'm1.small': {ENABLED: False, SHARES: '10'},
    }


def test_parse_empty_file_is_no_flavors():
    assert parse_policy_file('', '/p.yaml') == {}
    assert parse_policy_file('# nothing yet\n', '/p.yaml') == {}


def test_parse_non_string_flavor_name_is_stringified():
    assert parse_policy_file('42:\n  balloon:shares: 3\n', '/p.yaml') == {'42': {SHARES: 3}}


def test_parse_not_yaml():
    with pytest.raises(PolicyFileError) as info:
        parse_policy_file('m1.large: [unclosed\n', '/etc/p.yaml')
    assert str(info.value).startswith('/etc/p.yaml: not valid YAML')


def test_parse_top_level_list():
    with pytest.raises(PolicyFileError) as info:
        parse_policy_file('- m1.large\n- m1.small\n', '/etc/p.yaml')
    assert '/etc/p.yaml' in str(info.value)
    assert 'found list' in str(info.value)


def test_parse_flavor_value_not_a_mapping():
    with pytest.raises(PolicyFileError) as info:
        parse_policy_file('m1.large: 1.5\n', '/etc/p.yaml')
    assert "flavor 'm1.large'" in str(info.value)
    assert 'found float' in str(info.value)


def test_parse_unknown_key():
    with pytest.raises(PolicyFileError) as info:
        parse_policy_file('m1.large:\n  balloon:ratio: 2\n', '/etc/p.yaml')
    message = str(info.value)
    assert "flavor 'm1.large'" in message
    assert "unknown key 'balloon:ratio'" in message


@pytest.mark.parametrize('key, value, shown', [
    (OVERCOMMIT_RATIO, '0.5', '0.5'),
    (MIN_MEMORY_MB, '-1', '-1'),
    (SHARES, '0', '0'),
    (ENABLED, 'maybe', "'maybe'"),
])
def test_parse_bad_value_names_flavor_key_and_value(key, value, shown):
    with pytest.raises(PolicyFileError) as info:
        parse_policy_file(f'm1.large:\n  {key}: {value}\n', '/etc/p.yaml')
    message = str(info.value)
    assert "flavor 'm1.large'" in message
    assert f'{key}=' in message
    assert shown in message


def test_policy_file_error_is_not_a_policy_error():
    """The two errors are caught at different places and must not be confused."""
    assert not issubclass(PolicyFileError, PolicyError)
    assert not issubclass(PolicyError, PolicyFileError)


# -- PolicyFile -----------------------------------------------------------------

GOOD = 'm1.large:\n  balloon:overcommit_ratio: 2\n'
GOOD_2 = 'm1.small:\n  balloon:shares: 5\nm1.large:\n  balloon:overcommit_ratio: 3\n'


def _write(path, text: str, mtime: int) -> None:
    """Write and give the file a distinct mtime: the reload keys on (mtime, size)."""
    path.write_text(text, encoding='utf-8')
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


def test_policy_file_without_path():
    pf = PolicyFile(None)
    assert pf.flavors() == {}
    assert pf.error is None


def test_policy_file_lifecycle(tmp_path):
    path = tmp_path / 'flavors.yaml'
    _write(path, GOOD, 1000)
    pf = PolicyFile(str(path))
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is None

    # Malformed rewrite: the last good flavors stay, the error is recorded.
    _write(path, 'm1.large: [\n', 2000)
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is not None and 'not valid YAML' in pf.error
    # Still broken and unchanged: same answer.
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is not None

    # A bad value is an error too.
    _write(path, 'm1.large:\n  balloon:overcommit_ratio: 0.5\n', 2500)
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert "flavor 'm1.large'" in pf.error

    # Missing file: keep the last good.
    path.unlink()
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is not None

    # Fixed: the new content loads and the error clears.
    _write(path, GOOD_2, 3000)
    assert pf.flavors() == {'m1.small': {SHARES: 5}, 'm1.large': {OVERCOMMIT_RATIO: 3}}
    assert pf.error is None


def test_policy_file_missing_from_the_start(tmp_path):
    path = tmp_path / 'absent.yaml'
    pf = PolicyFile(str(path))
    assert pf.flavors() == {}
    assert pf.error is not None
    # Created later: found on the next call.
    _write(path, GOOD, 1000)
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is None


def test_policy_file_not_reread_when_unchanged(tmp_path, monkeypatch):
    path = tmp_path / 'flavors.yaml'
    _write(path, GOOD, 1000)
    pf = PolicyFile(str(path))
    pf.flavors()
    calls = []
    monkeypatch.setattr(flavor_policy, 'parse_policy_file',
                        lambda *a: calls.append(a) or {})
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert calls == []


def test_policy_file_not_utf8(tmp_path):
    path = tmp_path / 'flavors.yaml'
    _write(path, GOOD, 1000)
    pf = PolicyFile(str(path))
    pf.flavors()
    path.write_bytes(b'm1.large:\n  balloon:shares: \xff\xfe\n')
    os.utime(path, ns=(2000 * 10**9, 2000 * 10**9))
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert pf.error is not None


def test_broken_policy_file_not_reread_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / 'flavors.yaml'
    _write(path, 'm1.large: [\n', 1000)
    pf = PolicyFile(str(path))
    assert pf.flavors() == {}
    first_error = pf.error
    assert first_error is not None
    calls = []
    real = flavor_policy.parse_policy_file
    monkeypatch.setattr(flavor_policy, 'parse_policy_file',
                        lambda *a: calls.append(a) or real(*a))
    assert pf.flavors() == {}
    assert calls == []
    assert pf.error == first_error
    _write(path, GOOD, 2000)
    assert pf.flavors() == {'m1.large': {OVERCOMMIT_RATIO: 2}}
    assert len(calls) == 1
