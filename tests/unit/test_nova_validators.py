"""The balloon:* validators as the real Nova (from the package index) runs them.

Nova loads them through the ``nova.api.extra_spec_validators`` entry point at
import, exactly as nova-api does, so these tests need nova-balloon installed
(``pip install -e .``) and skip when Nova is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from importlib import metadata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from nova_balloon import flavor_policy
from nova_balloon.api import extra_spec_validators
from nova_balloon.flavor_policy import ENABLED, MIN_MEMORY_MB, OVERCOMMIT_RATIO, SHARES

# Nova imports eventlet, which warns about any fork (subprocess) after it.
pytestmark = pytest.mark.filterwarnings('ignore:Using fork:DeprecationWarning')

with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # Nova's dependencies warn about eventlet.
    nova_exception = pytest.importorskip('nova.exception')
    validators = pytest.importorskip('nova.api.validation.extra_specs.validators')


def accepted(name: str, value: str) -> bool:
    try:
        validators.validate(name, value)
    except nova_exception.ValidationError:
        return False
    return True


def agent_accepts(name: str, value: str) -> bool:
    try:
        flavor_policy.KEYS_BY_NAME[name].parse(value)
    except ValueError:
        return False
    return True


GOOD = [
    (OVERCOMMIT_RATIO, '1.0'), (OVERCOMMIT_RATIO, '1'), (OVERCOMMIT_RATIO, '1.5'),
    (OVERCOMMIT_RATIO, '2'), (OVERCOMMIT_RATIO, '64'), (OVERCOMMIT_RATIO, '64.0'),
    (MIN_MEMORY_MB, '0'), (MIN_MEMORY_MB, '2048'),
    (SHARES, '1'), (SHARES, '1000'), (SHARES, '1000000'),
    (ENABLED, 'true'), (ENABLED, 'False'), (ENABLED, 'yes'), (ENABLED, 'off'),
    (ENABLED, '1'), (ENABLED, '0'),
]

# (name, value, what the message must say)
BAD = [
    (OVERCOMMIT_RATIO, 'abc', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, '0.5', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, '0.99', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, '64.5', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, '-2', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, 'nan', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, 'inf', 'must be a number from 1.0 to 64'),
    (OVERCOMMIT_RATIO, '', 'must be a number from 1.0 to 64'),
    # The agent would take these; Nova's pattern keeps flavors in plain decimals.
    (OVERCOMMIT_RATIO, '1e1', 'Expected: A decimal number from 1.0 to 64.0'),
    (OVERCOMMIT_RATIO, ' 2', 'Expected: A decimal number'),
    (MIN_MEMORY_MB, '-1', 'whole number of MiB'),
    (MIN_MEMORY_MB, '1.5', 'whole number of MiB'),
    (MIN_MEMORY_MB, 'lots', 'whole number of MiB'),
    (MIN_MEMORY_MB, '+512', 'whole number of MiB'),
    (SHARES, '0', 'from 1 to 1000000'),
    (SHARES, '1000001', 'from 1 to 1000000'),
    (SHARES, 'many', 'from 1 to 1000000'),
    (ENABLED, 'maybe', 'must be true or false'),
    # Nova's own bool accepts t/y/f/n; the agent does not, so Nova must not.
    (ENABLED, 't', 'must be true or false'),
    (ENABLED, 'n', 'must be true or false'),
]


def test_entry_point_is_published():
    eps = metadata.entry_points(group='nova.api.extra_spec_validators')
    assert {ep.name: ep.value for ep in eps}.get('balloon') == \
        'nova_balloon.api.extra_spec_validators'


def test_every_policy_key_is_in_novas_listing():
    for key in flavor_policy.POLICY_KEYS:
        validator = validators.VALIDATORS[key.name]
        assert validator.description == key.description
        assert validator.value['type'] in (int, str, bool)
    # The namespace is Nova's: a misspelt balloon key is refused, not ignored.
    assert 'balloon' in validators.NAMESPACES


def test_every_policy_key_has_a_nova_schema():
    """A key added to POLICY_KEYS needs its entry in NOVA_VALUES, for the listing."""
    assert set(extra_spec_validators.NOVA_VALUES) == set(flavor_policy.KEYS_BY_NAME)
    for value in extra_spec_validators.NOVA_VALUES.values():
        assert value.get('description')


@pytest.mark.parametrize('name, value', GOOD)
def test_nova_accepts_good_values(name, value):
    validators.validate(name, value)
    assert agent_accepts(name, value)


@pytest.mark.parametrize('name, value, message', BAD)
def test_nova_rejects_bad_values_with_a_clear_message(name, value, message):
    with pytest.raises(nova_exception.ValidationError) as info:
        validators.validate(name, value)
    assert message in str(info.value)


def test_nova_rejects_unknown_balloon_key():
    with pytest.raises(nova_exception.ValidationError, match='balloon:overcommit'):
        validators.validate('balloon:overcommit', '1.5')


@given(st.sampled_from(sorted(flavor_policy.KEYS_BY_NAME)),
       st.one_of(st.text(max_size=12),
                 st.floats(allow_nan=True, allow_infinity=True).map(str),
                 st.integers(-10, 2_000_000).map(str),
                 st.sampled_from(['t', 'y', 'f', 'n', 'On', ' yes ', '1_0', '0x10', '1.',
                                  '.5', '²', '1e1', 'Infinity', '-0', '00064.000'])))
def test_what_nova_accepts_the_agent_accepts(name, value):
    """The API may be stricter than the agent, never looser."""
    if accepted(name, value):
        assert agent_accepts(name, value), (name, value)


def test_nova_api_enforces_them_from_microversion_2_86():
    """Through the flavor extra specs controller, as a PUT/POST would."""
    from nova.api.openstack import api_version_request, wsgi
    from nova.api.openstack.compute import flavors_extraspecs

    controller = flavors_extraspecs.FlavorExtraSpecsController()

    def check(version: str, specs: dict) -> None:
        req = wsgi.Request.blank('/')
        req.api_version_request = api_version_request.APIVersionRequest(version)
        controller._check_extra_specs_value(req, specs)

    with pytest.raises(nova_exception.ValidationError) as info:
        check('2.86', {OVERCOMMIT_RATIO: 'abc'})
    assert info.value.code == 400
    # JSON numbers and booleans arrive as numbers; Nova turns them into text.
    check('2.86', {OVERCOMMIT_RATIO: 1.5, SHARES: 10, ENABLED: True, MIN_MEMORY_MB: 0})
    # Older microversions validate nothing, and 2.61 is what `openstack flavor
    # set --property` sends unless told otherwise: the docs show 2.86 for that.
    check('2.85', {OVERCOMMIT_RATIO: 'abc'})
    check('2.61', {OVERCOMMIT_RATIO: 'abc', 'balloon:overcommit': '1.5'})


def test_module_imports_without_nova_or_libvirt():
    """nova-balloon does not depend on Nova: only register() needs it. And
    nova-api nodes need no libvirt-python (the docs install with --no-deps)."""
    code = ('import sys; sys.modules["nova"] = sys.modules["libvirt"] = None\n'
            'from nova_balloon.api import extra_spec_validators as v\n'
            'print(len(v.NOVA_VALUES))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(len(flavor_policy.POLICY_KEYS))


def installed_with(name: str) -> set[str]:
    """Every distribution that installing ``name`` brings (extras left out)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = canonicalize_name(todo.pop())
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({'extra': ''}):
                todo.append(req.name)
    return seen


def test_validators_need_only_what_nova_brings():
    """API nodes (and devstack's) install nova-balloon with --no-deps: every
    distribution the validators import must come with Nova already."""
    code = ('import json, sys\n'
            'from nova_balloon.api import extra_spec_validators\n'
            'print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True)
    by_module = metadata.packages_distributions()
    loaded = {canonicalize_name(dist) for module in json.loads(out.stdout)
              if module not in sys.stdlib_module_names
              for dist in by_module.get(module, ())}
    loaded.discard('nova-balloon')
    assert 'oslo-log' in loaded and 'pyyaml' in loaded  # the check sees them
    assert not loaded - installed_with('nova'), sorted(loaded - installed_with('nova'))
