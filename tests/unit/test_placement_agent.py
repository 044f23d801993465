"""The Placement ratio mode reads the capacity history file while the agent appends to it."""

from __future__ import annotations

import logging

from nova_balloon.capacity.history import HEADER, FlavorUse, Minute, format_line
from nova_balloon.placement.agent import history_reader

MINUTES = [Minute(m, 15872, (FlavorUse('m1.large', 2, 1000, 1500),)) for m in range(100, 103)]


def test_a_line_being_written_is_left_for_the_next_look(tmp_path):
    path = tmp_path / 'capacity-history'
    whole = HEADER + '\n' + ''.join(format_line(m) + '\n' for m in MINUTES)
    path.write_text(whole + format_line(Minute(103, 15872, ()))[:5])
    assert list(history_reader(str(path))().minutes) == MINUTES
    path.write_text(whole)
    assert list(history_reader(str(path))().minutes) == MINUTES


def test_no_file_is_no_history(tmp_path):
    assert len(history_reader(str(tmp_path / 'none'))()) == 0


def test_a_file_that_is_no_history_is_warned_of(tmp_path, caplog):
    path = tmp_path / 'capacity-history'
    path.write_text('something else\n')
    with caplog.at_level(logging.WARNING, logger='nova_balloon.placement.agent'):
        assert len(history_reader(str(path))()) == 0
    assert f'capacity history {path} unusable' in caplog.text
