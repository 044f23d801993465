"""Unit tests of nova_balloon.capacity.history: the file's bound and its corruption."""

from __future__ import annotations

import logging

import pytest

from nova_balloon.capacity import history
from nova_balloon.capacity.history import FlavorUse, History, HistoryFile, Minute, fold

T0 = 28_000_000


def minute(offset: int, need: int = 1000, flavor: str = 'm1.large') -> Minute:
    return Minute(T0 + offset, 60000, (FlavorUse(flavor, 2, need, 8192),))


def test_a_line_round_trips_odd_flavor_names():
    odd = Minute(T0, 60000, (FlavorUse('big mem=1, x', 3, 5000, 24576),
                             FlavorUse('m1.small', 1, 512, 2048)))
    line = history.format_line(odd)
    assert line == f'{T0} 60000 big%20mem%3D1%2C%20x=3,5000,24576 m1.small=1,512,2048'
    assert history.parse_line(line) == odd
    assert odd.need_mb == 5512 and odd.ram_mb == 26624


def test_fold_sums_per_flavor():
    assert fold([('b', 100, 200), ('a', 50, 100), ('b', 300, 400)]) == (
        FlavorUse('a', 1, 50, 100), FlavorUse('b', 2, 400, 600))


def test_history_keeps_time_order():
    kept = History(minute(i) for i in range(5))
    assert not kept.add(minute(3))  # not after the last: dropped
    assert kept.add(minute(7))
    assert [m.minute - T0 for m in kept.between((T0 + 2) * 60, (T0 + 7) * 60)] == [2, 3, 4]


def test_file_is_bounded(tmp_path):
    path = str(tmp_path / 'history')
    kept = HistoryFile(path, days=10 / history.MINUTES_PER_DAY)  # 10 minutes
    assert kept.keep_minutes == 10
    for i in range(100):
        kept.append(minute(i))
        lines = (tmp_path / 'history').read_text().count('\n')
        assert lines <= 1 + 10 * (1 + history.SLACK) + 1
    reread = history.read(path)
    assert [m.minute - T0 for m in reread.between(0, float('inf'))] == list(range(90, 100))
    # A restarted agent goes on from the file.
    again = HistoryFile(path, days=10 / history.MINUTES_PER_DAY)
    again.append(minute(100))
    assert history.read(path).minutes[-1] == minute(100)


def test_appends_survive_a_restart(tmp_path):
    path = str(tmp_path / 'sub' / 'history')
    first = HistoryFile(path, days=1)
    for i in range(3):
        first.append(minute(i))
    second = HistoryFile(path, days=1)
    second.append(minute(2))  # the same minute again: ignored
    second.append(minute(3))
    assert [m.minute - T0 for m in history.read(path).minutes] == [0, 1, 2, 3]


@pytest.mark.parametrize('text, problem', [
    ('garbage\n', 'header missing'),
    (history.HEADER + '\n28000000 60000 m1=2,1000\n', 'not enough values'),
    (history.HEADER + '\n28000000 60000 m1=2,-1,8192\n', 'bad flavor entry'),
    (history.HEADER + '\n28000001 60000\n28000000 60000\n', 'not after'),
    (history.HEADER + '\n28000000 sixty\n', 'invalid literal'),
])
def test_a_corrupt_file_is_set_aside_with_a_warning(tmp_path, caplog, text, problem):
    path = tmp_path / 'history'
    path.write_text(text)
    with pytest.raises(history.HistoryFormatError, match=problem):
        history.read(str(path))
    with caplog.at_level(logging.WARNING):
        kept = HistoryFile(str(path), days=1)
    assert 'unusable' in caplog.text and 'starting over' in caplog.text
    assert (tmp_path / 'history.corrupt').read_text() == text
    assert not path.exists()
    kept.append(minute(0))
    assert history.read(str(path)).minutes == [minute(0)]


def test_a_last_line_cut_short_is_dropped_and_the_rest_kept(tmp_path, caplog):
    path = tmp_path / 'history'
    whole = history.HEADER + '\n' + history.format_line(minute(0)) + '\n'
    path.write_text(whole + history.format_line(minute(1))[:9])
    with pytest.raises(history.HistoryFormatError, match='cut short'):
        history.read(str(path))
    with caplog.at_level(logging.WARNING):
        kept = HistoryFile(str(path), days=1)
    assert 'last line was cut short' in caplog.text
    assert path.read_text() == whole
    kept.append(minute(1))
    assert history.read(str(path)).minutes == [minute(0), minute(1)]


def test_binary_garbage_is_set_aside(tmp_path, caplog):
    path = tmp_path / 'history'
    path.write_bytes(b'\xff\xfe\x00garbage')
    with caplog.at_level(logging.WARNING):
        kept = HistoryFile(str(path), days=1)
    assert 'unusable' in caplog.text
    kept.append(minute(0))
    assert history.read(str(path)).minutes == [minute(0)]
