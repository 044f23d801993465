"""Nova's instance lifecycle under a running agent, on real libvirt and QEMU.

A hard reboot (Nova destroys the domain and creates it again from its XML),
a reboot from inside the guest (same QEMU, the balloon driver restarts), a
managed save and restore (the live XML, shrunk, comes back) and a device
hot-plug. What the agent knew of a guest belongs to one run of its domain: a
new run it sees come up starts at full memory; one that comes back after the
agent lost sight of it is managed from what it has.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from nova_balloon.virt.libvirt import driver as libvirt_driver
from nova_balloon.virt.libvirt.driver import LibvirtDriver
from tests.functional.agent_process import Agent, running_agent
from tests.functional.conftest import BootGuest
from tests.functional.guests import BootedGuest, destroy_quietly, live_connection, wait_until
from tests.functional.test_faults import FLOOR_NEAR, RATIO_2

pytestmark = pytest.mark.functional

MIB = 1024


def balloon_of(uuid: str) -> int:
    """The balloon size in MiB of the domain with this UUID, whatever its run."""
    dom = live_connection().lookupByUUIDString(uuid)
    return int(dom.info()[2]) // MIB


def reclaimed(guest: BootedGuest, agent: Agent) -> None:
    wait_until(lambda: balloon_of(guest.uuid) <= FLOOR_NEAR, 90, "guest reclaimed to its floor")
    # The agent's idea of the guest has settled (QEMU's size events lag).
    time.sleep(3)


def lines_after(agent: Agent, offset: int, guest: BootedGuest) -> list[str]:
    return [line for line in agent.log()[offset:].splitlines() if guest.uuid in line]


def assert_no_oom_reading(lines: list[str]) -> None:
    """Neither a deflation on OOM nor a balloon stuck above its target."""
    wrong = [line for line in lines if 'deflated' in line or 'unresponsive' in line
             or 'not responding' in line]
    assert not wrong, '\n'.join(wrong)


@contextlib.contextmanager
def recreated(dom: libvirt.virDomain, xml: str, agent: Agent) -> Iterator[None]:
    """A domain Nova destroyed and created again (hard reboot), destroyed at the end.

    The agent is frozen (SIGSTOP) while the domain is gone: a hard reboot
    faster than a cycle, which is the case this test is about. An agent that
    collects while the domain is gone forgets the guest and manages the new
    run from what it has (the managed save test covers that); which of the
    two happens would otherwise depend on how fast QEMU starts.
    """
    uuid = dom.UUIDString()
    agent.process.send_signal(signal.SIGSTOP)
    try:
        destroy_quietly(dom)
        conn = live_connection()
        conn.createXML(xml, 0)
    finally:
        agent.process.send_signal(signal.SIGCONT)
    try:
        yield
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            destroy_quietly(conn.lookupByUUIDString(uuid))


def test_hard_reboot_is_a_new_run(boot_guest: BootGuest, tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2, stats_period=1)
    with running_agent(tmp_path, demand_half_life=2) as agent:
        reclaimed(guest, agent)
        offset = len(agent.log())
        # Nova's hard reboot: a new QEMU process from the XML Nova keeps, at
        # full memory; the old target means nothing to it.
        with recreated(guest.dom, guest.xml, agent):
            wait_until(lambda: 'new run of the domain' in agent.log()[offset:], 30,
                       "the agent seeing a new run")
            # The new run is managed from what it shows, down to its floor.
            wait_until(lambda: balloon_of(guest.uuid) <= FLOOR_NEAR, 120,
                       "the new run reclaimed")
            assert_no_oom_reading(lines_after(agent, offset, guest))
            assert agent.stop() == 0
            wait_until(lambda: balloon_of(guest.uuid) >= 510, 20, "restored on stop")


def test_reboot_inside_the_guest_is_a_new_run(boot_guest: BootGuest, tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2, stats_period=1)
    with running_agent(tmp_path, demand_half_life=2) as agent:
        reclaimed(guest, agent)
        offset = len(agent.log())
        # Same QEMU and domain id; the balloon driver restarts with the guest,
        # so the balloon jumps to full size and back to QEMU's target.
        guest.console.send('reboot -f\n')
        wait_until(lambda: 'new run of the domain' in agent.log()[offset:], 30,
                   "the agent seeing a new run")
        wait_until(lambda: balloon_of(guest.uuid) <= FLOOR_NEAR, 120, "reclaimed again")
        assert_no_oom_reading(lines_after(agent, offset, guest))


def test_managed_save_and_restore_is_managed_from_what_it_has(boot_guest: BootGuest,
                                                               tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2, stats_period=1)
    conn = live_connection()
    # Nova's instances are persistent domains; a managed save needs one.
    conn.defineXML(guest.xml)
    try:
        with running_agent(tmp_path, demand_half_life=60) as agent:
            reclaimed(guest, agent)
            offset = len(agent.log())
            dom = conn.lookupByUUIDString(guest.uuid)
            dom.managedSave(0)
            # Gone for a cycle or more: the agent forgets the old run. The
            # saved image holds the live XML, so the guest comes back shrunk.
            time.sleep(3)
            dom.create()
            assert balloon_of(guest.uuid) <= FLOOR_NEAR
            wait_until(lambda: f'{guest.name} ({guest.uuid}): hold' in agent.log()[offset:],
                       30, "the restored guest managed from what it has")
            for _ in range(5):
                assert balloon_of(guest.uuid) >= 256 - 2, 'shrunk below its floor'
                time.sleep(1)
            assert_no_oom_reading(lines_after(agent, offset, guest))
            # Owed its memory like any guest the agent shrank.
            assert agent.stop() == 0
        wait_until(lambda: balloon_of(guest.uuid) >= 510, 20, "restored on stop")
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByUUIDString(guest.uuid).undefineFlags(
                libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


class CountingXML(LibvirtDriver):
    """Counts the domain XML reads of one guest."""

    def __init__(self, uuid: str):
        super().__init__('qemu:///system')
        self.uuid = uuid
        self.reads = 0

    def _xml_of(self, dom: libvirt.virDomain) -> str:
        if dom.UUIDString() == self.uuid:
            self.reads += 1
        return super()._xml_of(dom)


def test_device_hot_plug_reads_the_domain_again(boot_guest: BootGuest, tmp_path: Path) -> None:
    libvirt_driver.start_event_loop()
    guest = boot_guest(memory_mib=256)
    driver = CountingXML(guest.uuid)
    driver.collect()
    driver.collect()
    assert driver.reads == 1  # parsed once, while nothing changes
    disk = tmp_path / 'hotplug.raw'
    disk.write_bytes(b'\0' * (1 << 20))
    added = threading.Event()
    # A connection opened once libvirt's event loop runs receives events.
    conn = libvirt.open('qemu:///system')
    callback = conn.domainEventRegisterAny(
        conn.lookupByUUIDString(guest.uuid), libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
        lambda *args: added.set(), None)
    try:
        # What Nova does when it attaches a volume, a port or a vGPU.
        guest.dom.attachDeviceFlags(
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{disk}'/><target dev='vdb' bus='virtio'/></disk>",
            libvirt.VIR_DOMAIN_AFFECT_LIVE)
        assert added.wait(20), 'libvirt sent no DEVICE_ADDED event'
        time.sleep(0.5)  # the driver's own callback runs on the same loop
        driver.collect()
        assert driver.reads == 2, 'the hot-plugged device went unseen'
    finally:
        conn.domainEventDeregisterAny(callback)
        conn.close()
