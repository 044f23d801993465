"""The compute node's own memory, as /proc/meminfo reports it."""

from __future__ import annotations


def read_meminfo(path: str = '/proc/meminfo') -> tuple[int, int]:
    """Return (MemTotal, MemAvailable) in KiB."""
    fields: dict[str, int] = {}
    with open(path, encoding='ascii') as f:
        for line in f:
            key, _, rest = line.partition(':')
            if key in ('MemTotal', 'MemAvailable'):
                fields[key] = int(rest.split()[0])
                if len(fields) == 2:
                    break
    return fields['MemTotal'], fields['MemAvailable']
