"""Nova's instance lifecycle as the planner and the XML parser see it.

A new run of a domain (reboot, rescue, resize, managed save and restore)
starts the agent's memory of the guest afresh; devices that pin guest RAM
(built with Nova's own config classes, as its libvirt driver writes them)
make a guest unballoonable, and one left shrunk gets its memory back; a guest
in post-copy counts as migrating.
"""

from __future__ import annotations

import dataclasses
import warnings

import libvirt
import pytest
from lxml import etree

from nova_balloon.controller.planner import GuestMemory, plan
from nova_balloon.model import Action, BalloonStats, RunState
from nova_balloon.virt.libvirt.domain_xml import parse_domain_xml
from nova_balloon.virt.libvirt.driver import _run_state
from tests.functional.guests import nova_domain_xml
from tests.unit.test_planner import CEILING, HOST, SETTINGS, FixedPolicy, GiB, sample

with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # nova's import of eventlet warns
    from nova.virt.libvirt import config as vconfig


def _guest_xml(*devices: object, membacking: object | None = None) -> str:
    """A Nova-like guest's XML with Nova's config objects added to it."""
    xml = nova_domain_xml(name='instance-00000001', uuid='3f8f2a6c-0b6e-4d0a-9f1e-5c2b7d9a1e10',
                          memory_mib=2048, flavor_name='m1.small', extra_specs=None,
                          kernel='/k', initrd='/i', console_socket='/tmp/c.sock')
    root = etree.fromstring(xml.encode())
    for device in devices:
        root.find('devices').append(device.format_dom())
    if membacking is not None:
        root.insert(3, membacking.format_dom())
    return etree.tostring(root, encoding='unicode')


def _pci_hostdev() -> object:
    dev = vconfig.LibvirtConfigGuestHostdevPCI()
    dev.domain, dev.bus, dev.slot, dev.function = '0000', '81', '00', '1'
    return dev


def _mdev_vgpu() -> object:
    dev = vconfig.LibvirtConfigGuestHostdevMDEV()
    dev.uuid = 'c2177883-f1bb-47f0-914d-32a22e3a8804'
    return dev


def _sriov_port() -> object:
    # What nova/virt/libvirt/designer.set_vif_host_backend_hostdev_pci_config
    # writes for a vnic_type=direct port attached later.
    dev = vconfig.LibvirtConfigGuestInterface()
    dev.net_type = 'hostdev'
    dev.source_dev = '0000:81:00.2'
    dev.mac_addr = 'fa:16:3e:11:22:33'
    return dev


def _vdpa_port() -> object:
    dev = vconfig.LibvirtConfigGuestInterface()
    dev.net_type = 'vdpa'
    dev.source_dev = '/dev/vhost-vdpa-0'
    dev.mac_addr = 'fa:16:3e:44:55:66'
    dev.model = 'virtio'
    return dev


def _file_backed_memory() -> object:
    # nova's _guest_memory_backing with [libvirt] file_backed_memory > 0.
    backing = vconfig.LibvirtConfigGuestMemoryBacking()
    backing.filesource = True
    backing.sharedaccess = True
    backing.allocateimmediate = True
    backing.discard = True
    return backing


def test_a_plain_nova_guest_is_balloonable() -> None:
    facts = parse_domain_xml(_guest_xml())
    assert facts.unballoonable is None and facts.balloon_device


@pytest.mark.parametrize(('devices', 'membacking', 'reason'), [
    ((_pci_hostdev(),), None, 'PCI host device'),
    ((_mdev_vgpu(),), None, 'mediated device'),
    ((_sriov_port(),), None, 'PCI host device'),
    ((_vdpa_port(),), None, 'vDPA interface'),
    ((), _file_backed_memory(), 'shared file-backed memory'),
], ids=['pci', 'mdev-vgpu', 'sriov-port', 'vdpa', 'file-backed'])
def test_devices_that_pin_guest_ram_make_it_unballoonable(devices: tuple[object, ...],
                                                          membacking: object | None,
                                                          reason: str) -> None:
    facts = parse_domain_xml(_guest_xml(*devices, membacking=membacking))
    assert facts.unballoonable is not None and reason in facts.unballoonable
    assert facts.balloon_device


def test_a_guest_left_shrunk_when_its_ram_got_pinned_is_restored_once() -> None:
    # The agent had shrunk it, then a vGPU was hot-plugged (or it arrived
    # shrunk with one): its balloon holds memory the host cannot use.
    shrunk = BalloonStats(actual_kib=2 * GiB, usable_kib=1 * GiB)
    pinned = sample(unballoonable='mediated device assigned, such as a vGPU', stats=shrunk)
    first = plan(HOST, [pinned], FixedPolicy({}), {}, {}, SETTINGS)
    [decision] = first.decisions
    assert (decision.action, decision.target_kib) == (Action.GROW, CEILING)
    # Asked once: while the balloon deflates, it is not asked again.
    again = plan(HOST, [pinned], FixedPolicy({}), {}, first.memory, SETTINGS)
    assert again.decisions[0].action is Action.IGNORE


def test_a_guest_without_a_balloon_device_is_never_asked() -> None:
    no_balloon = sample(unballoonable='no balloon device (memballoon model none)',
                        stats=BalloonStats(actual_kib=2 * GiB))
    no_balloon = no_balloon._replace(
        facts=dataclasses.replace(no_balloon.facts, balloon_device=False))
    [decision] = plan(HOST, [no_balloon], FixedPolicy({}), {}, {}, SETTINGS).decisions
    assert decision.action is Action.IGNORE


SHRUNK_IN_RUN_5 = GuestMemory(target_kib=2 * GiB, actual_kib=2 * GiB, shrunk=True,
                              actual_since=900.0, target_set_at=900.0, run_id='5.0')


@pytest.mark.parametrize('run_id', ['6.0', '5.1'],
                         ids=['new-qemu-process', 'reboot-inside-the-guest'])
def test_a_new_run_starts_at_full_memory_not_as_an_oom_deflation(run_id: str) -> None:
    # The new run came up at full memory (Nova's XML), or the guest's balloon
    # driver restarted: the balloon is far above the old target.
    booted = sample(stats=BalloonStats(actual_kib=CEILING, usable_kib=3 * GiB,
                                       last_update=20))._replace(run_id=run_id)
    result = plan(HOST, [booted], FixedPolicy({'u1': 2 * GiB}), {},
                  {'u1': SHRUNK_IN_RUN_5}, SETTINGS)
    [decision] = result.decisions
    assert (decision.action, decision.target_kib) == (Action.GROW, CEILING)
    assert 'new run of the domain' in decision.reason
    view = result.views['u1']
    assert not view.deflated_on_oom and view.unresponsive is None
    remembered = result.memory['u1']
    assert (remembered.run_id, remembered.shrunk, remembered.target_kib) == \
        (run_id, False, CEILING)


def test_a_run_restored_shrunk_from_a_managed_save_gets_its_memory_back() -> None:
    # A managed save keeps the live XML: the restored guest starts shrunk.
    restored = sample(stats=BalloonStats(actual_kib=2 * GiB, usable_kib=1 * GiB,
                                         last_update=20))._replace(run_id='7.0')
    [decision] = plan(HOST, [restored], FixedPolicy({'u1': 2 * GiB}), {},
                      {'u1': SHRUNK_IN_RUN_5}, SETTINGS).decisions
    assert (decision.action, decision.target_kib) == (Action.GROW, CEILING)


def test_the_same_run_and_an_adopted_memory_keep_what_the_agent_knows() -> None:
    same = sample(stats=BalloonStats(actual_kib=2 * GiB, usable_kib=1 * GiB,
                                     last_update=20))._replace(run_id='5.0')
    adopted = SHRUNK_IN_RUN_5._replace(run_id=None)  # from the state file
    for memory in (SHRUNK_IN_RUN_5, adopted):
        result = plan(HOST, [same], FixedPolicy({'u1': 2 * GiB}), {}, {'u1': memory},
                      SETTINGS)
        assert result.views['u1'].target_kib == 2 * GiB
        assert 'new run' not in result.decisions[0].reason


@pytest.mark.parametrize(('state', 'reason', 'expected'), [
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, RunState.MIGRATING),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED,
     RunState.MIGRATING),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, RunState.MIGRATING),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
     RunState.MIGRATING),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, RunState.MIGRATING),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_MIGRATED, RunState.RUNNING),
    (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED, RunState.RUNNING),
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, RunState.PAUSED),
])
def test_post_copy_counts_as_migrating_and_is_never_touched(state: int, reason: int,
                                                            expected: RunState) -> None:
    run_state = _run_state(state, reason)
    assert run_state is expected
    shrunk = sample(stats=BalloonStats(actual_kib=2 * GiB, usable_kib=1 * GiB),
                    run_state=run_state)
    [decision] = plan(HOST, [shrunk], FixedPolicy({'u1': 1 * GiB}), {},
                      {'u1': SHRUNK_IN_RUN_5._replace(run_id=None)}, SETTINGS).decisions
    if run_state is RunState.MIGRATING:
        # Not shrunk, and not restored either: not until post-copy ends.
        assert decision.action is Action.IGNORE
        assert decision.reason == 'migration in progress'
