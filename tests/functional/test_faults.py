"""Faults the agent must survive, on real libvirt and real QEMU guests.

Some tests run the real agent process; others drive the real Controller
in-process on the real libvirt driver, with a hook that injects the fault at
a precise moment of the cycle (a guest destroyed between collection and
action) or, for host memory, a stand-in /proc/meminfo: this machine's 24 GiB
cannot really be exhausted by a test.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oslo_config import cfg

from nova_balloon import conf as nb_conf
from nova_balloon import flavor_policy, policies
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import Controller
from nova_balloon.model import Action
from nova_balloon.virt.libvirt.driver import LibvirtDriver
from tests.functional.agent_process import BIN, running_agent
from tests.functional.guests import (
    BootedGuest,
    booted_guest,
    current_domain,
    live_connection,
    wait_until,
)

pytestmark = pytest.mark.functional

MIB = 1024
RATIO_2 = {"balloon:overcommit_ratio": "2.0"}
# The floor of a 512 MiB ratio-2.0 guest, give or take the dead band.
FLOOR_NEAR = 256 + 16


def balloon_mib(guest: BootedGuest) -> int:
    return current_domain(guest).memoryStats()["actual"] // MIB


@pytest.fixture(scope="module")
def guest(guest_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BootedGuest]:
    """One 512 MiB ratio-2.0 guest shared by the agent-process tests."""
    with booted_guest(
        live_connection(),
        name="nbfault-a",
        memory_mib=512,
        flavor_name="m1.balloon",
        extra_specs=RATIO_2,
        image_dir=guest_image,
        workdir=tmp_path_factory.mktemp("faults"),
    ) as booted:
        yield booted


def controller_for(tmp_path: Path, driver: LibvirtDriver, **options: object) -> Controller:
    """The real controller with the agent's options, read from a config file."""
    conf = cfg.ConfigOpts()
    nb_conf.balloon.register_opts(conf)
    balloon = {"interval": 1, "stats_period": 1, **options}
    path = tmp_path / "controller.conf"
    path.write_text("[balloon]\n" + "".join(f"{k} = {v}\n" for k, v in balloon.items()))
    conf(["--config-file", str(path)])
    return Controller(
        driver,
        policies.load(conf.balloon.policy, conf),
        planner.Settings.from_conf(conf.balloon),
        flavor_policy.PolicyFile(None),
        dry_run=False,
    )


def test_unresponsive_balloon_is_left_alone_then_retried(
    guest: BootedGuest, tmp_path: Path
) -> None:
    # The balloon deflates when its driver is unloaded, which the policy must
    # take for an OOM and remember as a peak; a short memory keeps this test
    # about the retry, not about how long the policy holds a peak.
    with running_agent(tmp_path, unresponsive_after=5, unresponsive_retry=20,
                       demand_half_life=2) as agent:
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed to its floor")
        # Unloading the driver frees the balloon; statistics stop.
        guest.console.run("rmmod virtio_balloon", check=True)
        row = wait_until(
            lambda: "unresponsive" in (r := agent.row(guest.name)).get("reason", "") and r,
            30,
            "the guest marked unresponsive",
        )
        assert row["target_mb"] == 512
        for _ in range(5):
            assert balloon_mib(guest) >= 510, "an unresponsive guest was shrunk"
            time.sleep(1)
        # The driver answers again: after the retry pause the agent reclaims.
        guest.console.run("insmod /lib/modules/virtio_balloon.ko", check=True)
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed after the retry")
        assert agent.stop() == 0
    wait_until(lambda: balloon_mib(guest) >= 510, 20, "guest restored on stop")


def test_sigkill_then_restart_adopts_targets(guest: BootedGuest, tmp_path: Path) -> None:
    with running_agent(tmp_path) as first:
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed to its floor")
        time.sleep(2)
        assert first.stop(signal.SIGKILL) != 0
    before = balloon_mib(guest)
    with running_agent(tmp_path, log_name="restarted.log") as second:
        wait_until(lambda: "Adopting the targets of" in second.log(), 30, "targets adopted")
        seen = []
        for _ in range(8):
            seen.append(balloon_mib(guest))
            time.sleep(1)
        assert min(seen) >= 256 - 2 and max(seen) <= before + 16, seen
        # It still knows it shrank the guest: SIGTERM gives the memory back.
        assert second.stop() == 0
    wait_until(lambda: balloon_mib(guest) >= 510, 20, "guest restored on stop")


def test_libvirtd_restart_is_survived(guest: BootedGuest, tmp_path: Path) -> None:
    with running_agent(tmp_path) as agent:
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed to its floor")
        before = balloon_mib(guest)
        subprocess.run(["pkill", "-x", "libvirtd"], check=True)
        wait_until(lambda: agent.state().get("outage"), 30, "the outage in the state file")
        status = subprocess.run(
            [str(BIN / "nova-balloon"), "--config-file", str(agent.config_path), "status"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "hypervisor outage" in status.stdout and status.returncode == 1, status.stdout
        time.sleep(3)
        subprocess.run(["bash", "tools/start-libvirtd.sh"], check=True)
        wait_until(lambda: "reachable again" in agent.log(), 90, "the agent reconnected")
        assert agent.process.poll() is None
        assert agent.log().count("Hypervisor unreachable") == 1
        time.sleep(3)
        assert abs(balloon_mib(guest) - before) <= 16, "targets were reset after the outage"
        assert agent.stop() == 0
    wait_until(lambda: balloon_mib(guest) >= 510, 20, "guest restored on stop")


@pytest.fixture
def doomed_and_kept(
    guest_image: Path, tmp_path: Path
) -> Iterator[tuple[BootedGuest, BootedGuest]]:
    with contextlib.ExitStack() as stack:
        pair = tuple(
            stack.enter_context(
                booted_guest(
                    live_connection(),
                    name=f"nbfault-{role}",
                    memory_mib=512,
                    flavor_name="m1.balloon",
                    extra_specs=RATIO_2,
                    image_dir=guest_image,
                    workdir=tmp_path,
                )
            )
            for role in ("doomed", "kept")
        )
        yield pair  # type: ignore[misc]


class DestroyBeforeActing(LibvirtDriver):
    """The real driver; destroys one guest for real just before acting on it."""

    def __init__(self, doomed_uuid: str):
        super().__init__("qemu:///system")
        self.doomed_uuid = doomed_uuid
        self.destroyed = False

    def set_target(self, uuid: str, target_kib: int) -> None:
        if uuid == self.doomed_uuid and not self.destroyed:
            live_connection().lookupByUUIDString(uuid).destroy()
            self.destroyed = True
        super().set_target(uuid, target_kib)


def test_guest_destroyed_between_collection_and_action(
    doomed_and_kept: tuple[BootedGuest, BootedGuest], tmp_path: Path
) -> None:
    doomed, kept = doomed_and_kept
    driver = DestroyBeforeActing(doomed.uuid)
    controller = controller_for(tmp_path, driver)
    errors: dict[str, str] = {}
    applied_to_kept = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (driver.destroyed and applied_to_kept):
        report = controller.run_cycle()
        errors.update(report.errors)
        applied_to_kept |= driver.destroyed and kept.uuid in report.applied
        time.sleep(1)
    assert driver.destroyed
    assert "not running" in errors[doomed.uuid] or "no domain" in errors[doomed.uuid].lower()
    assert applied_to_kept, "the other guest was held back"
    # The next cycle has simply one guest less.
    report = controller.run_cycle()
    assert report.plan is not None and doomed.uuid not in report.plan.classified


@pytest.fixture
def big_guest(guest_image: Path, tmp_path: Path) -> Iterator[BootedGuest]:
    with booted_guest(
        live_connection(),
        name="nbfault-big",
        memory_mib=1024,
        flavor_name="m1.big",
        extra_specs={"balloon:overcommit_ratio": "4.0"},
        image_dir=guest_image,
        workdir=tmp_path,
    ) as booted:
        yield booted


def test_host_short_of_memory_reclaims_faster_never_below_floor(
    big_guest: BootedGuest, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:     102400 kB\n")
    driver = LibvirtDriver("qemu:///system", meminfo_path=str(meminfo))
    controller = controller_for(tmp_path, driver, host_critical_free_mb=512)
    shrinks = []
    caplog.set_level(logging.INFO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and balloon_mib(big_guest) > FLOOR_NEAR:
        report = controller.run_cycle()
        assert report.plan is not None and report.plan.host_critical
        shrinks += [d for d in report.plan.decisions
                    if d.uuid == big_guest.uuid and d.action is Action.SHRINK]
        time.sleep(1)
    assert shrinks, "no shrink"
    first_step = 1024 - shrinks[0].target_kib // MIB
    assert first_step > 128, f"first shrink {first_step} MiB is no faster than usual"
    assert min(d.target_kib for d in shrinks) >= 256 * MIB, "shrunk below the floor"
    assert "Host critically short of memory" in caplog.text
