"""Soak the agent: real guests, changing memory use, libvirtd restarts, kills.

Boots several tiny QEMU guests, runs nova-balloon-agent against them and, for
the time asked, makes each guest use and free memory at random while
restarting libvirtd and killing (and replacing) guests now and then. Checks
every second that each guest's balloon stays within its flavor bounds, and
prints a report: cycles run, faults injected, guest OOM kills, agent
exceptions, invariant violations and target changes per guest-hour.

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

from tests.functional.agent_process import running_agent  # noqa: E402
from tests.functional.guests import (  # noqa: E402
    BootedGuest,
    GuestError,
    booted_guest,
    current_domain,
    live_connection,
    start_memhog,
)

MIB = 1024
# name prefix -> (RAM MiB, overcommit ratio)
FLAVORS = [(512, 2.0), (512, 2.0), (768, 3.0), (512, 1.5)]
TOLERANCE_MIB = 4


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
        self.faults = {'libvirtd restart': 0, 'guest killed': 0}
        self.serial = 0

    def boot(self, ram: int, ratio: float) -> None:
        self.serial += 1
        name = f'nbsoak-{self.serial}'
        stack = contextlib.ExitStack()
        guest = stack.enter_context(booted_guest(
            live_connection(), name=name, memory_mib=ram, flavor_name=f'm1.soak{ram}',
            extra_specs={'balloon:overcommit_ratio': str(ratio)},
            image_dir=REPO_ROOT / 'build' / 'guest', workdir=self.workdir))
        self.stacks[name] = stack
        self.guests[name] = guest
        self.bounds[name] = (int(ram / ratio), ram)
        self.flavors[name] = (ram, ratio)
        self.busy_until[name] = 0.0

    def kill(self, name: str) -> None:
        guest = self.guests.pop(name)
        self.oom_kills += guest.console.oom_killed()
        self.stacks.pop(name).close()
        self.bounds.pop(name)
        self.flavors.pop(name)

    def check(self) -> None:
        for name, guest in list(self.guests.items()):
            try:
                actual = current_domain(guest).memoryStats().get('actual', 0) // MIB
            except libvirt.libvirtError:
                continue  # libvirtd is being restarted
            floor, ceiling = self.bounds[name]
            if not floor - TOLERANCE_MIB <= actual <= ceiling:
                self.violations.append(f'{name}: balloon {actual} MiB outside '
                                       f'[{floor}, {ceiling}]')

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

    def fault(self) -> None:
        if self.rng.random() < 0.5:
            subprocess.run(['pkill', '-x', 'libvirtd'], check=False)
            time.sleep(self.rng.uniform(1, 8))
            subprocess.run(['bash', str(REPO_ROOT / 'tools' / 'start-libvirtd.sh')],
                           check=True, capture_output=True)
            self.faults['libvirtd restart'] += 1
        else:
            name = self.rng.choice(sorted(self.guests))
            flavor = self.flavors[name]
            self.kill(name)
            self.faults['guest killed'] += 1
            self.boot(*flavor)

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
                    self.fault()
                    next_fault = now + self.args.fault_every * self.rng.uniform(0.5, 1.5)
                self.check()
                time.sleep(1)
            state = agent.state()
            agent.stop(signal.SIGTERM)
            log = agent.log()
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
            'target changes per guest-hour': round(changes / (hours * self.args.guests), 1),
        }
        if self.args.format == 'json':
            print(json.dumps(report))
        else:
            for key, value in report.items():
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
