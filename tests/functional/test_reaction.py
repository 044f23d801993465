"""The agent covers a fast ramp before the guest has to save itself.

A real guest whose memballoon has no autodeflate (as Nova before 34 writes
it, so that nothing but the agent can give it memory back) and whose balloon
keys come from ``[balloon] flavor_policy_file`` (older Nova writes no extra
specs into the domain), booted while the agent runs in its default timing,
is reclaimed to its floor, then fills memory at 40 MiB/s.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.functional.agent_process import default_timing, running_agent
from tests.functional.conftest import BootGuest
from tests.functional.guests import wait_until

pytestmark = pytest.mark.functional

MIB = 1024
FLOOR_NEAR = 256 + 16


def test_fast_ramp_from_the_floor_without_autodeflate(boot_guest: BootGuest,
                                                       tmp_path: Path) -> None:
    flavors = tmp_path / "flavors.yaml"
    flavors.write_text("m1.older:\n  balloon:overcommit_ratio: '2.0'\n")
    with running_agent(tmp_path / "agent", flavor_policy_file=flavors,
                       **default_timing()) as agent:
        guest = boot_guest(memory_mib=512, flavor_name="m1.older", extra_specs=None,
                           autodeflate=False, extra_specs_in_metadata=False,
                           stats_period=10)
        booted = time.monotonic() - guest.boot_seconds
        wait_until(lambda: guest.dom.memoryStats()["actual"] <= FLOOR_NEAR * MIB, 120,
                   "guest booted under the agent reclaimed to its floor within 120 s")
        assert "waiting for the guest's first balloon statistics" not in agent.row(
            guest.name).get("reason", "")
        time.sleep(5)
        console = guest.console
        console.run("memlow >/tmp/memlow.log 2>&1 &", check=True)
        free = int(re.search(r"MemAvailable:\s+(\d+)",
                             console.run("grep MemAvailable /proc/meminfo")).group(1))
        in_use = guest.dom.memoryStats()["actual"] - free
        mark = console.offset
        console.run("memhog --mib 300 --rate 40 --hold 5 >/tmp/memhog.log 2>&1 &",
                    check=True)
        wait_until(lambda: "memhog: done" in console.run("cat /tmp/memhog.log"), 60,
                   "memhog filled 300 MiB and held it")
        lows = re.findall(r"memlow: (\d+) kB", console.run("cat /tmp/memlow.log"))
        assert not console.oom_killed(since=mark), console.tail()
        assert "oom_kill 0" in console.run("grep oom_kill /proc/vmstat")
        # The balloon covered the fill: memory the agent gave, not the guest.
        assert guest.dom.memoryStats()["actual"] >= in_use + 300 * MIB
        assert lows and int(lows[-1]) > 0
        print(f"boot to floor and fill: lowest MemAvailable {int(lows[-1]) // MIB} MiB, "
              f"{time.monotonic() - booted:.0f} s since boot")
        assert agent.stop() == 0
