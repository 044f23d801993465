"""A compact, bounded history of what a host's guests needed, minute by minute.

Per minute the agent keeps, for each flavor on the host: how many guests,
the sum of what they needed (``max(floor, demand + headroom)``, at most
their RAM) and the sum of their flavor RAM; and the memory the host has for
Nova's guests. That is all advice needs: how many guests of this mix a host
could hold before they need more than it has.

The records here are pure data; ``HistoryFile`` is the thin shell that keeps
them on disk: one text line per minute, appended, rewritten to the last
``[capacity] history_days`` when it has grown a tenth beyond them. A file
that cannot be read (corrupt, truncated, another format) is set aside with a
warning and the history starts over: it is advice, never worth stopping the
agent for.
"""

from __future__ import annotations

import dataclasses
import os
import urllib.parse
from collections.abc import Iterable, Sequence

from oslo_log import log as logging

LOG = logging.getLogger(__name__)

SECONDS_PER_MINUTE = 60
MINUTES_PER_DAY = 1440
HEADER = '# nova-balloon capacity history v1: minute usable_mb flavor=guests,need_mb,ram_mb ...'
# The file is rewritten to its bound once it holds this fraction more.
SLACK = 0.1


@dataclasses.dataclass(frozen=True, slots=True)
class FlavorUse:
    """One flavor's guests on the host during one minute, in MiB."""

    flavor: str
    guests: int
    need_mb: int
    ram_mb: int


@dataclasses.dataclass(frozen=True, slots=True)
class Minute:
    """The host's guests during one minute (Unix time // 60)."""

    minute: int
    # Host memory for Nova's guests: MemTotal - reserved_host_memory_mb -
    # what guests outside Nova hold.
    usable_mb: int
    flavors: tuple[FlavorUse, ...]

    @property
    def need_mb(self) -> int:
        return sum(f.need_mb for f in self.flavors)

    @property
    def ram_mb(self) -> int:
        return sum(f.ram_mb for f in self.flavors)

    @property
    def start_s(self) -> float:
        return float(self.minute * SECONDS_PER_MINUTE)


class History:
    """Minutes in time order."""

    def __init__(self, minutes: Iterable[Minute] = ()):
        self._minutes: list[Minute] = []
        for minute in minutes:
            self.add(minute)

    def __len__(self) -> int:
        return len(self._minutes)

    @property
    def minutes(self) -> Sequence[Minute]:
        return self._minutes

    def add(self, minute: Minute) -> bool:
        """Append a minute; one not after the last is dropped (False)."""
        if self._minutes and minute.minute <= self._minutes[-1].minute:
            return False
        self._minutes.append(minute)
        return True

    def between(self, start_s: float, end_s: float) -> list[Minute]:
        """The minutes that start in [start_s, end_s)."""
        return [m for m in self._minutes if start_s <= m.start_s < end_s]


def fold(flavors: Iterable[tuple[str, int, int]]) -> tuple[FlavorUse, ...]:
    """Per-guest (flavor, need_mb, ram_mb) summed per flavor, sorted by flavor."""
    sums: dict[str, list[int]] = {}
    for flavor, need, ram in flavors:
        row = sums.setdefault(flavor, [0, 0, 0])
        row[0] += 1
        row[1] += need
        row[2] += ram
    return tuple(FlavorUse(name, *sums[name]) for name in sorted(sums))


# -- the file -------------------------------------------------------------------

class HistoryFormatError(ValueError):
    """A line of a history file that is not one."""


def format_line(minute: Minute) -> str:
    cells = [str(minute.minute), str(minute.usable_mb)]
    cells += [f'{urllib.parse.quote(f.flavor, safe="")}={f.guests},{f.need_mb},{f.ram_mb}'
              for f in minute.flavors]
    return ' '.join(cells)


def parse_line(line: str) -> Minute:
    cells = line.split(' ')
    try:
        if len(cells) < 2:
            raise ValueError('too few fields')
        flavors = []
        for cell in cells[2:]:
            name, _, numbers = cell.partition('=')
            guests, need, ram = (int(n) for n in numbers.split(','))
            if not name or min(guests, need, ram) < 0:
                raise ValueError(f'bad flavor entry {cell!r}')
            flavors.append(FlavorUse(urllib.parse.unquote(name), guests, need, ram))
        minute, usable = int(cells[0]), int(cells[1])
        if minute < 0:
            raise ValueError('negative minute')
    except ValueError as exc:
        raise HistoryFormatError(f'{line[:80]!r}: {exc}') from None
    return Minute(minute, usable, tuple(flavors))


def parse(text: str) -> History:
    """A history file's text; raises HistoryFormatError on any line that is not a minute.

    The last line must end with a newline: one without was cut short by a crash.
    """
    lines = text.split('\n')
    if not lines or lines[0] != HEADER:
        raise HistoryFormatError('not a nova-balloon capacity history (header missing)')
    if lines[-1] != '':
        raise HistoryFormatError(f'last line cut short: {lines[-1][:80]!r}')
    history = History()
    last = -1
    for line in lines[1:-1]:
        minute = parse_line(line)
        if minute.minute <= last:
            raise HistoryFormatError(f'minute {minute.minute} not after {last}')
        last = minute.minute
        history.add(minute)
    return history


def read(path: str) -> History:
    """The history in ``path``; raises OSError or HistoryFormatError."""
    with open(path, encoding='utf-8') as f:
        return parse(f.read())


class HistoryFile:
    """The agent's history on disk: appended to every minute, bounded in size.

    Only the file holds the minutes: the agent keeps a count and the last
    minute, and reads the file back when it trims it.
    """

    def __init__(self, path: str, days: float):
        self.path = path
        self.keep_minutes = max(1, int(days * MINUTES_PER_DAY))
        kept = self._load()
        self._lines_on_disk = len(kept)
        self._last_minute = kept.minutes[-1].minute if len(kept) else None

    def _load(self) -> History:
        try:
            with open(self.path, encoding='utf-8') as f:
                text = f.read()
        except FileNotFoundError:
            return History()
        except UnicodeDecodeError as exc:
            return self._set_aside(exc)
        except OSError as exc:
            LOG.warning('Capacity history %s unreadable (%s): starting over', self.path, exc)
            return History()
        # A last line without its newline: the agent stopped while writing it.
        cut = not text.endswith('\n') and '\n' in text
        if cut:
            text = text[:text.rindex('\n') + 1]
        try:
            kept = parse(text)
        except HistoryFormatError as exc:
            return self._set_aside(exc)
        if cut:
            LOG.warning('Capacity history %s: its last line was cut short (the agent stopped '
                        'while writing it): dropped', self.path)
            try:
                self._write(kept.minutes[-self.keep_minutes:])
            except OSError as exc:
                LOG.warning('Cannot rewrite %s: %s', self.path, exc)
        return kept

    def _set_aside(self, problem: Exception) -> History:
        aside = self.path + '.corrupt'
        LOG.warning('Capacity history %s unusable (%s): set aside as %s, starting over',
                    self.path, problem, aside)
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            LOG.warning('Cannot set %s aside: %s', self.path, exc)
        return History()

    def append(self, minute: Minute) -> None:
        """Record one minute; raises OSError (the caller warns and goes on).

        A minute not after the last one recorded (the clock stepped back) is
        dropped.
        """
        if self._last_minute is not None and minute.minute <= self._last_minute:
            return
        if self._lines_on_disk >= self.keep_minutes * (1 + SLACK) or \
                not os.path.exists(self.path):
            self._rewrite(minute)
        else:
            with open(self.path, 'a', encoding='utf-8') as f:
                f.write(format_line(minute) + '\n')
            self._lines_on_disk += 1
        self._last_minute = minute.minute

    def _rewrite(self, minute: Minute) -> None:
        """The file's newest minutes and this one, keep_minutes in all."""
        try:
            kept = list(read(self.path).minutes)
        except FileNotFoundError:
            kept = []
        except (UnicodeDecodeError, HistoryFormatError) as exc:
            self._set_aside(exc)
            kept = []
        self._write([*kept, minute][-self.keep_minutes:])

    def _write(self, minutes: Sequence[Minute]) -> None:
        """Written aside and renamed over the file, so a crash leaves one or the other."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        temporary = self.path + '.new'
        with open(temporary, 'w', encoding='utf-8') as f:
            f.write(HEADER + '\n')
            f.writelines(format_line(m) + '\n' for m in minutes)
        os.replace(temporary, self.path)
        self._lines_on_disk = len(minutes)
