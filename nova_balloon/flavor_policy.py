"""Per-flavor balloon policy: the ``balloon:*`` keys, their sources and checks.

Precedence, key by key: the flavor's extra specs in the domain XML (Nova
2025.2 and later), then the ``[balloon] flavor_policy_file`` entry for the
flavor's name, then the ``[balloon] default_*`` options. A bad value anywhere
makes the guest unmanaged (it keeps its full memory) with a reason that names
the key and the value: guessing a bound is how guests get hurt.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import yaml
from oslo_log import log as logging

from nova_balloon.model import KIB_PER_MIB, FlavorPolicy

LOG = logging.getLogger(__name__)

PREFIX = 'balloon:'
OVERCOMMIT_RATIO = PREFIX + 'overcommit_ratio'
MIN_MEMORY_MB = PREFIX + 'min_memory_mb'
SHARES = PREFIX + 'shares'
ENABLED = PREFIX + 'enabled'

_TRUE = frozenset({'true', 'yes', 'on', '1'})
_FALSE = frozenset({'false', 'no', 'off', '0'})
MAX_SHARES = 1_000_000
MAX_RATIO = 64.0


def parse_ratio(value: Any) -> float:
    problem = f'must be a number from 1.0 to {MAX_RATIO:g}'
    if isinstance(value, bool):
        raise ValueError(problem)
    try:
        ratio = float(str(value).strip())
    except ValueError:
        raise ValueError(problem) from None
    if not math.isfinite(ratio) or ratio < 1.0 or ratio > MAX_RATIO:
        raise ValueError(problem)
    return ratio


def parse_min_memory_mb(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError('must be a whole number of MiB')
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        raise ValueError('must be a whole number of MiB, 0 or more')
    return int(text)


def parse_shares(value: Any) -> int:
    text = str(value).strip()
    whole = text.isascii() and text.isdigit()
    if isinstance(value, bool) or not whole or not 1 <= int(text) <= MAX_SHARES:
        raise ValueError(f'must be a whole number from 1 to {MAX_SHARES}')
    return int(text)


def parse_enabled(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError('must be true or false')


@dataclasses.dataclass(frozen=True)
class PolicyKey:
    """One ``balloon:*`` key: its name, parser and the help Nova's API shows."""

    name: str
    parse: Callable[[Any], Any]
    description: str
    field: str


POLICY_KEYS: tuple[PolicyKey, ...] = (
    PolicyKey(OVERCOMMIT_RATIO, parse_ratio,
              'The guest may be reclaimed down to flavor RAM divided by this '
              'ratio (1.0 to 64.0); 1.0 means never reclaimed.',
              'overcommit_ratio'),
    PolicyKey(MIN_MEMORY_MB, parse_min_memory_mb,
              'Absolute floor of the guest in MiB; the higher of this and '
              'RAM / ratio applies. Must not exceed the flavor RAM.',
              'min_memory_mb'),
    PolicyKey(SHARES, parse_shares,
              'Weight of the guest when guests compete for host memory '
              f'(1 to {MAX_SHARES}).',
              'shares'),
    PolicyKey(ENABLED, parse_enabled,
              'false excludes the guest from ballooning.',
              'enabled'),
)
KEYS_BY_NAME = {key.name: key for key in POLICY_KEYS}


class PolicyError(ValueError):
    """A balloon key with a value the agent refuses to act on."""

    def __init__(self, key: str, value: Any, problem: str, source: str):
        super().__init__(f'{key}={value!r} from {source} {problem}')
        self.key = key
        self.value = value
        self.source = source


@dataclasses.dataclass(frozen=True)
class PolicyDefaults:
    overcommit_ratio: float
    min_memory_mb: int
    shares: int


def resolve(extra_specs: Mapping[str, Any] | None,
            file_entry: Mapping[str, Any] | None,
            defaults: PolicyDefaults,
            ceiling_kib: int) -> FlavorPolicy:
    """Merge the sources key by key and check every value; raises PolicyError."""
    values: dict[str, Any] = {
        'overcommit_ratio': defaults.overcommit_ratio,
        'min_memory_mb': defaults.min_memory_mb,
        'shares': defaults.shares,
        'enabled': True,
    }
    sources = dict.fromkeys(values, 'defaults')
    for source, entries in (('policy file', file_entry), ('extra specs', extra_specs)):
        for key in POLICY_KEYS:
            if entries is None or key.name not in entries:
                continue
            raw = entries[key.name]
            try:
                values[key.field] = key.parse(raw)
            except ValueError as exc:
                raise PolicyError(key.name, raw, str(exc), source) from None
            sources[key.field] = source
    policy = FlavorPolicy(source=', '.join(sorted(set(sources.values()))), **values)
    if sources['min_memory_mb'] != 'defaults' and \
            policy.min_memory_mb * KIB_PER_MIB > ceiling_kib:
        raise PolicyError(MIN_MEMORY_MB, policy.min_memory_mb,
                          f'is above the flavor RAM ({ceiling_kib // KIB_PER_MIB} MiB)',
                          sources['min_memory_mb'])
    return policy


class PolicyFileError(ValueError):
    """The flavor policy file cannot be used; the message says why."""


def parse_policy_file(text: str, path: str) -> dict[str, dict[str, Any]]:
    """Parse and check the YAML flavor policy file: flavor name -> balloon keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(f'{path}: not valid YAML: {exc}') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyFileError(f'{path}: expected a mapping of flavor names to '
                              f'balloon keys, found {type(data).__name__}')
    flavors: dict[str, dict[str, Any]] = {}
    for flavor, keys in data.items():
        if not isinstance(keys, dict):
            raise PolicyFileError(f'{path}: flavor {flavor!r}: expected a mapping '
                                  f'of balloon keys, found {type(keys).__name__}')
        for key, value in keys.items():
            if key not in KEYS_BY_NAME:
                raise PolicyFileError(f'{path}: flavor {flavor!r}: unknown key {key!r} '
                                      f'(known: {", ".join(KEYS_BY_NAME)})')
            try:
                KEYS_BY_NAME[key].parse(value)
            except ValueError as exc:
                raise PolicyFileError(f'{path}: flavor {flavor!r}: {key}={value!r} '
                                      f'{exc}') from None
        flavors[str(flavor)] = keys
    return flavors


class PolicyFile:
    """The flavor policy file, re-read when it changes; the last good copy stays."""

    def __init__(self, path: str | None):
        self.path = path
        self._flavors: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None
        self.error: str | None = None

    def flavors(self) -> dict[str, dict[str, Any]]:
        if not self.path:
            return self._flavors
        stamp = None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return self._flavors
            with open(self.path, encoding='utf-8') as f:
                text = f.read()
            self._flavors = parse_policy_file(text, self.path)
        except (OSError, UnicodeDecodeError, PolicyFileError) as exc:
            # A broken file is not re-read until it changes; a missing one is
            # looked for again every cycle.
            self._stamp = stamp
            problem = str(exc)
            if problem != self.error:
                LOG.warning('Flavor policy file unusable, keeping the last good '
                            'policies (%d flavors): %s', len(self._flavors), problem)
            self.error = problem
            return self._flavors
        self._stamp = stamp
        self.error = None
        LOG.info('Loaded flavor policy file %s: %d flavors', self.path, len(self._flavors))
        return self._flavors
