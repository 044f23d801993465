"""Soak the agent: real guests, changing memory use, lifecycle faults, kills.

Boots several tiny QEMU guests, runs nova-balloon-agent against them and, for
the time asked, makes each guest use and free memory at random while
injecting faults now and then, in turns: a guest rebooted from inside, a hard
reboot (destroyed and created again with the same UUID, as Nova does), a
managed save and restore, a disk attached and detached, a libvirtd restart,
a guest killed (and replaced), ballooning disabled for a while in a guest's
Nova metadata (the agent must give back what it took). Invariants, checked
every second:

- each guest's balloon stays within its flavor bounds;
- a running guest that the agent no longer manages (ignored, or its memory
  pinned by a device) does not stay below its ceiling (where the agent put
  it: nothing else shrinks guests here) for more than a few seconds;

and once the agent has stopped (``restore_on_stop``), no guest is left below
its ceiling. It prints a report: cycles run, faults injected, guest OOM
kills, agent exceptions, invariant violations and target changes per
guest-hour.

    .venv/bin/python tools/soak.py --minutes 20

Exit status 0 only if there were no OOM kills, exceptions or violations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.functional.agent_process import Agent, running_agent  # noqa: E402
from tests.functional.guests import (  # noqa: E402
    READY_MARKER,
    BootedGuest,
    GuestConsole,
    GuestError,
    booted_guest,
    current_domain,
    live_connection,
    nova_metadata_config,
    start_memhog,
)

MIB = 1024
# name prefix -> (RAM MiB, overcommit ratio)
FLAVORS = [(512, 2.0), (512, 2.0), (768, 3.0), (512, 1.5)]
TOLERANCE_MIB = 4
# How long a running guest that the agent shrank and no longer manages may
# stay below its ceiling: the agent gives it back within a cycle or two.
IGNORED_GRACE_S = 5
# How long the agent that stopped may take to give every guest its full
# memory back.
RESTORE_GRACE_S = 20
FAULTS = ('guest rebooted inside', 'hard reboot', 'managed save and restore',
          'disk attached and detached', 'ballooning disabled', 'libvirtd restart',
          'guest killed')
LIFECYCLE_FAULTS = 5
# How long a guest's ballooning stays disabled: past IGNORED_GRACE_S.
DISABLED_S = IGNORED_GRACE_S + 3
NOVA_NS = 'http://openstack.org/xmlns/libvirt/nova/1.1'
DISK_XML = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            "<source file='{path}'/><target dev='vdb' bus='virtio'/></disk>")


class Soak:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(args.workdir)
        self.stacks: dict[str, contextlib.ExitStack] = {}
        self.guests: dict[str, BootedGuest] = {}
        self.bounds: dict[str, tuple[int, int]] = {}
        self.flavors: dict[str, tuple[int, float]] = {}
        self.busy_until: dict[str, float] = {}
        self.oom_kills = 0
        self.violations: list[str] = []
        self.faults = dict.fromkeys(FAULTS, 0)
        # Lifecycle faults first, then the others, each in turn.
        lifecycle, others = list(FAULTS[:LIFECYCLE_FAULTS]), list(FAULTS[LIFECYCLE_FAULTS:])
        self.rng.shuffle(lifecycle)
        self.rng.shuffle(others)
        self.fault_order = lifecycle + others
        self.serial = 0
        # name -> since when the guest is ignored, shrunk and below its ceiling.
        self.ignored_below: dict[str, float] = {}

    def boot(self, ram: int, ratio: float, name: str | None = None,
             uuid: str | None = None) -> None:
        if name is None:
            self.serial += 1
            name = f'nbsoak-{self.serial}'
        stack = contextlib.ExitStack()
        guest = stack.enter_context(booted_guest(
            live_connection(), name=name, memory_mib=ram, flavor_name=f'm1.soak{ram}',
            extra_specs={'balloon:overcommit_ratio': str(ratio)},
            image_dir=REPO_ROOT / 'build' / 'guest', workdir=self.workdir, uuid=uuid))
        self.stacks[name] = stack
        self.guests[name] = guest
        self.bounds[name] = (int(ram / ratio), ram)
        self.flavors[name] = (ram, ratio)
        self.busy_until[name] = 0.0

    def kill(self, name: str) -> None:
        guest = self.guests.pop(name)
        self.oom_kills += guest.console.oom_killed()
        with contextlib.suppress(libvirt.libvirtError):
            dom = current_domain(guest)
            if dom.isPersistent():  # a managed save interrupted
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
        self.stacks.pop(name).close()
        self.bounds.pop(name)
        self.flavors.pop(name)
        self.ignored_below.pop(name, None)

    def balloon_mib(self, name: str) -> int | None:
        """The guest's balloon, or None while libvirtd restarts."""
        try:
            return int(current_domain(self.guests[name]).memoryStats().get('actual', 0)) // MIB
        except libvirt.libvirtError:
            return None

    def running(self, name: str) -> bool:
        try:
            return bool(current_domain(self.guests[name]).state()[0] ==
                        libvirt.VIR_DOMAIN_RUNNING)
        except libvirt.libvirtError:
            return False

    def check(self, agent: Agent) -> None:
        rows = {row['name']: row for row in agent.state().get('guests', [])}
        now = time.monotonic()
        for name in list(self.guests):
            actual = self.balloon_mib(name)
            if actual is None:
                continue
            floor, ceiling = self.bounds[name]
            if not floor - TOLERANCE_MIB <= actual <= ceiling:
                self.violations.append(f'{name}: balloon {actual} MiB outside '
                                       f'[{floor}, {ceiling}]')
            row = rows.get(name, {})
            # Only the agent shrinks guests here: below its ceiling, the
            # guest is owed what the agent took, whatever it remembers.
            if (row.get('state') == 'not managed' and actual < ceiling - TOLERANCE_MIB
                    and self.running(name)):
                since = self.ignored_below.setdefault(name, now)
                if now - since > IGNORED_GRACE_S:
                    self.violations.append(
                        f'{name}: not managed ({row.get("reason")}) and '
                        f'still at {actual} MiB of {ceiling} after {IGNORED_GRACE_S} s')
                    self.ignored_below[name] = now
            else:
                self.ignored_below.pop(name, None)

    def check_restored(self, why: str) -> None:
        """Every guest reaches its ceiling within RESTORE_GRACE_S."""
        deadline = time.monotonic() + RESTORE_GRACE_S
        for name in list(self.guests):
            ceiling = self.bounds[name][1]
            while (actual := self.balloon_mib(name)) is None or actual < ceiling - TOLERANCE_MIB:
                if time.monotonic() >= deadline:
                    self.violations.append(f'{name}: at {actual} MiB of {ceiling} '
                                           f'{RESTORE_GRACE_S} s after {why}')
                    break
                time.sleep(0.25)

    def exercise(self, now: float) -> None:
        for name, guest in self.guests.items():
            if now < self.busy_until[name] or self.rng.random() > 0.3:
                continue
            ceiling = self.bounds[name][1]
            size = self.rng.randint(32, int(ceiling * 0.7))
            rate = self.rng.choice([20, 40, 60])
            hold = self.rng.randint(5, 30)
            with contextlib.suppress(GuestError, TimeoutError):
                start_memhog(guest.console, mib=size, rate=rate, hold=hold)
            self.busy_until[name] = now + size / rate + hold + self.rng.randint(5, 30)

    def fault(self, agent: Agent) -> None:
        kind = self.fault_order[sum(self.faults.values()) % len(self.fault_order)]
        name = self.rng.choice(sorted(self.guests))
        if kind == 'libvirtd restart':
            subprocess.run(['pkill', '-x', 'libvirtd'], check=False)
            # start-libvirtd.sh starts none while the old one is still exiting.
            deadline = time.monotonic() + 30
            while subprocess.run(['pgrep', '-x', 'libvirtd'], capture_output=True).returncode == 0 \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(self.rng.uniform(1, 8))
            subprocess.run(['bash', str(REPO_ROOT / 'tools' / 'start-libvirtd.sh')],
                           check=True, capture_output=True)
        elif kind == 'guest killed':
            flavor = self.flavors[name]
            self.kill(name)
            self.boot(*flavor)
        elif kind == 'hard reboot':
            flavor, uuid = self.flavors[name], self.guests[name].uuid
            self.kill(name)
            self.boot(*flavor, name=name, uuid=uuid)
        elif kind == 'guest rebooted inside':
            console = self.guests[name].console
            since = console.offset
            console.send('reboot -f\n')
            console.wait_for(READY_MARKER, 120, since=since)
            console.wait_for_shell(30)
        elif kind == 'managed save and restore':
            self.save_and_restore(name)
        elif kind == 'ballooning disabled':
            shrunk = [n for n in sorted(self.guests) if agent.row(n).get('shrunk')]
            self.disable_ballooning(shrunk[0] if shrunk else name, agent)
        else:
            self.attach_and_detach_disk(name)
        self.faults[kind] += 1

    def save_and_restore(self, name: str) -> None:
        """Nova's suspend and resume: the domain defined, saved, started, then transient again.

        A new QEMU process starts from the saved memory, balloon included.
        """
        guest = self.guests[name]
        dom = current_domain(guest)
        live_connection().defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE))
        dom.managedSave(0)
        dom.create()
        dom.undefine()
        old = guest.console
        self.oom_kills += old.oom_killed()
        old.close()
        guest.console = GuestConsole(old.socket_path,
                                     log_path=self.workdir / f'{name}.console.log')
        self.stacks[name].callback(guest.console.close)
        guest.console.wait_for_shell(30)

    def disable_ballooning(self, name: str, agent: Agent) -> None:
        """``balloon:enabled=false`` in the guest's metadata for DISABLED_S, checked meanwhile.

        The agent no longer manages the guest: one it had shrunk is owed its
        full memory at once (see check).
        """
        dom = current_domain(self.guests[name])
        ram, ratio = self.flavors[name]
        for specs in ({'balloon:overcommit_ratio': str(ratio), 'balloon:enabled': 'false'},
                      {'balloon:overcommit_ratio': str(ratio)}):
            meta = nova_metadata_config(name=name, memory_mib=ram,
                                        flavor_name=f'm1.soak{ram}', extra_specs=specs)
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, meta.to_xml(), 'instance',
                            NOVA_NS, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            if 'balloon:enabled' in specs:
                for _ in range(DISABLED_S):
                    time.sleep(1)
                    self.check(agent)

    def attach_and_detach_disk(self, name: str) -> None:
        """A device hot-plugged and unplugged: the agent reads the XML again."""
        disk = self.workdir / f'{name}-disk.img'
        disk.write_bytes(bytes(MIB * 1024))
        xml = DISK_XML.format(path=disk)
        dom = current_domain(self.guests[name])
        dom.attachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        time.sleep(self.rng.uniform(1, 5))
        dom.detachDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        # The guest releases the device (ACPI eject) before it is gone.
        deadline = time.monotonic() + 15
        while "dev='vdb'" in dom.XMLDesc(0) and time.monotonic() < deadline:
            time.sleep(0.5)

    def run(self) -> int:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for ram, ratio in FLAVORS[:self.args.guests]:
            self.boot(ram, ratio)
        start = time.monotonic()
        end = start + self.args.minutes * 60
        next_fault = start + self.args.fault_every
        with running_agent(self.workdir / 'agent', interval=1, stats_period=1) as agent:
            while (now := time.monotonic()) < end:
                self.exercise(now)
                if now >= next_fault:
                    self.fault(agent)
                    next_fault = (time.monotonic()
                                  + self.args.fault_every * self.rng.uniform(0.5, 1.5))
                self.check(agent)
                time.sleep(1)
            state = agent.state()
            agent.stop(signal.SIGTERM)
            log = agent.log()
        # restore_on_stop: the agent gave every guest its memory back.
        self.check_restored('the agent stopped')
        for name in list(self.guests):
            self.kill(name)
        hours = (time.monotonic() - start) / 3600
        changes = sum(1 for line in log.splitlines()
                      if ': grow to ' in line or ': shrink to ' in line)
        exceptions = log.count('Traceback') + log.count(' ERROR ')
        report = {
            'minutes': round(hours * 60, 1),
            'guests': self.args.guests,
            'cycles run': state.get('cycles'),
            'faults injected': dict(self.faults),
            'guest OOM kills': self.oom_kills,
            'agent exceptions': exceptions,
            'invariant violations': len(self.violations),
            'violations': self.violations[:20],
            'target changes per guest-hour': round(changes / (hours * self.args.guests), 1),
        }
        if self.args.format == 'json':
            print(json.dumps(report))
        else:
            for key, value in report.items():
                if key != 'violations':
                    print(f'{key:<32} {value}')
            for violation in self.violations[:20]:
                print(f'  violation: {violation}')
        return 0 if not (self.oom_kills or exceptions or self.violations) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--minutes', type=float, default=20)
    parser.add_argument('--guests', type=int, default=4, choices=range(1, len(FLAVORS) + 1))
    parser.add_argument('--fault-every', type=float, default=60,
                        help='mean seconds between injected faults')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--workdir', default=str(REPO_ROOT / 'build' / 'soak'))
    parser.add_argument('--format', choices=('table', 'json'), default='table')
    return Soak(parser.parse_args()).run()


if __name__ == '__main__':
    sys.exit(main())
