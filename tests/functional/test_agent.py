"""nova-balloon-agent end to end: a real agent process, real libvirtd, real guests.

Four Nova-like guests boot once for the module: ``big`` (512 MiB, ratio 2.0),
``fixed`` (256 MiB, ratio 1.0), ``disabled`` (balloon:enabled=false) and
``foreign`` (no Nova metadata). The agent runs as its console script with a
1 s interval and stats period, as an operator would start it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.functional.agent_process import BIN, running_agent
from tests.functional.guests import (
    BootedGuest,
    booted_guest,
    live_connection,
    start_memhog,
    wait_until,
)

pytestmark = pytest.mark.functional

MIB = 1024


def balloon_mib(guest: BootedGuest) -> int:
    return guest.dom.memoryStats()["actual"] // MIB


@pytest.fixture(scope="module")
def guests(guest_image: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, BootedGuest]]:
    workdir = tmp_path_factory.mktemp("guests")
    specs = {
        "big": dict(
            memory_mib=512,
            flavor_name="m1.balloon",
            extra_specs={"balloon:overcommit_ratio": "2.0"},
        ),
        "fixed": dict(
            memory_mib=256, flavor_name="m1.fixed", extra_specs={"balloon:overcommit_ratio": "1.0"}
        ),
        "disabled": dict(
            memory_mib=256,
            flavor_name="m1.off",
            extra_specs={"balloon:overcommit_ratio": "2.0", "balloon:enabled": "false"},
        ),
        "foreign": dict(
            memory_mib=256, flavor_name="m1.none", extra_specs=None, with_nova_metadata=False
        ),
    }
    with contextlib.ExitStack() as stack:
        yield {
            role: stack.enter_context(
                booted_guest(
                    live_connection(),
                    name=f"nbagent-{role}",
                    image_dir=guest_image,
                    workdir=workdir,
                    **spec,
                )
            )
            for role, spec in specs.items()
        }


def assert_untouched(guests: dict[str, BootedGuest], log: str) -> None:
    """The guests the agent must never touch still have their full memory."""
    for role in ("fixed", "disabled", "foreign"):
        assert balloon_mib(guests[role]) == 256, role
        acted = re.search(rf"Guest nbagent-{role} \([^)]*\): (grow|shrink|restored)", log)
        assert acted is None, acted.group(0)


def test_status_without_agent(guests: dict[str, BootedGuest], tmp_path: Path) -> None:
    config = tmp_path / "cli.conf"
    config.write_text(f"[balloon]\nstate_file = {tmp_path}/none.json\n")
    out = subprocess.run(
        [str(BIN / "nova-balloon"), "--config-file", str(config), "status"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert out.startswith("agent: not running")
    assert "nbagent-big" in out and "m1.balloon" in out


def test_dry_run_changes_nothing(guests: dict[str, BootedGuest], tmp_path: Path) -> None:
    # A dry run sets no stats period either: give the guest one, as Nova's
    # [libvirt] mem_stats_period_seconds would, so there is something to decide on.
    guests['big'].dom.setMemoryStatsPeriod(1, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    with running_agent(tmp_path, dry_run=True) as agent:
        wait_until(
            lambda: "DRY RUN, not applied: Guest nbagent-big" in agent.log(),
            30,
            "a dry-run shrink decision for the big guest",
        )
        time.sleep(3)
        assert agent.stop() == 0
    for guest in guests.values():
        assert balloon_mib(guest) * MIB == guest.dom.maxMemory(), guest.name
    assert_untouched(guests, agent.log())


def test_reclaim_then_give_back_then_restore(
    guests: dict[str, BootedGuest], tmp_path: Path
) -> None:
    big = guests["big"]
    # The policy holds a peak for demand_half_life (480 s by default); a short
    # one keeps this test about giving memory back, not about how long it holds.
    with running_agent(tmp_path, demand_half_life=5) as agent:
        # An idle guest with ratio 2.0 is reclaimed to its floor, 256 MiB.
        wait_until(lambda: balloon_mib(big) <= 256 + 16, 90, "big guest reclaimed to its floor")
        status = agent.status()
        assert status["agent"]["running"] is True
        rows = {row["name"]: row for row in status["guests"]}
        assert rows["nbagent-big"]["floor_mb"] == 256
        assert rows["nbagent-big"]["ceiling_mb"] == 512
        assert "not reclaimable" in rows["nbagent-fixed"]["reason"]
        assert "balloon:enabled=false" in rows["nbagent-disabled"]["reason"]
        assert "no Nova metadata" in rows["nbagent-foreign"]["reason"]

        # It then fills its memory: the agent gives memory back in time.
        mark = big.console.offset
        start_memhog(big.console, mib=320, rate=50, hold=10)
        wait_until(
            lambda: "memhog: holding" in big.console.run("cat /tmp/memhog.log"),
            60,
            "memhog holding 320 MiB",
        )
        assert balloon_mib(big) >= 320 + 32
        assert not big.console.oom_killed(since=mark), big.console.tail()

        # And when the demand is gone, the memory is reclaimed again.
        wait_until(
            lambda: "memhog: done" in big.console.run("cat /tmp/memhog.log"), 30, "memhog done"
        )
        wait_until(lambda: balloon_mib(big) <= 300, 60, "big guest reclaimed again")

        # SIGTERM: the agent gives the guest its memory back, then exits.
        assert agent.stop() == 0
    wait_until(lambda: balloon_mib(big) >= 510, 20, "big guest restored to 512 MiB")
    assert agent.state().get("running") is False
    assert "to its full 512 MiB (on stop" in agent.log()
    assert_untouched(guests, agent.log())
