"""The real-guest harness works: boot, balloon, stats, memhog, OOM.

Every other functional test builds on it, so a broken libvirtd, image or
console shows up here first, with a plain message.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.functional.conftest import BootGuest
from tests.functional.guests import (
    guest_meminfo,
    start_memhog,
    wait_memhog,
    wait_until,
)

pytestmark = pytest.mark.functional

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
MIB_KIB = 1024


@pytest.mark.parametrize("autodeflate", [True, False], ids=["autodeflate-on", "autodeflate-off"])
def test_balloon_stats_and_memhog(boot_guest: BootGuest, autodeflate: bool) -> None:
    """Stats flow, the balloon moves the guest, memhog uses memory.

    With autodeflate on (what nova 34 always writes) the guest driver
    negotiates DEFLATE_ON_OOM and keeps ballooned pages in MemTotal, so
    only MemAvailable shows the inflation; with it off MemTotal drops.
    """
    guest = boot_guest(
        memory_mib=256,
        flavor_name="m1.harness",
        extra_specs={"hw:mem_page_size": "small", "quota:memory": "x"},
        stats_period=1,
        autodeflate=autodeflate,
    )
    dom, console = guest.dom, guest.console

    # Nova metadata, extra specs included, is what libvirt hands back
    # (virDomainGetMetadata returns the element without its namespace).
    meta = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NOVA_NS))
    specs = {e.get("name"): e.text for e in meta.iter("extraSpec")}
    assert specs == {"hw:mem_page_size": "small", "quota:memory": "x"}

    stats = wait_until(
        lambda: s if {"usable", "last_update"} <= (s := dom.memoryStats()).keys() else None,
        15,
        "memoryStats() with usable and last_update",
    )
    first_update = stats["last_update"]
    wait_until(
        lambda: dom.memoryStats()["last_update"] > first_update,
        15,
        "last_update to move (stats period 1 s)",
    )

    before = guest_meminfo(console)
    dom.setMemoryFlags(200 * MIB_KIB, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    wait_until(
        lambda: dom.info()[2] == 200 * MIB_KIB,
        30,
        "libvirt to report the balloon at 200 MiB",
    )
    inflated = wait_until(
        lambda: (
            m
            if before["MemAvailable"] - (m := guest_meminfo(console))["MemAvailable"]
            >= 50 * MIB_KIB
            else None
        ),
        30,
        "guest MemAvailable to drop by the 56 MiB inflation",
    )
    if autodeflate:
        assert inflated["MemTotal"] == before["MemTotal"]
    else:
        assert before["MemTotal"] - inflated["MemTotal"] >= 50 * MIB_KIB
    usable_after = dom.memoryStats()["usable"]
    assert usable_after < stats["usable"]

    start_memhog(console, mib=50, rate=100, hold=600)
    wait_memhog(console, state="holding", timeout=60)
    hogged = guest_meminfo(console)
    assert inflated["MemAvailable"] - hogged["MemAvailable"] >= 45 * MIB_KIB

    console.run("kill $(pidof memhog)", check=True)
    wait_memhog(console, state="done", timeout=30)
    after = guest_meminfo(console)
    assert after["MemAvailable"] - hogged["MemAvailable"] >= 40 * MIB_KIB
    assert not console.oom_killed()


def test_guest_oom_kill_is_seen(boot_guest: BootGuest) -> None:
    """oom_killed() notices the guest kernel killing a memory hog."""
    guest = boot_guest(memory_mib=128, stats_period=1)
    console = guest.console
    assert not console.oom_killed()
    start_memhog(console, mib=400, rate=0)
    console.wait_for("Out of memory: Killed process", timeout=60)
    assert console.oom_killed()
    # The shell survived (memhog was the victim) and still answers.
    assert console.run("echo alive").strip() == "alive"
