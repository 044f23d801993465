"""Reaction of the agent to a guest's sudden demand, on real QEMU guests.

The spec is ``shared/benchmarks/reaction.md``. nova-balloon-agent runs in its
default configuration. For each run a fresh 512 MiB guest with
``balloon:overcommit_ratio`` 2.0 boots while it runs and is reclaimed to its
floor (256 MiB); then the guest fills 300 MiB at a steady rate, with
anonymous memory (memhog) or with files in a tmpfs. Two balloon kinds:
``autodeflate='on' freePageReporting='on'`` with the flavor's extra specs in
the domain metadata, as Nova 34 writes it ("recent"), and neither attribute
nor extra specs, as older Nova writes it, the balloon keys then coming from
``[balloon] flavor_policy_file`` ("older").

Per run: the seconds from boot until the balloon reached the floor, the
lowest MemAvailable in the guest during the fill (memlow samples it every
50 ms inside the guest), OOM kills (the guest kernel's log), OOM deflations
(the balloon above the agent's target by the guest's own action, seen from
the host every 0.2 s) and the seconds from the start of the fill until the
balloon covered the new demand. Then the idle cost: libvirt calls, control
cycles and guest statistics wake-ups per minute with 16 idle guests under
the agent, against a plain 10 s stats period without it.

    .venv/bin/python benchmarks/reaction.py [--repeats 3] [--rates 25,50,100]
        [--kinds recent,older] [--fills anon,tmpfs] [--idle-guests 16]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import re
import statistics
import sys
import time
from pathlib import Path

import libvirt

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.functional.agent_process import Agent, default_timing, running_agent  # noqa: E402
from tests.functional.guests import (  # noqa: E402
    BootedGuest,
    booted_guest,
    live_connection,
    wait_until,
)

MIB = 1024
GUEST_MIB = 512
FLOOR_MIB = 256
FILL_MIB = 300
HOLD_S = 8
RATIO_2 = {'balloon:overcommit_ratio': '2.0'}
IMAGE = REPO_ROOT / 'build' / 'guest'
# Within this of its target a balloon has reached it (responsiveness.py).
SETTLE_MIB = 2
# A guest this close to its floor is at it: the agent's default dead band.
AT_FLOOR_MIB = 16
KINDS = {
    'recent': {'autodeflate': True, 'extra_specs_in_metadata': True,
               'flavor_name': 'm1.react'},
    'older': {'autodeflate': False, 'extra_specs_in_metadata': False,
              'flavor_name': 'm1.react-older'},
}
FILLS = ('anon', 'tmpfs')


@dataclasses.dataclass
class Run:
    kind: str
    fill: str
    rate: int
    attempt: int
    to_floor_s: float
    lowest_free_mib: int
    oom_kills: int
    oom_deflations: int
    covered_s: float | None

    def line(self) -> str:
        covered = 'never' if self.covered_s is None else f'{self.covered_s:.1f} s'
        return (f'{self.kind} {self.fill} {self.rate} MiB/s run {self.attempt}: floor '
                f'{self.to_floor_s:.0f} s after boot, covered in {covered}, lowest '
                f'MemAvailable {self.lowest_free_mib} MiB, OOM kills {self.oom_kills}, '
                f'OOM deflations {self.oom_deflations}')


def balloon_mib(dom: libvirt.virDomain) -> int:
    return dom.memoryStats()['actual'] // MIB


def agent_target_mib(agent: Agent, uuid: str) -> int | None:
    target = agent.state().get('memory', {}).get(uuid, {}).get('target_kib')
    return None if target is None else target // MIB


def guest_free_mib(guest: BootedGuest) -> int:
    out = guest.console.run('grep MemAvailable /proc/meminfo')
    match = re.search(r'MemAvailable:\s+(\d+)', out)
    return int(match.group(1)) // MIB if match else 0


def guest_oom_kills(guest: BootedGuest) -> int:
    out = guest.console.run('grep oom_kill /proc/vmstat')
    match = re.search(r'oom_kill\s+(\d+)', out)
    return int(match.group(1)) if match else 0


def one_run(agent: Agent, workdir: Path, kind: str, fill: str, rate: int,
            attempt: int) -> Run:
    """Boot a guest under the running agent, wait for its floor, fill it at ``rate``."""
    spec = KINDS[kind]
    with booted_guest(live_connection(), name=f'nbreact-{kind}-{fill}-{rate}-{attempt}',
                      memory_mib=GUEST_MIB, flavor_name=str(spec['flavor_name']),
                      extra_specs=RATIO_2, image_dir=IMAGE, workdir=workdir,
                      stats_period=10, autodeflate=spec['autodeflate'],
                      extra_specs_in_metadata=spec['extra_specs_in_metadata']) as guest:
        booted = time.monotonic() - guest.boot_seconds
        wait_until(lambda: balloon_mib(guest.dom) <= FLOOR_MIB + AT_FLOOR_MIB, 300,
                   f'{guest.name} reclaimed to its floor')
        to_floor = time.monotonic() - booted
        time.sleep(5)  # Idle at the floor, as a reclaimed guest is.
        console = guest.console
        console.run('memlow >/tmp/memlow.log 2>&1 &', check=True)
        target = None
        if fill == 'tmpfs':
            console.run('mkdir -p /mnt/fill && mount -t tmpfs -o size=1g fill /mnt/fill',
                        check=True)
            target = '/mnt/fill/data'
        kills_before = guest_oom_kills(guest)
        base_use = balloon_mib(guest.dom) - guest_free_mib(guest)
        start = time.monotonic()
        file_arg = f' --file {target}' if target else ''
        console.run(f'memhog --mib {FILL_MIB} --rate {rate}{file_arg} --hold {HOLD_S} '
                    f'>/tmp/memhog.log 2>&1 &', check=True)
        covered_at = None
        deflations = streak = 0
        before = balloon_mib(guest.dom)
        while time.monotonic() - start < FILL_MIB / rate + HOLD_S:
            actual = balloon_mib(guest.dom)
            # Read after the balloon: the agent writes its state after it acts.
            set_to = agent_target_mib(agent, guest.uuid)
            # Rising while above the target: only the guest deflates so.
            rising_above = set_to is not None and actual > set_to + SETTLE_MIB and \
                actual > before + SETTLE_MIB
            before = actual
            # Twice in a row, so that a target just set and not yet written
            # to the state file does not count.
            streak = streak + 1 if rising_above else 0
            if streak == 2:
                deflations += 1
            if covered_at is None and actual >= base_use + FILL_MIB:
                covered_at = time.monotonic() - start
            time.sleep(0.2)
        console.run('killall memhog memlow 2>/dev/null; true')
        lows = re.findall(r'memlow: (\d+) kB', console.run('cat /tmp/memlow.log'))
        return Run(kind, fill, rate, attempt, to_floor,
                   int(lows[-1]) // MIB if lows else 0,
                   guest_oom_kills(guest) - kills_before, deflations, covered_at)


def reaction_runs(workdir: Path, kinds: list[str], fills: list[str], rates: list[int],
                  repeats: int) -> list[Run]:
    policy_file = workdir / 'flavors.yaml'
    policy_file.write_text(f"{KINDS['older']['flavor_name']}:\n"
                           f"  balloon:overcommit_ratio: '2.0'\n")
    runs = []
    with running_agent(workdir / 'agent', flavor_policy_file=policy_file,
                       **default_timing()) as agent:
        for attempt in range(1, repeats + 1):
            for kind in kinds:
                for fill in fills:
                    for rate in rates:
                        run = one_run(agent, workdir, kind, fill, rate, attempt)
                        print(f'  {run.line()}', flush=True)
                        runs.append(run)
        assert agent.stop() == 0
    return runs


def goal(kind: str, rate: int, runs: list[Run]) -> str:
    """The spec's goals for this kind and rate, and whether the runs meet them."""
    kills = sum(r.oom_kills for r in runs)
    deflations = sum(r.oom_deflations for r in runs)
    lowest = min(r.lowest_free_mib for r in runs)
    checks = []
    if kind == 'older' and rate in (50, 100):
        checks.append(('no OOM kill', kills == 0))
        if rate == 50:
            checks.append(('lowest >= 32 MiB', lowest >= 32))
    if kind == 'recent' and rate == 50:
        checks.append(('no OOM deflation', deflations == 0))
    if kind == 'recent' and rate == 100:
        checks.append(('no OOM kill', kills == 0))
    if not checks:
        return '(no goal)'
    return ', '.join(f'{text}: {"holds" if ok else "FAILS"}' for text, ok in checks)


def table(runs: list[Run]) -> list[str]:
    lines = ['| balloon | fill | rate MiB/s | runs | covered s (median / worst) | lowest '
             'MemAvailable MiB (median / worst) | OOM kills | OOM deflations | goal |',
             '|---|---|---|---|---|---|---|---|---|']
    groups: dict[tuple[str, str, int], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.kind, run.fill, run.rate), []).append(run)
    for (kind, fill, rate), mine in groups.items():
        covered = [r.covered_s for r in mine if r.covered_s is not None]
        lows = [r.lowest_free_mib for r in mine]
        cov = (f'{statistics.median(covered):.1f} / {max(covered):.1f}' if covered
               else 'never')
        if covered and len(covered) < len(mine):
            cov += f' ({len(mine) - len(covered)} never)'
        lines.append(f'| {kind} | {fill} | {rate} | {len(mine)} | {cov} | '
                     f'{statistics.median(lows):.0f} / {min(lows)} | '
                     f'{sum(r.oom_kills for r in mine)} | '
                     f'{sum(r.oom_deflations for r in mine)} | {goal(kind, rate, mine)} |')
    floors = [r.to_floor_s for r in runs]
    lines.append('')
    lines.append(f'Boot to floor (every run, the agent already running): median '
                 f'{statistics.median(floors):.0f} s, worst {max(floors):.0f} s; goal '
                 f'<= 120 s: {"holds" if max(floors) <= 120 else "FAILS"}')
    return lines


def idle_cost(workdir: Path, count: int, minutes: float) -> dict:
    """libvirt calls and stats wake-ups per minute, agent vs a plain 10 s period."""
    with contextlib.ExitStack() as stack:
        guests = [stack.enter_context(booted_guest(
            live_connection(), name=f'nbidle-{i}', memory_mib=GUEST_MIB,
            flavor_name='m1.idle', extra_specs=RATIO_2, image_dir=IMAGE, workdir=workdir,
            stats_period=10)) for i in range(count)]
        with running_agent(workdir / 'idle-agent', **default_timing()) as agent:
            wait_until(lambda: all(balloon_mib(g.dom) <= FLOOR_MIB + AT_FLOOR_MIB
                                   for g in guests),
                       600, 'idle guests reclaimed')
            time.sleep(10)
            before = agent.state()
            time.sleep(minutes * 60)
            after = agent.state()
            periods = [stats_period(g.dom) for g in guests]
            assert agent.stop() == 0
    return {
        'libvirt calls/min': (after['libvirt_calls'] - before['libvirt_calls']) / minutes,
        'cycles/min': (after['cycles'] - before['cycles']) / minutes,
        'wake-ups/min': sum(60 / p for p in periods),
        'plain wake-ups/min': count * 6,
        'periods': sorted(set(periods)),
    }


def stats_period(dom: libvirt.virDomain) -> int:
    match = re.search(r"<stats period='(\d+)'", dom.XMLDesc(0))
    return int(match.group(1)) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--kinds', default=','.join(KINDS))
    parser.add_argument('--fills', default=','.join(FILLS))
    parser.add_argument('--rates', default='25,50,100')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--idle-guests', type=int, default=16)
    parser.add_argument('--idle-minutes', type=float, default=1.0)
    parser.add_argument('--workdir', default=str(REPO_ROOT / 'build' / 'reaction'))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = args.kinds.split(',')
    fills = args.fills.split(',')
    unknown = set(kinds) - set(KINDS) | set(fills) - set(FILLS)
    if unknown:
        parser.error(f'unknown balloon kind or fill: {", ".join(sorted(unknown))}')
    rates = [int(r) for r in args.rates.split(',')]

    if args.repeats:
        print(f'Reaction runs (agent defaults {default_timing()}; {GUEST_MIB} MiB guest, ratio '
              f'2.0, {FILL_MIB} MiB fill from the floor):', flush=True)
        runs = reaction_runs(workdir, kinds, fills, rates, args.repeats)
        print()
        print('\n'.join(table(runs)), flush=True)

    if args.idle_guests:
        print(f'\nIdle cost with {args.idle_guests} idle guests (reclaimed to their floor), '
              f'over {args.idle_minutes:g} min:', flush=True)
        cost = idle_cost(workdir, args.idle_guests, args.idle_minutes)
        print('| figure | nova-balloon (defaults) | plain 10 s stats period, no agent |')
        print('|---|---|---|')
        print(f"| libvirt calls/min | {cost['libvirt calls/min']:.0f} | 0 |")
        print(f"| control cycles/min | {cost['cycles/min']:.0f} | - |")
        print(f"| guest stats wake-ups/min | {cost['wake-ups/min']:.0f} "
              f"(periods {cost['periods']} s) | {cost['plain wake-ups/min']} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
