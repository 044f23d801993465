"""The operator docs name every option and every flavor key, and README links them."""

from __future__ import annotations

from pathlib import Path

import pytest

from nova_balloon import flavor_policy
from nova_balloon.conf import opts

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / 'doc' / 'source'
PAGES = ('install', 'configuration', 'flavors', 'operations')


@pytest.mark.parametrize('group, opt', [(group.name, opt.name)
                                        for group, group_opts in opts.list_opts()
                                        for opt in group_opts])
def test_configuration_names_every_option(group, opt):
    text = (DOCS / 'configuration.rst').read_text()
    assert f'``{opt}``' in text, f'[{group}] {opt} is missing from doc/source/configuration.rst'


def test_flavors_page_names_every_key():
    text = (DOCS / 'flavors.rst').read_text()
    for key in flavor_policy.POLICY_KEYS:
        assert f'``{key.name}``' in text


def test_readme_links_every_page():
    readme = (REPO / 'README.md').read_text()
    for page in PAGES:
        assert f'doc/source/{page}.rst' in readme
        assert (DOCS / f'{page}.rst').exists()
