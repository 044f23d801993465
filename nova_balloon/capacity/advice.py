"""The ``ram_allocation_ratio`` a host's history supports at a stated risk.

Placement fills a host with flavors until their RAM reaches usable x ratio.
In a minute whose guests needed ``need`` MiB for ``ram`` MiB of flavor RAM, a
host full of that mix at ratio r needs usable x r x need / ram: more than the
host has exactly when r > ram / need. Call ram / need that minute's ratio q.
At ratio r, the minutes in which a full host would have been short are those
with q < r; allowing at most ``risk`` of the window's minutes to be short,
the advice is the largest r with at most floor(risk x n) of the n minutes
below it: the (floor(risk x n) + 1)-th smallest q, rounded down to hundredths.

Too little history gives no number: fewer minutes than half the window, or
fewer than 1 / risk (with fewer, not one minute may be short and the stated
risk cannot be told from "never").

``advise`` is a pure function: the agent's history, the time, the window and
the risk in; the advice and its arithmetic out.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence

from nova_balloon.capacity.history import SECONDS_PER_MINUTE, History, Minute

# The history must cover at least this fraction of the window.
MIN_COVERAGE = 0.5


@dataclasses.dataclass(frozen=True)
class Advice:
    # None when the history cannot support a figure (reason says why).
    ratio: float | None
    reason: str
    # Minutes of history in the window that the advice counts.
    minutes: int
    window_s: float
    # Fraction (not percent) of minutes allowed to be short.
    risk: float
    arithmetic: list[str]


def minute_ratio(minute: Minute) -> float:
    """The ratio at which a host full of this minute's mix needs exactly its usable memory."""
    return minute.ram_mb / minute.need_mb


def required_minutes(window_s: float, risk: float) -> int:
    """How many minutes of history advice needs for this window and risk."""
    return max(math.ceil(MIN_COVERAGE * window_s / SECONDS_PER_MINUTE), math.ceil(1 / risk))


def _when(seconds: float) -> str:
    return time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(seconds))


def _span(seconds: float) -> str:
    days = seconds / 86400
    return f'{days:.3g} d' if days >= 1 else f'{seconds / 3600:.3g} h'


def advise(history: History, now: float, window_s: float, risk: float) -> Advice:
    """The ratio that the minutes in [now - window_s, now) support at ``risk``."""
    _check(window_s, risk)
    start = now - window_s
    in_window = history.between(start, now)
    lines = [f'window: {_span(window_s)} from {_when(start)} to {_when(now)}; '
             f'risk {100 * risk:g} % of its minutes']
    return _from_minutes(in_window, required_minutes(window_s, risk), window_s, risk, lines)


def advise_pooled(minutes_by_host: Sequence[Sequence[Minute]], window_s: float,
                  risk: float) -> Advice:
    """One ratio for several hosts (a cloud, an aggregate): each host-minute counts once.

    ``minutes_by_host`` holds each host's minutes of the same window;
    together they must cover half of the hosts' windows, and the risk is a
    share of host-minutes.
    """
    _check(window_s, risk)
    hosts = len(minutes_by_host)
    needed = max(math.ceil(MIN_COVERAGE * window_s / SECONDS_PER_MINUTE) * hosts,
                 math.ceil(1 / risk))
    lines = [f'window: {_span(window_s)} on {hosts} hosts; risk {100 * risk:g} % of '
             f'their host-minutes']
    pooled = [m for minutes in minutes_by_host for m in minutes]
    return _from_minutes(pooled, needed, window_s, risk, lines)


def _check(window_s: float, risk: float) -> None:
    if not window_s > 0:
        raise ValueError(f'window must be more than 0 s, not {window_s}')
    if not 0 < risk < 1:
        raise ValueError(f'risk must be a fraction between 0 and 1 (exclusive), not {risk}')


def _from_minutes(in_window: Sequence[Minute], needed: int, window_s: float, risk: float,
                  lines: list[str]) -> Advice:
    # Minutes without Nova guests say nothing about a mix of them.
    counted = [m for m in in_window if m.ram_mb > 0 and m.need_mb > 0]
    n = len(counted)
    lines.append(f'history: {len(in_window)} minutes in the window, {n} with Nova guests '
                 f'(needed: {needed}, the larger of half the window and 1 / risk)')
    if n < needed:
        reason = (f'too little history: {n} minutes with Nova guests in the last '
                  f'{_span(window_s)}, {needed} needed (half the window, and at least '
                  f'1 / risk = {math.ceil(1 / risk)} so that a risk of {100 * risk:g} % '
                  f'means something)')
        return Advice(None, reason, n, window_s, risk, lines)
    ranked = sorted(counted, key=minute_ratio)
    allowed = math.floor(risk * n)
    binding = ranked[allowed]
    q = minute_ratio(binding)
    # In hundredths, with integers: rounded down, never up by float error.
    ratio = binding.ram_mb * 100 // binding.need_mb / 100
    lines += [
        'per minute, q = sum of flavor RAM / sum of needs (need = max(floor, demand + '
        'headroom), at most RAM): a host full of that mix at ratio r is short iff r > q',
        f'at most floor({risk:g} x {n}) = {allowed} minutes may be short: the ratio is the '
        f'{allowed + 1}{_ordinal(allowed + 1)} smallest q',
        f'  worst minute: q = {minute_ratio(ranked[0]):.3f} ({_when(ranked[0].start_s)}); '
        f'median q = {minute_ratio(ranked[n // 2]):.3f}',
        f'  binding minute {_when(binding.start_s)}: {binding.ram_mb} / {binding.need_mb} '
        f'= {q:.3f}',
    ]
    lines += [f'    {f.flavor}: {f.guests} guests, need {f.need_mb} of {f.ram_mb} MiB'
              for f in binding.flavors]
    short = sum(1 for m in counted if minute_ratio(m) < ratio)
    lines.append(f'advised ram_allocation_ratio = {ratio:.2f} (rounded down); at it, '
                 f'{short} of {n} minutes would have been short')
    reason = (f'{n} minutes of the last {_span(window_s)}: a host full of this mix at '
              f'{ratio:.2f} would have needed more than it has in {short} of them '
              f'({100 * short / n:.3g} %, at most {100 * risk:g} %)')
    return Advice(ratio, reason, n, window_s, risk, lines)


def _ordinal(number: int) -> str:
    if number % 100 in (11, 12, 13):
        return 'th'
    return {1: 'st', 2: 'nd', 3: 'rd'}.get(number % 10, 'th')
