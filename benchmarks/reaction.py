"""Reaction of the agent to a guest's sudden demand, on real QEMU guests.

A 512 MiB guest with balloon:overcommit_ratio 2.0 is reclaimed to its floor
(256 MiB) by nova-balloon-agent running with its default configuration. It
then allocates memory at a steady rate (50, 100, 200 MiB/s). Each run reports
the time from the start until the balloon covered the new demand, the guest's
lowest MemAvailable on the way (sampled over its serial console) and whether
anything in the guest was OOM-killed. Then the idle cost: libvirt calls and
guest statistics wake-ups per minute with 16 idle guests under the agent,
against a plain 10 s stats period without it.

    .venv/bin/python benchmarks/reaction.py [--repeats 3] [--idle-guests 16]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.functional.agent_process import running_agent  # noqa: E402
from tests.functional.guests import (  # noqa: E402
    booted_guest,
    live_connection,
    start_memhog,
    wait_until,
)

MIB = 1024
FILL_MIB = 320
RATIO_2 = {'balloon:overcommit_ratio': '2.0'}
IMAGE = REPO_ROOT / 'build' / 'guest'


def reaction_runs(workdir: Path, rates: list[int], repeats: int) -> list[dict]:
    runs = []
    with booted_guest(live_connection(), name='nbreact', memory_mib=512,
                      flavor_name='m1.react', extra_specs=RATIO_2, image_dir=IMAGE,
                      workdir=workdir) as guest, \
            running_agent(workdir / 'agent') as agent:
        def balloon() -> int:
            return guest.dom.memoryStats()['actual'] // MIB

        for rate in rates:
            for attempt in range(repeats):
                wait_until(lambda: balloon() <= 256 + 16, 180, 'guest back at its floor')
                time.sleep(3)
                base_use = balloon() - free_mib(guest)
                mark = guest.console.offset
                start = time.monotonic()
                start_memhog(guest.console, mib=FILL_MIB, rate=rate, hold=8)
                lowest = free_mib(guest)
                covered_at = None
                while time.monotonic() - start < FILL_MIB / rate + 20:
                    lowest = min(lowest, free_mib(guest))
                    if covered_at is None and balloon() >= base_use + FILL_MIB:
                        covered_at = time.monotonic() - start
                    if covered_at is not None and \
                            time.monotonic() - start > FILL_MIB / rate + 2:
                        break
                oom = guest.console.oom_killed(since=mark)
                runs.append({'rate': rate, 'attempt': attempt + 1,
                             'covered_s': covered_at, 'lowest_free_mib': lowest,
                             'oom': oom})
                print(f'  {rate:>3} MiB/s run {attempt + 1}: covered in '
                      f'{"never" if covered_at is None else f"{covered_at:.1f} s"}, '
                      f'lowest MemAvailable {lowest} MiB, OOM kill: {oom}', flush=True)
                guest.console.run('killall memhog 2>/dev/null; true')
        assert agent.stop() == 0
    return runs


def free_mib(guest) -> int:
    out = guest.console.run('grep MemAvailable /proc/meminfo')
    match = re.search(r'MemAvailable:\s+(\d+)', out)
    return int(match.group(1)) // MIB if match else 0


def idle_cost(workdir: Path, count: int, minutes: float) -> dict:
    """libvirt calls and stats wake-ups per minute, agent vs a plain 10 s period."""
    with contextlib.ExitStack() as stack:
        guests = [stack.enter_context(booted_guest(
            live_connection(), name=f'nbidle-{i}', memory_mib=512, flavor_name='m1.idle',
            extra_specs=RATIO_2, image_dir=IMAGE, workdir=workdir, stats_period=10))
            for i in range(count)]
        with running_agent(workdir / 'idle-agent') as agent:
            wait_until(lambda: all(g.dom.memoryStats()['actual'] <= (256 + 16) * MIB
                                   for g in guests), 600, 'idle guests reclaimed')
            calls_before, cycles_before = (agent.state().get('libvirt_calls', 0),
                                           agent.state().get('cycles', 0))
            time.sleep(minutes * 60)
            state = agent.state()
            periods = [stats_period(g.dom) for g in guests]
            assert agent.stop() == 0
    return {
        'agent libvirt calls/min': (state['libvirt_calls'] - calls_before) / minutes,
        'agent cycles/min': (state['cycles'] - cycles_before) / minutes,
        'agent guest wake-ups/min': sum(60 / p for p in periods),
        'plain 10 s guest wake-ups/min': count * 6,
        'periods': sorted(set(periods)),
    }


def stats_period(dom) -> int:
    match = re.search(r"<stats period='(\d+)'", dom.XMLDesc(0))
    return int(match.group(1)) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rates', default='50,100,200')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--idle-guests', type=int, default=16)
    parser.add_argument('--idle-minutes', type=float, default=1.0)
    parser.add_argument('--workdir', default=str(REPO_ROOT / 'build' / 'reaction'))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rates = [int(r) for r in args.rates.split(',')]

    print('Reaction runs (default configuration):', flush=True)
    runs = reaction_runs(workdir, rates, args.repeats)
    print('\n| rate MiB/s | runs | covered s (median / worst) | lowest MemAvailable MiB '
          '(median / worst) | OOM kills | goal: no OOM kill at 50 and 100 MiB/s |')
    print('|---|---|---|---|---|---|')
    for rate in rates:
        mine = [r for r in runs if r['rate'] == rate]
        covered = [r['covered_s'] for r in mine if r['covered_s'] is not None]
        lows = [r['lowest_free_mib'] for r in mine]
        ooms = sum(r['oom'] for r in mine)
        goal = ('holds' if ooms == 0 else 'FAILS') if rate <= 100 else '(not a goal)'
        cov = (f'{statistics.median(covered):.1f} / {max(covered):.1f}' if covered
               else 'never')
        if covered and len(covered) < len(mine):
            cov += f' ({len(mine) - len(covered)} never)'
        print(f'| {rate} | {len(mine)} | {cov} | {statistics.median(lows):.0f} / '
              f'{min(lows)} | {ooms} | {goal} |')

    if args.idle_guests:
        print(f'\nIdle cost with {args.idle_guests} idle guests (reclaimed to their floor), '
              f'over {args.idle_minutes:g} min:', flush=True)
        cost = idle_cost(workdir, args.idle_guests, args.idle_minutes)
        print('| figure | nova-balloon (defaults) | plain 10 s stats period, no agent |')
        print('|---|---|---|')
        print(f"| libvirt calls/min | {cost['agent libvirt calls/min']:.0f} | 0 |")
        print(f"| control cycles/min | {cost['agent cycles/min']:.0f} | - |")
        print(f"| guest stats wake-ups/min | {cost['agent guest wake-ups/min']:.0f} "
              f"(periods {cost['periods']} s) | {cost['plain 10 s guest wake-ups/min']} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
