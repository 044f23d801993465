"""The agent refuses to start on bad options, naming the option.

It exits before it connects to libvirt, so these run without a hypervisor.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

AGENT = str(Path(sys.executable).parent / 'nova-balloon-agent')


@pytest.mark.parametrize('option, value, expected', [
    ('interval', 'abc', '[balloon] interval'),
    ('interval', '0', '[balloon] interval'),
    ('default_overcommit_ratio', '0.5', '[balloon] default_overcommit_ratio'),
    ('dry_run', 'maybe', '[balloon] dry_run'),
    ('policy', 'no-such-policy', "[balloon] policy 'no-such-policy'"),
])
def test_bad_option_stops_the_agent(tmp_path: Path, option: str, value: str,
                                    expected: str) -> None:
    config = tmp_path / 'agent.conf'
    config.write_text(f'[balloon]\nstate_file = {tmp_path}/state.json\n{option} = {value}\n')
    result = subprocess.run([AGENT, '--config-file', str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / 'nope.conf'
    result = subprocess.run([AGENT, '--config-file', str(missing)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert str(missing) in result.stderr
