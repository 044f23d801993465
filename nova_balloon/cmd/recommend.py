"""``nova-balloon recommend``: a host's ``ram_allocation_ratio``, with the arithmetic.

Placement decides how many guests land on a host: it admits flavors while
their RAM adds up to at most (host RAM - ``reserved_host_memory_mb``) x
``ram_allocation_ratio``. The agent decides how their memory moves, and can
take each guest down to no less than its floor (flavor RAM / its
``balloon:overcommit_ratio``, or ``balloon:min_memory_mb``) and no less than
its demand plus the safety headroom. So a ratio is safe when a host filled to
placement's limit with the same mix of guests still fits in physical memory
once every guest is at what it needs:

    usable x ratio x (sum of needs / sum of RAM) <= usable
    ratio <= sum of RAM / sum of needs

With needs at the floors this is the most the flavor policies ever allow;
with needs from the observed demand it is what this host's guests allow now.
``recommend`` is a pure function of the figures so the arithmetic is tested
on numbers worked out by hand.

Beside that snapshot, the agent's capacity history (``[capacity]
history_file``) gives the ratio the last ``--window`` supports at ``--risk``:
see nova_balloon.capacity.advice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from nova_balloon.capacity import advice, history
from nova_balloon.conf import CONF
from nova_balloon.controller import planner
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import GuestSample, mib
from nova_balloon.virt.driver import DriverUnavailable

# Nova's default [DEFAULT] reserved_host_memory_mb.
NOVA_RESERVED_HOST_MEMORY_MB = 512


@dataclasses.dataclass(frozen=True, slots=True)
class GuestUse:
    """One guest's figures, in MiB."""

    name: str
    flavor: str | None
    ram_mb: int
    # None when the agent never shrinks the guest (the reason says why).
    floor_mb: int | None
    # The most the guest was seen unable to give up (balloon - MemAvailable);
    # None without fresh, valid statistics.
    demand_mb: int | None
    headroom_mb: int
    unmanaged_reason: str | None = None
    # Not created by Nova: placement does not count it.
    outside_nova: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class GuestLine:
    guest: GuestUse
    floor_mb: int
    need_mb: int
    note: str


@dataclasses.dataclass(frozen=True, slots=True)
class Recommendation:
    host_total_mb: int
    reserved_mb: int
    # Memory of guests outside Nova, which placement cannot see: reserved too.
    outside_mb: int
    usable_mb: int
    lines: list[GuestLine]
    ram_mb: int
    floor_mb: int
    need_mb: int
    floor_ratio: float | None
    demand_ratio: float | None
    ratio: float | None
    capacity_mb: int | None
    in_use_ratio: float | None
    warnings: list[str]

    @property
    def reserved_to_set_mb(self) -> int:
        return self.reserved_mb + self.outside_mb


def _need(guest: GuestUse, floor_mb: int) -> tuple[int, str]:
    """What the guest needs when the host is full, and why."""
    if guest.floor_mb is None:
        return guest.ram_mb, f'never shrunk: {guest.unmanaged_reason or "not managed"}'
    if guest.demand_mb is None:
        return guest.ram_mb, 'no fresh statistics: counted at full RAM'
    wanted = guest.demand_mb + guest.headroom_mb
    need = min(guest.ram_mb, max(floor_mb, wanted))
    if need == floor_mb and wanted < floor_mb:
        return need, 'at its floor'
    if need == guest.ram_mb:
        return need, 'demand + headroom reach its RAM'
    return need, 'demand + headroom'


def recommend(host_total_mb: int, reserved_mb: int,
              guests: Sequence[GuestUse]) -> Recommendation:
    """The ratio this host's guests allow; raises ValueError without usable memory."""
    lines = []
    for guest in guests:
        floor = guest.ram_mb if guest.floor_mb is None else min(guest.ram_mb, guest.floor_mb)
        need, note = _need(guest, floor)
        lines.append(GuestLine(guest, floor, need, note))
    outside = sum(line.need_mb for line in lines if line.guest.outside_nova)
    placed = [line for line in lines if not line.guest.outside_nova]
    usable = host_total_mb - reserved_mb - outside
    if usable <= 0:
        raise ValueError(f'no memory left for guests: {host_total_mb} MiB - {reserved_mb} '
                         f'MiB reserved - {outside} MiB of guests outside Nova')
    ram = sum(line.guest.ram_mb for line in placed)
    floors = sum(line.floor_mb for line in placed)
    needs = sum(line.need_mb for line in placed)
    warnings = []
    floor_ratio = demand_ratio = ratio = in_use = None
    capacity = None
    # needs >= floors > 0 unless every guest is under 1 MiB, which means no data.
    if ram and floors:
        floor_ratio = ram / floors
        demand_ratio = ram / needs
        # In hundredths, with integers: rounded down, never up by float error.
        centi = ram * 100 // needs
        ratio = centi / 100
        capacity = usable * centi // 100
        in_use = ram / usable
        if needs > usable:
            warnings.append(f'the guests need {needs} MiB now, more than the {usable} MiB '
                            f'usable: this host is short of memory already (a lower ratio '
                            f'stops new guests but moves none)')
        if not any(line.guest.floor_mb is not None for line in placed):
            warnings.append('no guest here is managed: the ratio stays 1.0 until flavors '
                            'set balloon:overcommit_ratio above 1.0')
    else:
        warnings.append('no Nova guest on this host: nothing to learn from, keep 1.0')
    unknown = [line.guest.name for line in placed
               if line.guest.floor_mb is not None and line.guest.demand_mb is None]
    if unknown:
        warnings.append(f'{len(unknown)} managed guests had no fresh statistics and count at '
                        f'full RAM ({", ".join(unknown)}): run again, or with --samples')
    if outside:
        warnings.append(f'guests outside Nova hold {outside} MiB that placement cannot '
                        f'see: set reserved_host_memory_mb to {reserved_mb + outside}')
    return Recommendation(host_total_mb=host_total_mb, reserved_mb=reserved_mb,
                          outside_mb=outside, usable_mb=usable, lines=lines, ram_mb=ram,
                          floor_mb=floors, need_mb=needs, floor_ratio=floor_ratio,
                          demand_ratio=demand_ratio, ratio=ratio, capacity_mb=capacity,
                          in_use_ratio=in_use, warnings=warnings)


# -- reading the host ---------------------------------------------------------

def _demand_kib(sample: GuestSample, settings: planner.Settings) -> int | None:
    """actual - usable, from statistics the agent itself would trust."""
    stats = sample.stats
    if not planner._valid_stats(stats) or not planner.stats_fresh(sample, settings):
        return None
    assert stats.actual_kib is not None and stats.usable_kib is not None
    return stats.actual_kib - stats.usable_kib


def observe(samples: int, interval_s: float) -> tuple[int, list[GuestUse]]:
    """Host MemTotal (MiB) and every guest, with its peak demand over the samples."""
    from nova_balloon.virt.libvirt.driver import LibvirtDriver

    driver = LibvirtDriver(CONF.libvirt.connection_uri, read_only=True)
    settings = planner.Settings.from_conf(CONF.balloon)
    flavors = PolicyFile(CONF.balloon.flavor_policy_file).flavors()
    peak: dict[str, int] = {}
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        collection = driver.collect()
        for sample in collection.samples:
            demand = _demand_kib(sample, settings)
            if demand is not None:
                uuid = sample.facts.uuid
                peak[uuid] = max(peak.get(uuid, 0), demand)
    guests = []
    for sample in collection.samples:
        item = planner.classify(sample, flavors, settings)
        facts = sample.facts
        managed = item.ignore_reason is None
        now = time.monotonic()
        headroom_kib = settings.limits.headroom_for(
            planner.make_view(item, None, now, settings, now)) if managed else 0
        demand = peak.get(facts.uuid)
        guests.append(GuestUse(
            name=facts.name, flavor=facts.nova.flavor_name if facts.nova else None,
            ram_mb=mib(facts.max_memory_kib) or 0,
            floor_mb=mib(item.floor_kib) if managed else None,
            demand_mb=mib(demand) if demand is not None else None,
            headroom_mb=mib(headroom_kib) or 0,
            unmanaged_reason=item.ignore_reason,
            outside_nova=facts.nova is None))
    return mib(collection.host_total_kib) or 0, sorted(guests, key=lambda g: g.name)


# -- output -------------------------------------------------------------------

def _cell(value: Any) -> str:
    return '-' if value is None else str(value)


def _table(rec: Recommendation) -> list[str]:
    head = ('NAME', 'FLAVOR', 'RAM', 'FLOOR', 'DEMAND', 'HEADROOM', 'NEED', 'NOTE')
    rows = [head] + [(line.guest.name + (' (outside Nova)' if line.guest.outside_nova else ''),
                      line.guest.flavor, line.guest.ram_mb, line.floor_mb, line.guest.demand_mb,
                      line.guest.headroom_mb if line.guest.floor_mb is not None else None,
                      line.need_mb, line.note) for line in rec.lines]
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return ['  ' + '  '.join(c.rjust(w) if 2 <= i <= 6 else c.ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in cells]


def render(rec: Recommendation) -> str:
    out = [
        'Host memory (MiB)',
        f'  MemTotal                           {rec.host_total_mb:>8}',
        f'  - reserved_host_memory_mb          {rec.reserved_mb:>8}',
    ]
    if rec.outside_mb:
        out.append(f'  - guests outside Nova              {rec.outside_mb:>8}')
    out += [f'  = usable for Nova guests (U)       {rec.usable_mb:>8}', '']
    placed = sum(1 for line in rec.lines if not line.guest.outside_nova)
    managed = sum(1 for line in rec.lines
                  if line.guest.floor_mb is not None and not line.guest.outside_nova)
    out.append(f'Guests ({placed} from Nova, {managed} managed by the agent; MiB; need = '
               f'demand + headroom within [floor, RAM])')
    out += _table(rec) if rec.lines else ['  (none)']
    out += ['', f'  sum of RAM = {rec.ram_mb}   sum of floors = {rec.floor_mb}   '
                f'sum of needs = {rec.need_mb}', '']
    if rec.ratio is None:
        out.append('No recommendation.')
    else:
        assert rec.floor_ratio is not None and rec.demand_ratio is not None
        assert rec.in_use_ratio is not None
        out += [
            'Placement admits flavors while sum of RAM <= U x ram_allocation_ratio. A host',
            'full of this mix of guests fits in U while',
            '  U x ratio x (sum of needs / sum of RAM) <= U,  so  ratio <= sum of RAM / sum '
            'of needs',
            '',
            f'  most the floors allow:   {rec.ram_mb} / {rec.floor_mb} = {rec.floor_ratio:.3f}',
            f'  what demand allows:      {rec.ram_mb} / {rec.need_mb} = {rec.demand_ratio:.3f}',
            f'  in use now:              {rec.ram_mb} / {rec.usable_mb} = '
            f'{rec.in_use_ratio:.3f}',
            '',
            f'Recommended ram_allocation_ratio = {rec.ratio:.2f} (rounded down)',
            f'  placement capacity: {rec.usable_mb} x {rec.ratio:.2f} = {rec.capacity_mb} MiB '
            f'of flavor RAM',
            f'  with reserved_host_memory_mb = {rec.reserved_to_set_mb}',
        ]
    out += [f'Warning: {w}' for w in rec.warnings]
    return '\n'.join(out)


# -- advice from the capacity history --------------------------------------------

WINDOW_UNITS_S = {'d': 86400, 'h': 3600, 'm': 60}


def parse_window(text: str, source: str = '--window') -> float:
    """'7d', '12h', '90m' to seconds; ValueError that names the problem and its source."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*([dhm])\s*', text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f'{source} must be a positive number followed by d, h or m '
                         f'(7d, 12h, 90m), not {text!r}')
    return float(match.group(1)) * WINDOW_UNITS_S[match.group(2)]


def parse_risk(text: str) -> float:
    """A percentage ('0.1' or '0.1%') to a fraction; ValueError that names the problem."""
    try:
        percent = float(text.strip().removesuffix('%'))
    except ValueError:
        percent = math.nan
    if not 0 < percent <= 50:
        raise ValueError(f'--risk is a percentage of minutes above 0 and at most 50 '
                         f'(0.1 for 0.1 %), not {text!r}')
    return percent / 100


def history_advice(path: str, now: float, window_s: float,
                   risk: float) -> advice.Advice:
    """The advice from the history file; no ratio, with the reason, when it cannot be read."""
    try:
        kept = history.read(path)
    except FileNotFoundError:
        return advice.Advice(None, f'no capacity history at {path} yet: the agent writes '
                                   f'one line a minute while [capacity] record_history is on',
                             0, window_s, risk, [])
    except (OSError, UnicodeDecodeError, history.HistoryFormatError) as exc:
        return advice.Advice(None, f'capacity history {path} unreadable: {exc}', 0, window_s,
                             risk, [])
    return advice.advise(kept, now, window_s, risk)


def render_advice(found: advice.Advice) -> str:
    out = ['From the capacity history'] + [f'  {line}' for line in found.arithmetic]
    if found.ratio is None:
        out.append(f'No ratio from history: {found.reason}.')
    else:
        out.append(f'History supports ram_allocation_ratio = {found.ratio:.2f}: '
                   f'{found.reason}.')
    return '\n'.join(out)


def as_dict(rec: Recommendation) -> dict[str, Any]:
    data = dataclasses.asdict(rec)
    data['lines'] = [{**dataclasses.asdict(line.guest), 'effective_floor_mb': line.floor_mb,
                      'need_mb': line.need_mb, 'note': line.note} for line in rec.lines]
    data['guests'] = data.pop('lines')
    data['reserved_host_memory_mb_to_set'] = rec.reserved_to_set_mb
    data['formula'] = 'ratio <= sum(ram_mb) / sum(need_mb), need = clamp(demand + ' \
                      'headroom, floor, ram); rounded down to 2 decimals'
    return data


def run(args: argparse.Namespace) -> int:
    reserved_mb = CONF.reserved_host_memory_mb if args.reserved_mb is None else \
        args.reserved_mb
    if args.samples < 1 or reserved_mb < 0 or args.interval < 0:
        print('recommend: --samples must be 1 or more, --interval and '
              '--reserved-host-memory-mb 0 or more')
        return 2
    try:
        window_s = parse_window(args.window) if args.window else \
            parse_window(CONF.capacity.advice_window, '[capacity] advice_window')
        risk = parse_risk(args.risk or str(CONF.capacity.advice_risk_percent))
    except ValueError as exc:
        print(f'recommend: {exc}')
        return 2
    try:
        total_mb, guests = observe(args.samples, args.interval)
        rec = recommend(total_mb, reserved_mb, guests)
    except DriverUnavailable as exc:
        print(f'libvirt: unreachable: {exc}')
        return 1
    except ValueError as exc:
        print(f'recommend: {exc}')
        return 1
    found = history_advice(args.history_file or CONF.capacity.history_file, time.time(),
                           window_s, risk)
    if args.format == 'json':
        print(json.dumps({**as_dict(rec), 'history': dataclasses.asdict(found)}, indent=2))
    else:
        print(render(rec) + '\n\n' + render_advice(found))
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        'recommend',
        help="Recommend this host's ram_allocation_ratio from its guests' flavor policies "
             'and observed demand.')
    # Not dest reserved_host_memory_mb: oslo.config's namespace would take it
    # for the [DEFAULT] option of that name and refuse it as a duplicate.
    parser.add_argument('--reserved-host-memory-mb', type=int, dest='reserved_mb',
                        help="This host's [DEFAULT] reserved_host_memory_mb in nova.conf "
                             "(default: the config files' value, else "
                             f'{NOVA_RESERVED_HOST_MEMORY_MB} as Nova).')
    parser.add_argument('--samples', type=int, default=1,
                        help='Collections to take; each guest counts with its highest '
                             'demand (default: %(default)s).')
    parser.add_argument('--interval', type=float, default=10.0,
                        help='Seconds between samples (default: %(default)s).')
    parser.add_argument('--window',
                        help='How far back the advice from history looks: a number with d, '
                             'h or m (default: [capacity] advice_window, 7d).')
    parser.add_argument('--risk',
                        help='Percent of those minutes in which a host full of this mix may '
                             'need more memory than it has (default: [capacity] '
                             'advice_risk_percent, 0.1).')
    parser.add_argument('--history-file',
                        help='The capacity history to read (default: [capacity] '
                             'history_file).')
    parser.add_argument('--format', choices=('table', 'json'), default='table')
    parser.set_defaults(func=run)
