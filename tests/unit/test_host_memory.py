"""The compute node's MemTotal and MemAvailable, read through a file kept open."""

from __future__ import annotations

from pathlib import Path

import pytest

from nova_balloon.virt.host import MeminfoReader, parse_meminfo


def test_reads_this_machine() -> None:
    total, available = MeminfoReader().read()
    assert 0 < available <= total


def test_each_read_sees_the_file_as_it_is_now(tmp_path: Path) -> None:
    meminfo = tmp_path / 'meminfo'
    meminfo.write_text('MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:     102400 kB\n')
    reader = MeminfoReader(str(meminfo))
    assert reader.read() == (24000000, 102400)
    with meminfo.open('r+') as f:  # In place, as the kernel's file changes.
        f.write('MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:      51200 kB\n')
    assert reader.read() == (24000000, 51200)


@pytest.mark.parametrize(('text', 'missing'), [
    (b'', 'MemTotal'),
    (b'MemTotal: 5 kB\n', 'MemAvailable'),
    (b'MemTotal: x kB\nMemAvailable: 3 kB\n', 'MemTotal'),
    (b'MemTotal: 5 kB\nMemAvailable:\n', 'MemAvailable'),
])
def test_a_missing_or_unreadable_figure_is_named(text: bytes, missing: str) -> None:
    with pytest.raises(ValueError, match=f'/proc/meminfo: no {missing} figure'):
        parse_meminfo(text, '/proc/meminfo')
