"""etc/systemd/nova-balloon-agent.service: the unit systemd would load."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / 'etc' / 'systemd' / 'nova-balloon-agent.service'
# oslo.service's default [DEFAULT] graceful_shutdown_timeout.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    parser.read(UNIT)
    return parser


def test_stop_leaves_time_to_restore_guests():
    service = _unit()['Service']
    assert service['KillSignal'] == 'SIGTERM'
    assert int(service['TimeoutStopSec']) > GRACEFUL_SHUTDOWN_TIMEOUT_S
    assert service['Type'] == 'simple'
    assert service['Restart'] == 'on-failure'
    # The default [balloon] state_file lives there and must survive restarts.
    assert service['RuntimeDirectory'] == 'nova-balloon'
    assert service['RuntimeDirectoryPreserve'] == 'yes'


def test_starts_the_agent_after_libvirt():
    parser = _unit()
    assert 'libvirtd.service' in parser['Unit']['After']
    command = parser['Service']['ExecStart'].split()
    assert Path(command[0]).name == 'nova-balloon-agent'
    assert command[1::2] == ['--config-file'] * (len(command) // 2)


def test_systemd_accepts_it(tmp_path):
    if shutil.which('systemd-analyze') is None:
        pytest.skip('systemd-analyze is not installed')
    # The installed agent stands in for /usr/local/bin, which systemd checks.
    agent = Path(sys.executable).parent / 'nova-balloon-agent'
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace('/usr/local/bin/nova-balloon-agent', str(agent)))
    result = subprocess.run(['systemd-analyze', 'verify', str(unit)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_files_kept_across_reboots_have_a_directory_the_agent_may_write():
    from nova_balloon.conf import capacity, placement_ratio
    service = _unit()['Service']
    # systemd creates /var/lib/<StateDirectory> owned by User=.
    state_dir = f"/var/lib/{service['StateDirectory']}/"
    defaults = [opt.default for module in (capacity, placement_ratio)
                for opts in module.list_opts().values() for opt in opts
                if isinstance(opt.default, str) and opt.default.startswith('/var/lib/')]
    assert defaults and all(path.startswith(state_dir) for path in defaults), defaults
