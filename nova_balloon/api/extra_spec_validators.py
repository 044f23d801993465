"""Nova API validators for the ``balloon:*`` flavor extra specs.

nova-api loads ``register()`` through the ``nova.api.extra_spec_validators``
entry point, so that (from compute API microversion 2.86) a flavor cannot be
given a balloon key the agent would refuse, and Nova's extra spec listing
documents the keys. Nothing here is a second copy of the rules: the names and
descriptions come from ``flavor_policy.POLICY_KEYS`` and every value also goes
through the agent's own parser.

Nova's schema (``value``) knows only the types int, str and bool, with
min/max for int and a pattern or enum for str. It can express the bounds of
``balloon:min_memory_mb`` and ``balloon:shares``, but not a float range: for
``balloon:overcommit_ratio`` it states the decimal form only, and the range
1.0 to 64.0 (which also rejects nan and inf) is the parser's. Nova's bool
accepts t/y/f/n, which the agent does not; the parser rejects those too. No
per-key validator can check ``balloon:min_memory_mb`` against the flavor's
RAM: the agent leaves such a guest unmanaged and says why.

Nova is imported only when nova-api calls ``register()``: nova-balloon does not
depend on Nova.
"""

from __future__ import annotations

import functools
from typing import Any

from nova_balloon import flavor_policy
from nova_balloon.flavor_policy import (
    ENABLED,
    MAX_RATIO,
    MAX_SHARES,
    MIN_MEMORY_MB,
    OVERCOMMIT_RATIO,
    SHARES,
    PolicyKey,
)

# What Nova's declarative schema can say about each key: shown in Nova's
# listing, checked by Nova. The agent's parser has the last word.
NOVA_VALUES: dict[str, dict[str, Any]] = {
    OVERCOMMIT_RATIO: {
        'type': str,
        'pattern': r'[0-9]+(\.[0-9]+)?',
        'description': f'A decimal number from 1.0 to {MAX_RATIO:.1f}, such as 1.5.',
    },
    MIN_MEMORY_MB: {
        'type': int,
        'min': 0,
        'description': 'MiB; at most the flavor RAM.',
    },
    SHARES: {
        'type': int,
        'min': 1,
        'max': MAX_SHARES,
        'description': 'A relative weight; the default is [balloon] default_shares.',
    },
    ENABLED: {
        'type': bool,
        'description': 'true, yes, on, 1, false, no, off or 0.',
    },
}


def nova_value(key: PolicyKey) -> dict[str, Any]:
    """Nova's schema for a key; a key Nova's types cannot describe is a string."""
    return NOVA_VALUES.get(key.name, {'type': str})


@functools.cache
def _validator_class() -> type:
    from nova import exception
    from nova.api.validation.extra_specs import base

    class BalloonSpecValidator(base.ExtraSpecValidator):
        """Nova's check of name and schema, plus the agent's own parser."""

        def validate(self, name: str, value: str) -> None:
            # The parser first: its message says what is wanted, where Nova's
            # would quote a regular expression.
            key = flavor_policy.KEYS_BY_NAME.get(name)
            if key is not None:
                try:
                    key.parse(value)
                except ValueError as exc:
                    raise exception.ValidationError(
                        f'Validation failed; {name}={value!r} {exc}.') from None
            try:
                super().validate(name, value)
            except exception.ValidationError as exc:
                wanted = self.value.get('description')
                if not wanted:
                    raise
                raise exception.ValidationError(f'{exc} Expected: {wanted}') from None

    return BalloonSpecValidator


def register() -> list[Any]:
    """The validators of every ``balloon:*`` key, for nova-api's stevedore loader."""
    cls = _validator_class()
    return [cls(name=key.name, description=key.description, value=nova_value(key))
            for key in flavor_policy.POLICY_KEYS]
