"""The nova-balloon demo: three Nova-like guests, the agent, balloons moving.

Boots three tiny QEMU guests with different flavors under libvirt (with the
test harness of tests/functional/guests.py), starts nova-balloon-agent, and
prints a live table of their balloons while one guest's demand rises and
falls. Ends with a summary and stops the agent, which gives the memory back.

Run it through tools/setup-and-demo.sh, which installs what it needs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.functional.guests import booted_guest, start_memhog  # noqa: E402

MIB = 1024
FLAVORS = {
    # name: (flavor, RAM MiB, extra specs)
    'demo-web': ('m1.web', 512, {'balloon:overcommit_ratio': '2.0'}),
    'demo-batch': ('m1.batch', 768, {'balloon:overcommit_ratio': '3.0',
                                     'balloon:shares': '2000'}),
    'demo-db': ('m1.db', 512, {'balloon:overcommit_ratio': '1.0'}),
}
BUSY = 'demo-batch'


def agent_rows(state_path: Path) -> dict[str, dict]:
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return {}
    return {row['name']: row for row in state.get('guests', [])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', default=str(REPO_ROOT / 'build' / 'demo'))
    parser.add_argument('--fill-mib', type=int, default=500)
    parser.add_argument('--rate', type=float, default=40, help='MiB/s of the fill')
    parser.add_argument('--hold', type=float, default=20)
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / 'state.json'
    state_path.unlink(missing_ok=True)
    log_path = workdir / 'agent.log'
    config = workdir / 'agent.conf'
    config.write_text(
        f'[DEFAULT]\nlog_file = {log_path}\n'
        '[libvirt]\nconnection_uri = qemu:///system\n'
        f'[balloon]\ninterval = 1\nstats_period = 1\nstate_file = {state_path}\n'
        # The demo compresses time: the policy forgets a peak within seconds,
        # not the default 8 minutes, so the guest is reclaimed again on stage.
        '[adaptive_policy]\ndemand_half_life = 5\n')

    conn = libvirt.open('qemu:///system')
    with contextlib.ExitStack() as stack:
        print('Booting three guests (QEMU, TCG)...', flush=True)
        guests = {}
        for name, (flavor, ram, specs) in FLAVORS.items():
            guests[name] = stack.enter_context(booted_guest(
                conn, name=name, memory_mib=ram, flavor_name=flavor, extra_specs=specs,
                image_dir=REPO_ROOT / 'build' / 'guest', workdir=workdir))
            print(f'  {name}: flavor {flavor}, {ram} MiB, {specs}', flush=True)

        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / 'nova-balloon-agent'),
             '--config-file', str(config)], stdout=subprocess.DEVNULL)
        stack.callback(lambda: agent.poll() is None and agent.kill())
        print(f'Agent started (pid {agent.pid}); log: {log_path}\n', flush=True)

        names = list(FLAVORS)
        header = 't(s)  phase      ' + '  '.join(f'{n:>24}' for n in names)
        print(header + '\n' + ' ' * 17 + '  '.join(f'{"balloon/target/usable MiB":>24}'
                                                    for _ in names))
        lowest = {n: FLAVORS[n][1] for n in names}
        highest = {n: 0 for n in names}
        start = time.monotonic()
        phases = [(25, 'idle'), (25 + args.fill_mib / args.rate + args.hold, 'busy'),
                  (25 + args.fill_mib / args.rate + args.hold + 35, 'idle again')]
        filled = False
        while (elapsed := time.monotonic() - start) < phases[-1][0]:
            phase = next(label for end, label in phases if elapsed < end)
            if phase == 'busy' and not filled:
                start_memhog(guests[BUSY].console, mib=args.fill_mib, rate=args.rate,
                             hold=args.hold)
                filled = True
            rows = agent_rows(state_path)
            cells = []
            for name in names:
                actual = guests[name].dom.memoryStats().get('actual', 0) // MIB
                lowest[name] = min(lowest[name], actual)
                highest[name] = max(highest[name], actual)
                row = rows.get(name, {})
                cells.append(f'{actual:>8}/{row.get("target_mb") or "-":>6}/'
                             f'{row.get("usable_mb") or "-":>6} {row.get("state", "")[:1]}')
            print(f'{elapsed:4.0f}  {phase:<10} ' + '  '.join(f'{c:>24}' for c in cells),
                  flush=True)
            time.sleep(2)

        oom = {n: g.console.oom_killed() for n, g in guests.items()}
        reasons = {n: r.get('reason', '') for n, r in agent_rows(state_path).items()}
        agent.send_signal(signal.SIGTERM)
        exit_code = agent.wait(30)
        time.sleep(2)
        restored = {n: g.dom.memoryStats().get('actual', 0) // MIB for n, g in guests.items()}

    log = log_path.read_text()
    changes = sum(1 for line in log.splitlines() if ': grow to ' in line or ': shrink to ' in line)
    total = sum(ram for _, ram, _ in FLAVORS.values())
    print('\nSummary')
    print(f'{"guest":<12} {"flavor":<9} {"RAM":>5} {"lowest":>7} {"highest":>8} '
          f'{"after stop":>10}  OOM  last reason')
    for name, (flavor, ram, _) in FLAVORS.items():
        print(f'{name:<12} {flavor:<9} {ram:>5} {lowest[name]:>7} {highest[name]:>8} '
              f'{restored[name]:>10}  {"yes" if oom[name] else "no ":>3}  '
              f'{reasons.get(name, "")[:60]}')
    reclaimed = total - sum(lowest.values())
    print(f'\nFlavor RAM {total} MiB; at the idle low point the agent had handed back '
          f'{reclaimed} MiB ({100 * reclaimed / total:.0f}%).')
    print(f'Balloon target changes: {changes}; guest OOM kills: {sum(oom.values())}; '
          f'agent exit code on SIGTERM: {exit_code}; all guests restored on stop: '
          f'{all(restored[n] >= FLAVORS[n][1] - 2 for n in names)}.')
    return 0 if exit_code == 0 and not any(oom.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
