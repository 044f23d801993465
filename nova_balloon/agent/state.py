"""The agent's state file: what it set and why, for `status` and for restarts.

Written atomically after every cycle. A restarted agent (even after SIGKILL)
adopts the targets recorded here, so no guest's memory jumps, and still knows
which guests it owes a restore.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from nova_balloon.controller import planner
from nova_balloon.model import Action, Decision, mib

STATES = {Action.GROW: 'growing', Action.SHRINK: 'shrinking', Action.HOLD: 'steady',
          Action.IGNORE: 'not managed'}


def guest_rows(plan: planner.Plan) -> list[dict[str, Any]]:
    """One status row per guest, in MiB, from a cycle's plan."""
    decisions: dict[str, Decision] = {d.uuid: d for d in plan.decisions}
    rows = []
    for uuid, item in plan.classified.items():
        facts = item.sample.facts
        decision = decisions[uuid]
        view = plan.views.get(uuid)
        remembered = plan.memory.get(uuid)
        target = remembered.target_kib if remembered else None
        rows.append({
            'name': facts.name,
            'uuid': uuid,
            'flavor': facts.nova.flavor_name if facts.nova else None,
            'ceiling_mb': mib(item.ceiling_kib),
            'floor_mb': mib(item.floor_kib),
            'balloon_mb': mib(item.sample.stats.actual_kib),
            'target_mb': mib(target),
            'usable_mb': mib(view.usable_kib if view else item.sample.stats.usable_kib),
            'state': ('restoring' if decision.action is Action.GROW and view is None
                      else STATES[decision.action]),
            'reason': decision.reason,
            'shrunk': remembered.shrunk if remembered else False,
        })
    return sorted(rows, key=lambda row: row['name'])


def write(path: str, state: dict[str, Any]) -> None:
    """Atomically, as compact JSON in the order written.

    The agent writes a row per guest after every cycle: indented JSON takes
    json's pure-Python encoder, four times slower, and sorting the keys costs
    as much again as the rest.
    """
    text = json.dumps(state, separators=(',', ':'))
    directory = os.path.dirname(path) or '.'
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.state-')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read(path: str) -> dict[str, Any] | None:
    """The last state written, or None when there is none or it is unreadable."""
    try:
        with open(path, encoding='utf-8') as f:
            state = json.load(f)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def memory_record(memory: dict[str, planner.GuestMemory]) -> dict[str, dict[str, Any]]:
    return {uuid: {'target_kib': m.target_kib, 'shrunk': m.shrunk}
            for uuid, m in memory.items()}


def adopted_memory(state: dict[str, Any] | None) -> dict[str, planner.GuestMemory]:
    """What a (re)started agent remembers of each guest from the last state."""
    memory: dict[str, planner.GuestMemory] = {}
    record = (state or {}).get('memory')
    for uuid, entry in (record if isinstance(record, dict) else {}).items():
        if not isinstance(entry, dict):
            continue
        target = entry.get('target_kib')
        memory[uuid] = planner.GuestMemory(
            target_kib=target if _positive_int(target) else None,
            actual_kib=None, shrunk=entry.get('shrunk') is True)
    return memory


def agent_alive(state: dict[str, Any] | None, now: float) -> bool:
    """Whether the state comes from a running agent that cycled recently."""
    if not state or not state.get('running'):
        return False
    pid = state.get('pid')
    if not _positive_int(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    interval = state.get('interval_s')
    updated = state.get('updated_at')
    if not _number(updated):
        return False
    return now - updated <= 3 * (interval if _number(interval) else 0) + 10


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
