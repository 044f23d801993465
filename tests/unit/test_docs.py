"""The operator docs name every option and every flavor key, and README links them."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from nova_balloon import flavor_policy
from nova_balloon.cmd import cli
from nova_balloon.conf import opts

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / 'doc' / 'source'
PAGES = ('install', 'configuration', 'flavors', 'operations', 'deployment', 'cli')


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


def cli_sections() -> dict[str, str]:
    """cli.rst cut at each ``.. program::``: program name -> its text."""
    parts = re.split(r'^\.\. program:: (.+)$', (DOCS / 'cli.rst').read_text(), flags=re.M)
    return {name.strip(): text for name, text in zip(parts[1::2], parts[2::2], strict=True)}


def command_options() -> dict[str, set[str]]:
    """Every long option of every ``nova-balloon`` command, from its own parser."""
    subparsers = argparse.ArgumentParser().add_subparsers()
    for command in cli.COMMANDS:
        command.add_parser(subparsers)
    return {f'nova-balloon {name}': {option for action in parser._actions
                                     for option in action.option_strings
                                     if option.startswith('--') and option != '--help'}
            for name, parser in subparsers.choices.items()}


@pytest.mark.parametrize('program', sorted(command_options()))
def test_cli_reference_describes_every_option(program):
    section = cli_sections().get(program)
    assert section is not None, f'doc/source/cli.rst has no ".. program:: {program}"'
    described = set(re.findall(r'^\.\. option:: (--[\w-]+)', section, flags=re.M))
    assert described == command_options()[program]


def test_cli_reference_names_the_simulate_extra():
    """The extra the page tells operators to install is the one setup.cfg has."""
    assert "pip install 'nova-balloon[simulate]'" in cli_sections()['nova-balloon simulate']
    assert '\nsimulate =\n' in (REPO / 'setup.cfg').read_text()


def shown_commands(text: str) -> list[str]:
    """Every command line shown, with backslash continuations joined."""
    return re.sub(r'\\\n\s*', ' ', text).splitlines()


def test_every_balloon_key_is_set_at_microversion_2_86():
    """OSC sends 2.61 to flavor set unless told; Nova validates from 2.86 only."""
    sets = []
    for path in [REPO / 'README.md', *sorted(DOCS.glob('*.rst'))]:
        for line in shown_commands(path.read_text()):
            if re.search(r'flavor (set|create)\b.*--property balloon:', line):
                sets.append(line)
                assert '--os-compute-api-version 2.86' in line, f'{path.name}: {line}'
    assert len(sets) >= 5  # README, flavors.rst, operations.rst, install.rst
