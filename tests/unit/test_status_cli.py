"""``nova-balloon status`` names the Nova setting when no guest has a balloon.

The guests are what Nova's own libvirt driver writes for a given ``[libvirt]
mem_stats_period_seconds``, served by libvirt's test driver (a node XML file),
so no libvirtd and no QEMU are needed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nova_balloon.cmd import status

BIN = Path(sys.executable).parent

pytestmark = pytest.mark.skipif(importlib.util.find_spec('nova') is None,
                                reason='Nova is not installed')

# Nova's LibvirtDriver adds each guest's <memballoon> from its config. Each
# argument is one node, "0,-1" two guests with those periods; out comes a
# <node> file for libvirt's test driver per argument, as JSON.
NOVA_GUESTS = r'''
import json, sys, warnings
warnings.simplefilter('ignore')
import nova.conf
from nova.virt.libvirt import config as vconfig
from nova.virt.libvirt import driver

CONF = nova.conf.CONF
CONF([], project='nova', default_config_files=[])
CONF.set_override('virt_type', 'qemu', 'libvirt')
nodes = {}
for node in sys.argv[1:]:
    domains = []
    for i, period in enumerate(node.split(',')):
        CONF.set_override('mem_stats_period_seconds', int(period), 'libvirt')
        guest = vconfig.LibvirtConfigGuest()
        guest.virt_type = 'test'
        guest.name = f'guest-{i}'
        guest.uuid = f'11111111-2222-3333-4444-55555555555{i}'
        guest.memory = 256 * 1024
        guest.vcpus = 1
        guest.os_type = 'hvm'
        driver.LibvirtDriver._guest_add_memory_balloon(guest)
        domains.append(guest.to_xml())
    nodes[node] = '<node>' + ''.join(domains) + '</node>'
print(json.dumps(nodes))
'''
NODES = ('0,-1', '10,10', '0,10')


@pytest.fixture(scope='module')
def nova_nodes() -> dict[str, str]:
    """One Nova run (its import takes seconds) for every node of the tests."""
    out = subprocess.run([sys.executable, '-c', NOVA_GUESTS, *NODES],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout)


def status_output(tmp_path: Path, node_xml: str) -> str:
    node = tmp_path / 'node.xml'
    node.write_text(node_xml)
    conf = tmp_path / 'nova-balloon.conf'
    conf.write_text(f'[libvirt]\nconnection_uri = test://{node}\n\n'
                    f'[balloon]\nstate_file = {tmp_path / "state.json"}\n')
    out = subprocess.run([str(BIN / 'nova-balloon'), '--config-file', str(conf), 'status'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_no_balloon_on_any_guest_names_mem_stats_period_seconds(tmp_path, nova_nodes):
    out = status_output(tmp_path, nova_nodes['0,-1'])
    lines = out.splitlines()
    assert sum('no balloon device' in line for line in lines) == 2
    assert lines[-1] == status.NO_BALLOON_ANYWHERE
    assert 'mem_stats_period_seconds <= 0' in lines[-1]


@pytest.mark.parametrize('node', ['10,10', '0,10'])
def test_no_note_while_some_guest_has_a_balloon(tmp_path, nova_nodes, node):
    out = status_output(tmp_path, nova_nodes[node])
    assert 'guest-0' in out and 'guest-1' in out
    assert status.NO_BALLOON_ANYWHERE not in out
