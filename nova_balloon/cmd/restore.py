"""``nova-balloon restore [--all | INSTANCE]``: give guests their memory back.

For maintenance and uninstall, with the agent stopped (it would reclaim the
memory again). Who is owed comes from live state, a balloon below its
ceiling, so guests shrunk by an earlier agent or that arrived shrunk by
migration are restored as well; paced by ``[balloon] restore_mb_per_second``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from nova_balloon.agent import lock, state
from nova_balloon.conf import CONF
from nova_balloon.controller import cycle
from nova_balloon.model import KIB_PER_MIB, GuestSample, mib
from nova_balloon.virt.driver import DriverUnavailable


def _matches(sample: GuestSample, wanted: str) -> bool:
    facts = sample.facts
    names = {facts.uuid, facts.name}
    if facts.nova is not None and facts.nova.instance_name:
        names.add(facts.nova.instance_name)
    return wanted in names


def _record_restored(restored: dict[str, int]) -> None:
    """Tell the next agent: these guests are no longer shrunk.

    Otherwise it would adopt the old, lower targets from the state file.
    """
    recorded = state.read(CONF.balloon.state_file)
    memory = recorded.get('memory') if recorded is not None else None
    if recorded is None or not isinstance(memory, dict):
        return
    for uuid, ceiling in restored.items():
        memory[uuid] = {'target_kib': ceiling, 'shrunk': False}
    try:
        state.write(CONF.balloon.state_file, recorded)
    except OSError as exc:
        print(f'warning: cannot update the state file {CONF.balloon.state_file}: {exc}')


def run(args: argparse.Namespace) -> int:
    if args.all == bool(args.instance):
        print('nova-balloon restore: give either --all or one INSTANCE')
        return 2
    # The agent's own lock, held while restoring: no agent starts meanwhile.
    try:
        held = lock.acquire(lock.lock_path(CONF))
    except lock.AlreadyRunning as exc:
        print(f'{exc}; it would reclaim the memory again: stop it first (systemctl stop '
              f'nova-balloon-agent), which restores the guests it shrank')
        return 1
    except OSError as exc:
        print(f'cannot take [balloon] lock_file: {exc}')
        return 1
    try:
        return _restore(args)
    finally:
        held.close()


def _restore(args: argparse.Namespace) -> int:
    from nova_balloon.virt.libvirt.driver import LibvirtDriver

    driver = LibvirtDriver(CONF.libvirt.connection_uri)
    try:
        samples = driver.collect().samples
    except DriverUnavailable as exc:
        print(f'libvirt: unreachable: {exc}')
        return 1
    if args.instance:
        samples = [s for s in samples if _matches(s, args.instance)]
        if not samples:
            print(f'no running guest is named {args.instance!r} (domain name, UUID or '
                  f'Nova instance name)')
            return 1
        if len(samples) > 1:
            print(f'{len(samples)} guests are named {args.instance!r}; give a UUID: '
                  + ', '.join(s.facts.uuid for s in samples))
            return 1
    # The targets the last agent set: a shrink it ordered just before it
    # stopped may still be under way.
    targets = {uuid: remembered.target_kib for uuid, remembered
               in state.adopted_memory(state.read(CONF.balloon.state_file)).items()}
    owed: list[GuestSample] = []
    for sample in samples:
        why_not = cycle.owes_memory(sample, CONF.balloon.manage_unmanaged_guests,
                                    targets.get(sample.facts.uuid))
        if why_not is None:
            owed.append(sample)
        elif args.instance:
            print(f'{sample.facts.name} ({sample.facts.uuid}): not restored: {why_not}')
            return 0 if why_not == 'at its full memory' else 1
    total_kib = sum(s.facts.max_memory_kib - (s.stats.actual_kib or 0) for s in owed)
    rate = CONF.balloon.restore_mb_per_second
    print(f'{len(owed)} guest(s) below their full memory, {mib(total_kib)} MiB in all; '
          f'restoring at {rate} MiB/s')
    started = time.monotonic()
    restored, left = cycle.restore_guests(driver, owed, cycle.Pacer(rate * KIB_PER_MIB),
                                          why='nova-balloon restore')
    for sample in owed:
        facts = sample.facts
        if facts.uuid in restored:
            print(f'{facts.name} ({facts.uuid}): {mib(sample.stats.actual_kib)} -> '
                  f'{mib(facts.max_memory_kib)} MiB')
        else:
            print(f'{facts.name} ({facts.uuid}): not restored: {left[facts.uuid]}')
    print(f'restored {len(restored)} guest(s) in {time.monotonic() - started:.1f} s')
    if restored:
        _record_restored(restored)
    return 1 if left else 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        'restore', help='Give guests below their full memory their memory back.')
    parser.add_argument('--all', action='store_true',
                        help='every running guest below its full memory')
    parser.add_argument('instance', nargs='?', metavar='INSTANCE',
                        help='a domain name, UUID or Nova instance name')
    parser.set_defaults(func=run)
