"""Unit tests of nova_balloon.capacity.advice: the arithmetic on numbers worked by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova_balloon.capacity.advice import advise, advise_pooled, minute_ratio, required_minutes
from nova_balloon.capacity.history import FlavorUse, History, Minute

T0 = 28_000_000  # a minute (Unix time // 60) in 2023
WINDOW_20_MIN = 20 * 60.0
NOW = (T0 + 20) * 60.0


def minute(offset: int, need: int, ram: int = 1000, usable: int = 8000) -> Minute:
    return Minute(T0 + offset, usable, (FlavorUse('m1.large', 2, need, ram),))


# 20 minutes: 17 at q = 1000 / 250 = 4.0, then q = 2.5, 2.0 and 1.25.
NEEDS = [250] * 17 + [400, 500, 800]
HISTORY = History(minute(i, need) for i, need in enumerate(NEEDS))


def test_worked_example():
    # risk 10 %: floor(0.1 x 20) = 2 minutes may be short; the 3rd smallest q is 2.5.
    found = advise(HISTORY, NOW, WINDOW_20_MIN, 0.10)
    assert found.ratio == 2.5 and found.minutes == 20
    assert 'at most floor(0.1 x 20) = 2 minutes may be short: the ratio is the 3rd ' \
           'smallest q' in found.arithmetic
    assert any('binding minute' in line and '1000 / 400 = 2.500' in line
               for line in found.arithmetic)
    assert found.arithmetic[-1].startswith('advised ram_allocation_ratio = 2.50')
    assert 'at it, 2 of 20 minutes would have been short' in found.arithmetic[-1]
    # risk 5 %: one minute may be short: the 2nd smallest q, 1000 / 500.
    assert advise(HISTORY, NOW, WINDOW_20_MIN, 0.05).ratio == 2.0


def test_rounds_down_to_hundredths():
    # q = 1000 / 300 = 3.333...: 3.33, never 3.34.
    found = advise(History(minute(i, 300) for i in range(20)), NOW, WINDOW_20_MIN, 0.1)
    assert found.ratio == 3.33
    # 1000 / 350 = 2.857...: 2.85.
    assert advise(History(minute(i, 350) for i in range(20)), NOW, WINDOW_20_MIN,
                  0.1).ratio == 2.85


def test_too_little_history_gives_no_number():
    # risk 4 %: 1 / risk = 25 minutes needed, 20 known.
    found = advise(HISTORY, NOW, WINDOW_20_MIN, 0.04)
    assert found.ratio is None
    assert found.reason.startswith('too little history: 20 minutes with Nova guests')
    assert '25 needed' in found.reason
    # A 7-day window needs half of it (5040 minutes), whatever the risk.
    week = advise(HISTORY, NOW, 7 * 86400.0, 0.1)
    assert week.ratio is None and '5040 needed' in week.reason
    assert required_minutes(7 * 86400.0, 0.001) == 5040
    assert required_minutes(3600.0, 0.001) == 1000


def test_only_the_window_counts():
    # 10 more minutes before the window, all short at any ratio: not counted.
    early = [Minute(T0 - 10 + i, 8000, (FlavorUse('m1.large', 2, 999, 1000),))
             for i in range(10)]
    found = advise(History([*early, *HISTORY.minutes]), NOW, WINDOW_20_MIN, 0.10)
    assert found.ratio == 2.5 and found.minutes == 20


def test_minutes_without_nova_guests_do_not_count():
    empty = [Minute(T0 + 20 + i, 8000, ()) for i in range(10)]
    found = advise(History([*HISTORY.minutes, *empty]), (T0 + 30) * 60.0, 30 * 60.0, 0.10)
    assert found.minutes == 20 and found.ratio == 2.5


def test_pooled_hosts_count_host_minutes():
    # Two hosts with the same 20 minutes: sorted q = 1.25, 1.25, 2.0, 2.0, 2.5, 2.5, 4.0 ...
    # At 10 %, 4 of the 40 host-minutes may be short: the 5th smallest, 2.5; at 5 %,
    # 2 may: the 3rd smallest, 2.0.
    found = advise_pooled([HISTORY.minutes, HISTORY.minutes], WINDOW_20_MIN, 0.10)
    assert found.minutes == 40 and found.ratio == 2.5
    assert advise_pooled([HISTORY.minutes, HISTORY.minutes], WINDOW_20_MIN, 0.05).ratio == 2.0
    # Half of the two hosts' windows (20 of 40 host-minutes): 8 and 4 are too little.
    short = advise_pooled([HISTORY.minutes[:8], HISTORY.minutes[:4]], WINDOW_20_MIN, 0.10)
    assert short.ratio is None and '12 minutes' in short.reason and '20 needed' in short.reason


@pytest.mark.parametrize('window, risk', [(0.0, 0.1), (-60.0, 0.1), (600.0, 0.0),
                                          (600.0, 1.0), (600.0, math.nan)])
def test_bad_window_or_risk(window, risk):
    with pytest.raises(ValueError):
        advise(HISTORY, NOW, window, risk)


@given(st.lists(st.tuples(st.integers(1, 10_000), st.integers(1, 10_000)), min_size=10,
                max_size=200),
       st.floats(0.005, 0.5))
def test_ratio_within_risk_and_tight(rows, risk):
    """At the advice, at most floor(risk x n) minutes are short; 0.01 more is too many."""
    minutes = [Minute(T0 + i, 1, (FlavorUse('f', 1, need, max(need, ram)),))
               for i, (need, ram) in enumerate(rows)]
    n = len(minutes)
    found = advise(History(minutes), (T0 + n) * 60.0, n * 60.0, risk)
    if n < math.ceil(1 / risk):
        assert found.ratio is None
        return
    assert found.ratio is not None
    allowed = math.floor(risk * n)
    # Short at ratio r: usable x r x need / RAM > usable, i.e. r x need > RAM.
    assert sum(1 for m in minutes if found.ratio * m.need_mb > m.ram_mb) <= allowed
    above = found.ratio + 0.01
    assert sum(1 for m in minutes if minute_ratio(m) < above) > allowed
