"""The agent as a process, and its libvirt driver, on real libvirt and QEMU.

One agent per host, SIGHUP, a guest whose QEMU monitor hangs, a domain XML
that cannot be read, events during an XML read, lost connections, and
giving memory back from live state (on stop and with `nova-balloon restore`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import libvirt
import pytest

from nova_balloon.virt.libvirt import driver as libvirt_driver
from nova_balloon.virt.libvirt.driver import LibvirtDriver
from tests.functional.agent_process import BIN, running_agent
from tests.functional.conftest import BootGuest
from tests.functional.guests import (
    BootedGuest,
    current_domain,
    live_connection,
    nova_metadata_config,
    wait_until,
)
from tests.functional.test_faults import FLOOR_NEAR, RATIO_2, balloon_mib, controller_for

pytestmark = pytest.mark.functional

MIB = 1024
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"


def qemu_pid(guest: BootedGuest) -> int:
    return int(Path(f"/run/libvirt/qemu/{guest.name}.pid").read_text())


def shrink_by_hand(guest: BootedGuest, mib: int) -> None:
    """As an earlier agent, or the source host of a migration, left it."""
    current_domain(guest).setMemoryFlags(mib * MIB, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    wait_until(lambda: balloon_mib(guest) <= mib + 8, 30, f"guest shrunk to {mib} MiB")
    # libvirt's bulk statistics learn the size from QEMU's throttled events.
    time.sleep(2)


def test_second_agent_refuses_and_names_the_first(tmp_path: Path) -> None:
    with running_agent(tmp_path) as first:
        wait_until(lambda: first.state().get("cycles"), 30, "the first agent cycling")
        with running_agent(tmp_path, log_name="second.log") as second:
            code = second.process.wait(30)
            stderr = second.stderr_path.read_text()
        assert code == 1, stderr
        assert f"pid {first.process.pid}" in stderr and "nova-balloon-agent" in stderr, stderr
        assert first.process.poll() is None
        assert first.stop() == 0
    # The lock goes with the process: a new agent starts.
    with running_agent(tmp_path, log_name="third.log") as third:
        wait_until(lambda: "Connected to libvirt" in third.log(), 30, "the third agent running")
        assert third.stop() == 0


def test_sighup_reloads_between_cycles_and_keeps_targets(
    boot_guest: BootGuest, tmp_path: Path
) -> None:
    # Older Nova: no extra specs in the XML, so the policy file decides.
    guest = boot_guest(memory_mib=512, flavor_name="m1.balloon", extra_specs=None,
                       extra_specs_in_metadata=False)
    policy = tmp_path / "flavors.yaml"
    policy.write_text("m1.balloon:\n  balloon:overcommit_ratio: 2.0\n")
    with running_agent(tmp_path, flavor_policy_file=policy) as agent:
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed to its floor")
        time.sleep(2)
        before = balloon_mib(guest)
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "SIGHUP: flavor policy file" in agent.log(), 20, "reloaded")
        for _ in range(4):
            assert agent.process.poll() is None, "SIGHUP ended the agent"
            assert abs(balloon_mib(guest) - before) <= 16, "SIGHUP moved the balloon"
            time.sleep(1)
        # A policy file whose time stamp and size did not change (restored
        # with cp -p, say) is only seen on SIGHUP; a mutable option, too.
        stamp = policy.stat()
        policy.write_text("m1.balloon:\n  balloon:overcommit_ratio: 1.0\n")
        os.utime(policy, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        agent.config_path.write_text(agent.config_path.read_text().replace(
            "debug = true", "debug = false"))
        time.sleep(3)
        assert balloon_mib(guest) <= FLOOR_NEAR, "the unchanged time stamp was noticed"
        reloads = agent.log().count("SIGHUP: flavor policy file")
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: agent.log().count("SIGHUP: flavor policy file") > reloads, 20,
                   "reloaded again")
        wait_until(lambda: balloon_mib(guest) >= 510, 30, "the ratio 1.0 from the file")
        after = len(agent.log())
        time.sleep(3)
        assert " DEBUG " not in agent.log()[after:], "debug = false not applied"
        assert agent.process.poll() is None
        assert agent.stop() == 0


def test_hung_guest_monitor_does_not_stall_the_others(
    boot_guest: BootGuest, tmp_path: Path
) -> None:
    hung = boot_guest(memory_mib=512, flavor_name="m1.balloon", extra_specs=RATIO_2)
    other = boot_guest(memory_mib=512, flavor_name="m1.balloon", extra_specs=RATIO_2)
    driver = LibvirtDriver("qemu:///system")
    driver.call_timeout_s = 3.0
    controller = controller_for(tmp_path, driver)
    seen: list[set[str]] = []
    done = threading.Event()

    def cycles() -> None:
        while not done.is_set():
            report = controller.run_cycle()
            if report.plan is not None:
                seen.append({u for u, v in report.plan.views.items() if v.usable_kib})
            time.sleep(1)

    os.kill(qemu_pid(hung), signal.SIGSTOP)
    try:
        threading.Thread(target=cycles, daemon=True).start()
        wait_until(lambda: balloon_mib(other) <= FLOOR_NEAR, 90,
                   "the other guest reclaimed while one QEMU is stopped")
        assert any(other.uuid in s and hung.uuid not in s for s in seen), seen
        os.kill(qemu_pid(hung), signal.SIGCONT)
        # Once QEMU runs again, its guest is collected (and managed) as before.
        wait_until(lambda: seen and hung.uuid in seen[-1], 60, "the hung guest back")
    finally:
        done.set()
        os.kill(qemu_pid(hung), signal.SIGCONT)


class FaultyXML(LibvirtDriver):
    """The real driver; one guest's XMLDesc fails, or an event fires during it."""

    def __init__(self, uuid: str, fault: str):
        super().__init__("qemu:///system")
        self.uuid = uuid
        self.fault = fault
        self.reads = 0

    def _xml_of(self, dom: libvirt.virDomain) -> str:
        if dom.UUIDString() != self.uuid:
            return super()._xml_of(dom)
        self.reads += 1
        if self.fault == "fail":
            # What libvirt raises for an XMLDesc that fails on a live connection.
            raise libvirt.libvirtError("XMLDesc failed: injected by the test")
        xml = super()._xml_of(dom)
        if self.reads == 1:
            # Nova updates the metadata (a resize, say) right after the read.
            meta = nova_metadata_config(name="renamed", memory_mib=512,
                                        flavor_name="m1.resized", extra_specs=None)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta.to_xml(),
                            "instance", NOVA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            time.sleep(2)  # The event arrives on libvirt's event loop meanwhile.
        return xml


def test_failed_xmldesc_skips_that_guest_only(boot_guest: BootGuest) -> None:
    bad = boot_guest(memory_mib=256)
    good = boot_guest(memory_mib=256)
    collection = FaultyXML(bad.uuid, "fail").collect()
    uuids = {s.facts.uuid for s in collection.samples}
    assert good.uuid in uuids and bad.uuid not in uuids


def test_event_during_xml_read_is_not_lost(boot_guest: BootGuest) -> None:
    libvirt_driver.start_event_loop()
    guest = boot_guest(memory_mib=256, flavor_name="m1.before")
    driver = FaultyXML(guest.uuid, "event")

    def flavor() -> str | None:
        facts = next(s.facts for s in driver.collect().samples if s.facts.uuid == guest.uuid)
        return facts.nova.flavor_name if facts.nova else None

    assert flavor() == "m1.before"  # read before the change
    assert flavor() == "m1.resized"


def _disconnect_me() -> None:
    """Make libvirtd drop this process's connections, as a libvirtd restart would."""
    out = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True,
                         text=True, check=True).stdout
    for line in out.splitlines()[2:]:
        client = line.split()[0] if line.strip() else None
        if client is None:
            continue
        info = subprocess.run(["virt-admin", "client-info", "libvirtd", client],
                              capture_output=True, text=True).stdout
        if any(f.split() == ["unix_user_pid:", str(os.getpid())] or
               (f.split()[:1] == ["unix_process_id:"] and f.split()[-1] == str(os.getpid()))
               for f in info.splitlines()):
            subprocess.run(["virt-admin", "client-disconnect", "libvirtd", client],
                           check=True, capture_output=True)


def test_lost_connections_are_closed(boot_guest: BootGuest) -> None:
    libvirt_driver.start_event_loop()
    boot_guest(memory_mib=256)
    with contextlib.closing(live_connection()):
        pass
    driver = LibvirtDriver("qemu:///system")
    driver.collect()
    lost = []
    for round_ in range(2):
        lost.append(driver._conn)
        _disconnect_me()
        wait_until(lambda: driver._conn is None, 20, f"close callback, round {round_}")
        time.sleep(1.1)
        wait_until(lambda: _try_collect(driver), 30, "reconnected")
    # libvirt-python drops its handle (_o) once virConnectClose ran; the event
    # callbacks would otherwise keep each lost connection alive for good.
    assert all(conn is not None and conn._o is None for conn in lost), \
        "a lost connection was never closed"


def _try_collect(driver: LibvirtDriver) -> bool:
    try:
        driver.collect()
    except Exception:
        return False
    return True


def test_stop_and_restore_give_memory_back_from_live_state(
    boot_guest: BootGuest, tmp_path: Path
) -> None:
    # Ratio 1.0: the agent never manages (nor shrinks) these; an earlier agent
    # or a migration left them shrunk.
    first = boot_guest(memory_mib=512, flavor_name="m1.fixed", extra_specs=None)
    second = boot_guest(memory_mib=512, flavor_name="m1.fixed", extra_specs=None)
    shrink_by_hand(first, 256)
    with running_agent(tmp_path, restore_mb_per_second=100) as agent:
        wait_until(lambda: agent.state().get("cycles", 0) >= 2, 30, "two cycles")
        assert balloon_mib(first) <= 264
        # The CLI refuses while the agent runs.
        refused = subprocess.run(
            [str(BIN / "nova-balloon"), "--config-file", str(agent.config_path), "restore",
             "--all"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and f"pid {agent.process.pid}" in refused.stdout, \
            refused.stdout + refused.stderr
        assert agent.stop() == 0
    wait_until(lambda: balloon_mib(first) >= 500, 20, "restored on stop")
    # With the agent stopped, the CLI restores every guest owed, paced.
    shrink_by_hand(first, 256)
    shrink_by_hand(second, 256)
    result = subprocess.run(
        [str(BIN / "nova-balloon"), "--config-file", str(agent.config_path), "restore",
         "--all"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restored 2 guest(s)" in result.stdout, result.stdout
    seconds = float(result.stdout.split("restored 2 guest(s) in ")[1].split()[0])
    assert seconds >= 2.0, f"256 MiB at 100 MiB/s came {seconds} s after the first"
    wait_until(lambda: balloon_mib(first) >= 500 and balloon_mib(second) >= 500, 20,
               "both restored")
    # One guest by name.
    shrink_by_hand(second, 300)
    one = subprocess.run(
        [str(BIN / "nova-balloon"), "--config-file", str(agent.config_path), "restore",
         second.name], capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and "restored 1 guest(s)" in one.stdout, one.stdout
    wait_until(lambda: balloon_mib(second) >= 500, 20, "restored by name")
