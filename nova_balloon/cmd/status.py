"""``nova-balloon status``: one row per guest, whether or not the agent runs.

The balloon and usable memory come from libvirt now; the target, state and
reason from the agent's last cycle when it runs, else from the same
classification the agent would apply.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from nova_balloon.agent import state
from nova_balloon.conf import CONF
from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import mib
from nova_balloon.virt.driver import DriverUnavailable

# The reason nova_balloon.virt.libvirt.domain_xml gives a guest without a balloon.
NO_BALLOON = 'no balloon device'
# Nova gives a guest memballoon model 'none' when this is <= 0: when no guest
# has a balloon, that setting is the likely cause, so status names it.
NO_BALLOON_ANYWHERE = (
    "note: no guest has a balloon device; Nova adds none while nova-compute's "
    '[libvirt] mem_stats_period_seconds <= 0: set it above 0 (default 10), restart '
    'nova-compute, then hard-reboot the guests')

COLUMNS = (('name', 'NAME'), ('uuid', 'UUID'), ('flavor', 'FLAVOR'),
           ('ceiling_mb', 'CEILING'), ('floor_mb', 'FLOOR'), ('balloon_mb', 'BALLOON'),
           ('target_mb', 'TARGET'), ('usable_mb', 'USABLE'), ('state', 'STATE'),
           ('reason', 'REASON'))


def _live_rows() -> list[dict[str, Any]]:
    """Rows from libvirt and the agent's classification, without the agent."""
    from nova_balloon.virt.libvirt.driver import LibvirtDriver

    collection = LibvirtDriver(CONF.libvirt.connection_uri, read_only=True).collect()
    settings = planner.Settings.from_conf(CONF.balloon)
    flavors = PolicyFile(CONF.balloon.flavor_policy_file).flavors()
    rows = []
    for sample in collection.samples:
        item = planner.classify(sample, flavors, settings)
        facts = sample.facts
        rows.append({
            'name': facts.name, 'uuid': facts.uuid,
            'flavor': facts.nova.flavor_name if facts.nova else None,
            'ceiling_mb': mib(facts.max_memory_kib), 'floor_mb': mib(item.floor_kib),
            'balloon_mb': mib(sample.stats.actual_kib), 'target_mb': None,
            'usable_mb': mib(sample.stats.usable_kib),
            'state': 'not managed' if item.ignore_reason else 'manageable',
            'reason': item.ignore_reason or 'agent not running',
        })
    return sorted(rows, key=lambda row: row['name'])


def _merge(live: list[dict[str, Any]], agent_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_uuid = {row['uuid']: row for row in agent_rows}
    merged = []
    for row in live:
        known = by_uuid.get(row['uuid'])
        if known is not None:
            row = {**row, **{k: known[k] for k in ('target_mb', 'state', 'reason')
                             if k in known}}
        merged.append(row)
    return merged


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any) -> str:
        return '-' if value is None else str(value)

    widths = [max([len(title)] + [len(cell(r[key])) for r in rows]) for key, title in COLUMNS]
    header = {key: title for key, title in COLUMNS}
    return '\n'.join(
        '  '.join(cell(row[key]).ljust(w)
                  for (key, _), w in zip(COLUMNS, widths, strict=True)).rstrip()
        for row in [header, *rows])


def run(args: argparse.Namespace) -> int:
    now = time.time()
    recorded = state.read(CONF.balloon.state_file)
    alive = state.agent_alive(recorded, now)
    agent: dict[str, Any] = {'running': alive, 'state_file': CONF.balloon.state_file}
    if alive and recorded:
        agent.update({k: recorded.get(k) for k in
                      ('pid', 'policy', 'dry_run', 'interval_s', 'outage', 'cycle_ms')})
        agent['last_cycle_s_ago'] = round(now - recorded['updated_at'], 1)
    try:
        rows = _live_rows()
        libvirt_error = None
    except DriverUnavailable as exc:
        rows, libvirt_error = [], str(exc)
    if alive and recorded:
        rows = _merge(rows, recorded.get('guests', []))
    if args.format == 'json':
        print(json.dumps({'agent': agent, 'libvirt_error': libvirt_error, 'guests': rows},
                         indent=2))
    else:
        if alive:
            print(f"agent: running (pid {agent['pid']}, policy {agent['policy']}, "
                  f"last cycle {agent['last_cycle_s_ago']} s ago"
                  f"{', DRY RUN' if agent['dry_run'] else ''}"
                  f"{', hypervisor outage: ' + agent['outage'] if agent['outage'] else ''})")
        else:
            print('agent: not running')
        if libvirt_error:
            print(f'libvirt: unreachable: {libvirt_error}')
        print(_table(rows))
        if rows and all((row['reason'] or '').startswith(NO_BALLOON) for row in rows):
            print(NO_BALLOON_ANYWHERE)
    return 1 if libvirt_error else 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser('status', help='Show every guest and its balloon.')
    parser.add_argument('--format', choices=('table', 'json'), default='table')
    parser.set_defaults(func=run)
