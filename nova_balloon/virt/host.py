"""The compute node's own memory, as /proc/meminfo reports it."""

from __future__ import annotations

import io
import os
import threading

_FIELDS = (b'MemTotal:', b'MemAvailable:')


def parse_meminfo(text: bytes, path: str) -> tuple[int, int]:
    """Return (MemTotal, MemAvailable) in KiB from the text of a meminfo file."""
    values = []
    for field in _FIELDS:
        start = text.find(field)
        end = text.find(b'\n', start)
        words = text[start + len(field):end if end >= 0 else None].split() if start >= 0 else []
        if not words or not words[0].isdigit():
            raise ValueError(f'{path}: no {field.decode()[:-1]} figure')
        values.append(int(words[0]))
    return values[0], values[1]


class MeminfoReader:
    """Reads MemTotal and MemAvailable once per cycle through a file kept open.

    /proc/meminfo is generated afresh on every read from offset 0, so one
    ``pread`` does what open, read and close did: on this project's 2-core
    test machine, after 50 ms idle (as between cycles), 75 us against 218 us,
    a part of the agent's cost that the bare libvirt calls do not have.
    """

    def __init__(self, path: str = '/proc/meminfo'):
        self.path = path
        # A file object rather than a bare descriptor: closed when garbage.
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()

    def read(self) -> tuple[int, int]:
        """Return (MemTotal, MemAvailable) in KiB; OSError if the file is unreadable."""
        with self._lock:
            if self._file is None:
                self._file = open(self.path, 'rb', buffering=0)  # noqa: SIM115
            text = os.pread(self._file.fileno(), 16384, 0)
        return parse_meminfo(text, self.path)
