"""Real live migrations between two libvirt daemons on this machine.

The destination is a second libvirtd in its own mount namespace
(tools/start-second-libvirtd.sh). Guests migrate the way Nova migrates them:
``migrateToURI3`` peer to peer, with the live domain XML (so a shrunk guest
arrives shrunk) and a migration URI on 127.0.0.1. Each side has its own agent
process, state file and lock: the source's on qemu:///system, the
destination's on the second daemon's URI.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.functional.agent_process import BIN, Agent, running_agent
from tests.functional.conftest import REPO_ROOT, BootGuest
from tests.functional.guests import (
    GuestConsole,
    start_memhog,
    wait_until,
)
from tests.functional.test_faults import FLOOR_NEAR, RATIO_2, balloon_mib
from tests.functional.test_process import shrink_by_hand

pytestmark = pytest.mark.functional

MIB = 1024
SECOND_LIBVIRTD = REPO_ROOT / "tools" / "start-second-libvirtd.sh"
# A 512 MiB guest of ratio 2.0: floor 256 MiB.
FLOOR_MIB = 256
# The balloon's size as libvirt reports it moves in 4 MiB steps or so.
TOLERANCE_MIB = 4
MIGRATING = "migration in progress"


@pytest.fixture(scope="module")
def dest_uri() -> Iterator[str]:
    """The second libvirtd's URI; the daemon (and any guest left on it) goes after."""
    out = subprocess.run(["bash", str(SECOND_LIBVIRTD), "start"], check=True,
                         capture_output=True, text=True, timeout=120)
    try:
        yield out.stdout.strip()
    finally:
        subprocess.run(["bash", str(SECOND_LIBVIRTD), "stop"], check=True, timeout=120)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Migration:
    """A live migration of a guest's domain to ``dest_uri``, run in a thread.

    Nova's way: peer to peer, the source's live XML (its currentMemory, the
    balloon's size) with the serial console moved to a socket of its own
    (both QEMU processes run while the memory moves).
    """

    def __init__(self, dom: libvirt.virDomain, dest_uri: str, *, bandwidth_mib_s: int = 0,
                 postcopy: bool = False, postcopy_bandwidth_mib_s: int = 0) -> None:
        self.dom = dom
        self.uuid = dom.UUIDString()
        self.dest_uri = dest_uri
        self._sock_dir = tempfile.mkdtemp(prefix="nbmig-")
        self.console_path = Path(self._sock_dir) / "console.sock"
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
        source = root.find("./devices/serial/source")
        assert source is not None
        source.set("path", str(self.console_path))
        self.params: dict[str, object] = {
            libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://127.0.0.1:{free_port()}",
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: etree.tostring(root, encoding="unicode"),
        }
        if bandwidth_mib_s:
            self.params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib_s
        if postcopy_bandwidth_mib_s:
            self.params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = postcopy_bandwidth_mib_s
        self.flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
        if postcopy:
            self.flags |= libvirt.VIR_MIGRATE_POSTCOPY
        self.error: libvirt.libvirtError | None = None
        self._dest_conn: libvirt.virConnect | None = None
        self._thread = threading.Thread(target=self._run, name="migration", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.dom.migrateToURI3(self.dest_uri, self.params, self.flags)
        except libvirt.libvirtError as exc:
            self.error = exc

    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float = 120) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"migration still running after {timeout:.0f}s"

    def dest_domain(self) -> libvirt.virDomain:
        if self._dest_conn is None:
            self._dest_conn = libvirt.open(self.dest_uri)
        return self._dest_conn.lookupByUUIDString(self.uuid)

    @contextlib.contextmanager
    def arrived(self) -> Iterator[tuple[libvirt.virDomain, GuestConsole]]:
        """The guest on the destination and its console; destroyed afterwards."""
        self.wait()
        assert self.error is None, self.error
        dom = self.dest_domain()
        try:
            with GuestConsole(self.console_path) as console:
                console.wait_for_shell(15)
                yield dom, console
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            self.remove_console()

    def remove_console(self) -> None:
        self.console_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            Path(self._sock_dir).rmdir()


def dest_balloon_mib(dom: libvirt.virDomain) -> int:
    return int(dom.memoryStats()["actual"]) // MIB


def agent_reason(agent: Agent, name: str) -> str:
    return str(agent.row(name).get("reason", ""))


def restore_all(agent: Agent) -> str:
    result = subprocess.run(
        [str(BIN / "nova-balloon"), "--config-file", str(agent.config_path), "restore", "--all"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_shrunk_guest_arrives_shrunk_and_is_managed_from_what_it_has(
        boot_guest: BootGuest, dest_uri: str, tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2)
    # The source's agent shrinks the guest and still runs while it leaves.
    with running_agent(tmp_path / "source", demand_half_life=2) as source:
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "guest reclaimed on the source")
        time.sleep(2)  # libvirt's bulk statistics learn the size from QEMU's events
        shrunk = balloon_mib(guest)
        migration = Migration(guest.dom, dest_uri)
        with migration.arrived() as (dom, console):
            wait_until(lambda: not source.row(guest.name), 10,
                       "the guest gone from the source agent's state")
            assert source.stop() == 0
            # It arrives shrunk: in the destination's XML and in QEMU.
            assert abs(_current_memory_mib(dom) - shrunk) <= TOLERANCE_MIB
            assert abs(dest_balloon_mib(dom) - shrunk) <= TOLERANCE_MIB
            with running_agent(tmp_path / "dest", connection_uri=dest_uri,
                               restore_on_stop=False, demand_half_life=2) as dest:
                # Managed from what it has: never below its floor.
                wait_until(lambda: dest.row(guest.name).get("state") in
                           ("steady", "shrinking", "growing"), 30,
                           "the guest managed on the destination")
                row = dest.row(guest.name)
                assert row["floor_mb"] == FLOOR_MIB and row["ceiling_mb"] == 512, row
                for _ in range(5):
                    assert dest_balloon_mib(dom) >= FLOOR_MIB - TOLERANCE_MIB
                    time.sleep(1)
                # It needs more: the destination's agent gives it.
                start_memhog(console, mib=300, rate=40, hold=60)
                wait_until(lambda: dest_balloon_mib(dom) >= 360, 60,
                           "the guest grown on the destination for its demand")
                assert not console.oom_killed(), console.tail()
                console.run("pkill memhog")
                wait_until(lambda: dest_balloon_mib(dom) <= 480, 60,
                           "the guest below its full memory once its demand is gone")
                assert dest.stop() == 0
            # Owed its memory like any guest an agent shrank.
            out = restore_all(dest)
            assert "restored 1 guest(s)" in out, out
            wait_until(lambda: dest_balloon_mib(dom) >= 510, 20, "full memory back")


def test_aborted_migration_gives_the_guest_back_within_a_cycle(
        boot_guest: BootGuest, dest_uri: str, tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2)
    with running_agent(tmp_path, demand_half_life=2) as agent:
        wait_until(lambda: agent.row(guest.name).get("state") in ("steady", "shrinking"), 60,
                   "the guest managed")
        # At 1 MiB/s the guest's 70 MiB of touched memory take a minute.
        migration = Migration(guest.dom, dest_uri, bandwidth_mib_s=1)
        wait_until(lambda: MIGRATING in agent_reason(agent, guest.name), 20,
                   "the agent leaving the migrating guest alone")
        status = agent.status()
        row = next(r for r in status["guests"] if r["name"] == guest.name)
        assert row["state"] == "not managed" and MIGRATING in row["reason"], row
        # Nova aborts a migration past live_migration_completion_timeout;
        # the source gets no event for it.
        guest.dom.abortJob()
        migration.wait(30)
        migration.remove_console()
        assert migration.error is not None and "cancel" in str(migration.error)
        cycles = agent.state()["cycles"]
        wait_until(lambda: MIGRATING not in agent_reason(agent, guest.name), 10,
                   "the guest managed again after the abort")
        # The state file is written after each cycle: at most two cycles on.
        assert agent.state()["cycles"] - cycles <= 2
        assert agent.row(guest.name)["state"] != "not managed"
        wait_until(lambda: balloon_mib(guest) <= FLOOR_NEAR, 90, "the guest reclaimed again")
        assert agent.stop() == 0


def test_postcopy_guest_is_not_touched_on_the_destination(
        boot_guest: BootGuest, dest_uri: str, tmp_path: Path) -> None:
    guest = boot_guest(memory_mib=512, extra_specs=RATIO_2)
    # Below its floor: an agent that managed it would grow it at once.
    below_floor = FLOOR_MIB - 56
    shrink_by_hand(guest, below_floor)
    # The guest rewrites 8 MiB of its RAM (a tmpfs file) over and over: at
    # 1 MiB/s the pre-copy phase can never converge, so the switch to
    # post-copy below cannot come after the migration has already ended.
    guest.console.run("while :; do dd if=/dev/urandom of=/tmp/dirty bs=1M count=8 "
                      "2>/dev/null; done >/dev/null 2>&1 &", check=True)
    with running_agent(tmp_path, connection_uri=dest_uri, demand_half_life=2) as dest:
        wait_until(lambda: dest.state().get("cycles"), 30, "the destination's agent cycling")
        migration = Migration(guest.dom, dest_uri, bandwidth_mib_s=1, postcopy=True,
                              postcopy_bandwidth_mib_s=1)
        # QEMU refuses post-copy without userfaultfd when the migration starts.
        wait_until(lambda: migration.error or _memory_moving(guest.dom), 20,
                   "the migration moving memory")
        _skip_without_postcopy(migration)
        try:
            guest.dom.migrateStartPostCopy()
        except libvirt.libvirtError as exc:
            # The migration ended before the switch: say how.
            migration.wait(30)
            _skip_without_postcopy(migration)
            raise AssertionError(f"post-copy could not start ({exc}); the migration "
                                 f"ended with: {migration.error or 'success'}") from exc
        dom = wait_until(lambda: _postcopy_domain(migration), 20,
                         "the guest in post-copy on the destination")
        wait_until(lambda: MIGRATING in agent_reason(dest, guest.name), 10,
                   "the destination's agent leaving the post-copy guest alone")
        # The migration's job holds the domain: its balloon is read from
        # the XML, and the agent's log shows whether it set anything.
        since = len(dest.log())
        for _ in range(4):
            assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING,
                                   libvirt.VIR_DOMAIN_RUNNING_POSTCOPY]
            assert MIGRATING in agent_reason(dest, guest.name)
            assert _current_memory_mib(dom) <= below_floor + TOLERANCE_MIB
            time.sleep(1)
        assert f"Guest {guest.name} ({guest.uuid}): " not in dest.log()[since:]
        # Post-copy at full speed: it ends, and the guest is managed.
        guest.dom.migrateSetMaxSpeed(8192, libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)
        with migration.arrived() as (dom, _console):
            wait_until(lambda: dest_balloon_mib(dom) >= FLOOR_MIB - TOLERANCE_MIB, 30,
                       "the migrated guest grown to its floor")
            assert dest.stop() == 0


def _skip_without_postcopy(migration: Migration) -> None:
    """Skip where QEMU cannot do post-copy (no userfaultfd); raise any other error."""
    if migration.error is None:
        return
    if any(word in str(migration.error).lower() for word in ("postcopy", "userfault")):
        pytest.skip(f"post-copy cannot run here: {migration.error}")
    raise migration.error


def _current_memory_mib(dom: libvirt.virDomain) -> int:
    return int(etree.fromstring(dom.XMLDesc(0)).findtext("currentMemory")) // MIB


def _memory_moving(dom: libvirt.virDomain) -> bool:
    try:
        return int(dom.jobStats().get("memory_processed", 0)) > 0
    except libvirt.libvirtError:
        return False


def _postcopy_domain(migration: Migration) -> libvirt.virDomain | None:
    try:
        dom = migration.dest_domain()
    except libvirt.libvirtError:
        return None
    return dom if dom.state()[1] == libvirt.VIR_DOMAIN_RUNNING_POSTCOPY else None
