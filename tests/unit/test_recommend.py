"""Unit tests of ``nova-balloon recommend``: the arithmetic on numbers worked by hand."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova_balloon.capacity import history
from nova_balloon.cmd import recommend as rec_cmd
from nova_balloon.cmd.recommend import GuestUse, recommend
from nova_balloon.model import (
    BalloonStats,
    GuestFacts,
    GuestSample,
    NovaMetadata,
    RunState,
)
from nova_balloon.virt.driver import Collection, DriverUnavailable

MiB = 1024

# A 16 GiB host, Nova's default reserve: U = 16384 - 512 = 15872 MiB.
GUESTS = [
    # ratio 2.0: floor 2048. demand 1000 + headroom 409 = 1409 < floor: need 2048.
    GuestUse('a', 'm1.medium', 4096, 2048, 1000, 409),
    # ratio 1.5: floor 2730. demand 3000 + headroom 409 = 3409: need 3409.
    GuestUse('b', 'm1.medium', 4096, 2730, 3000, 409),
    # ratio 1.0: never shrunk, floor = need = RAM 2048.
    GuestUse('c', 'm1.small', 2048, None, 1500, 0, 'not reclaimable'),
    # ratio 2.0 but no statistics yet: counted at full RAM 8192.
    GuestUse('d', 'm1.large', 8192, 4096, None, 819),
]


def test_worked_example():
    rec = recommend(16384, 512, GUESTS)
    assert rec.usable_mb == 15872
    assert [line.floor_mb for line in rec.lines] == [2048, 2730, 2048, 4096]
    assert [line.need_mb for line in rec.lines] == [2048, 3409, 2048, 8192]
    assert [line.note for line in rec.lines] == [
        'at its floor', 'demand + headroom', 'never shrunk: not reclaimable',
        'no fresh statistics: counted at full RAM']
    assert (rec.ram_mb, rec.floor_mb, rec.need_mb) == (18432, 10922, 15697)
    assert rec.floor_ratio == pytest.approx(18432 / 10922)  # 1.6876
    assert rec.demand_ratio == pytest.approx(18432 / 15697)  # 1.1742
    # 1843200 // 15697 = 117 (15697 x 118 = 1852246 is too much).
    assert rec.ratio == 1.17
    assert rec.capacity_mb == 15872 * 117 // 100 == 18570
    assert rec.in_use_ratio == pytest.approx(18432 / 15872)  # 1.161 < 1.17: no warning
    assert rec.warnings == ['1 managed guests had no fresh statistics and count at full '
                            'RAM (d): run again, or with --samples']


def test_need_reaches_ram():
    # demand 3900 + headroom 409 = 4309 > RAM 4096: needs all of it.
    rec = recommend(8192, 512, [GuestUse('a', 'f', 4096, 2048, 3900, 409)])
    assert rec.lines[0].need_mb == 4096
    assert rec.lines[0].note == 'demand + headroom reach its RAM'
    assert rec.ratio == 1.0


def test_ratio_from_floors_when_guests_are_idle():
    # Both idle guests sit at their floors: the demand bound is the floor bound.
    guests = [GuestUse('a', 'f', 4096, 2048, 100, 64), GuestUse('b', 'f', 2048, 1024, 0, 64)]
    rec = recommend(8192, 512, guests)
    assert rec.floor_ratio == rec.demand_ratio == 2.0
    assert rec.ratio == 2.0
    assert rec.capacity_mb == 7680 * 2 == 15360


def test_rounds_down_never_up():
    # 3000 / 1801 = 1.66574...: 1.66, although 1.67 is nearer.
    rec = recommend(8192, 0, [GuestUse('a', 'f', 3000, 1500, 1737, 64)])
    assert rec.lines[0].need_mb == 1801
    assert rec.ratio == 1.66


def test_host_already_short_of_memory():
    # U = 3584; two guests each need min(4096, 3500 + 409) = 3909: 7818 > 3584.
    guests = [GuestUse(n, 'f', 4096, 2048, 3500, 409) for n in ('a', 'b')]
    rec = recommend(4096, 512, guests)
    assert rec.need_mb == 7818
    assert rec.ratio == 1.04  # 819200 // 7818 = 104
    assert rec.in_use_ratio == pytest.approx(8192 / 3584)  # 2.29 placed, 1.04 allowed
    assert rec.warnings == ['the guests need 7818 MiB now, more than the 3584 MiB usable: '
                            'this host is short of memory already (a lower ratio stops new '
                            'guests but moves none)']


def test_no_managed_guest_means_1_0():
    rec = recommend(8192, 512, [GuestUse('a', 'f', 2048, None, 100, 0, 'ratio 1.0')])
    assert rec.ratio == 1.0
    assert any('no guest here is managed' in w for w in rec.warnings)


def test_no_guest_no_recommendation():
    rec = recommend(8192, 512, [])
    assert rec.ratio is None and rec.capacity_mb is None
    assert rec.warnings == ['no Nova guest on this host: nothing to learn from, keep 1.0']


def test_guests_outside_nova_count_as_reserved():
    # A 1024 MiB guest placement cannot see: U = 8192 - 512 - 1024 = 6656.
    guests = [GuestUse('x', None, 1024, None, None, 0, 'no Nova metadata', outside_nova=True),
              GuestUse('a', 'f', 4096, 2048, 500, 64)]
    rec = recommend(8192, 512, guests)
    assert (rec.outside_mb, rec.usable_mb, rec.reserved_to_set_mb) == (1024, 6656, 1536)
    assert (rec.ram_mb, rec.need_mb, rec.ratio) == (4096, 2048, 2.0)
    assert rec.capacity_mb == 13312
    assert 'set reserved_host_memory_mb to 1536' in rec.warnings[-1]


def test_guests_below_one_mib_give_no_ratio():
    rec = recommend(8192, 512, [GuestUse('tiny', 'f', 0, 0, 0, 0)])
    assert rec.ratio is None


def test_no_usable_memory():
    with pytest.raises(ValueError, match='no memory left for guests'):
        recommend(512, 512, [])


guest_st = st.builds(
    lambda ram, floor_div, demand, headroom, managed: GuestUse(
        'g', 'f', ram, max(1, ram // floor_div) if managed else None,
        None if demand is None else min(demand, ram), headroom),
    st.integers(1, 65536), st.integers(1, 64), st.none() | st.integers(0, 65536),
    st.integers(0, 4096), st.booleans())


@given(st.integers(1024, 1 << 21), st.lists(guest_st, min_size=1, max_size=20))
def test_recommended_ratio_fits_a_full_host(total, guests):
    rec = recommend(total, 512, guests)
    assert rec.ratio is not None and rec.capacity_mb is not None
    assert rec.floor_mb <= rec.need_mb <= rec.ram_mb
    assert 1.0 <= rec.ratio <= rec.demand_ratio <= rec.floor_ratio
    # Placement fills the host to capacity with this mix: the needs fit in U.
    assert rec.capacity_mb * rec.need_mb <= rec.usable_mb * rec.ram_mb


# -- reading the host and printing ---------------------------------------------

def _sample(uuid: str, ram_mb: int, specs: dict[str, str] | None, actual_mb: int,
            usable_mb: int | None, nova: bool = True) -> GuestSample:
    meta = NovaMetadata('instance-' + uuid, 'm1.test', ram_mb, specs) if nova else None
    facts = GuestFacts(uuid=uuid, name=f'guest-{uuid}', max_memory_kib=ram_mb * MiB, nova=meta,
                       unballoonable=None, stats_period_s=2)
    stats = BalloonStats(actual_kib=actual_mb * MiB,
                         usable_kib=None if usable_mb is None else usable_mb * MiB,
                         last_update=1000)
    return GuestSample(facts, stats, RunState.RUNNING, stats_age_s=1.0)


class FakeDriver:
    """Stands in for LibvirtDriver: a fixed collection per call."""

    collections: list[Collection] = []

    def __init__(self, uri: str | None, read_only: bool = False):
        assert read_only, 'recommend must only read'

    def collect(self) -> Collection:
        if not self.collections:
            raise DriverUnavailable('qemu:///system: down')
        return self.collections.pop(0)


@pytest.fixture
def fake_libvirt(monkeypatch):
    from nova_balloon.virt.libvirt import driver

    monkeypatch.setattr(driver, 'LibvirtDriver', FakeDriver)
    monkeypatch.setattr(rec_cmd.time, 'sleep', lambda s: None)
    FakeDriver.collections = []
    return FakeDriver


def test_observe_takes_peak_demand_and_the_agents_classification(fake_libvirt):
    first = [_sample('1', 4096, {'balloon:overcommit_ratio': '2'}, 4096, 3096),
             _sample('2', 2048, {}, 2048, 1024),
             _sample('3', 1024, None, 1024, 512, nova=False)]
    second = [_sample('1', 4096, {'balloon:overcommit_ratio': '2'}, 4096, 2596),
              _sample('2', 2048, {}, 2048, 1524),
              _sample('3', 1024, None, 1024, 512, nova=False)]
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, first),
                                Collection(16384 * MiB, 8000 * MiB, second)]
    total, guests = rec_cmd.observe(samples=2, interval_s=0)
    assert total == 16384
    g1, g2, g3 = guests
    # Peak demand of guest 1: max(4096 - 3096, 4096 - 2596) = 1500 MiB.
    assert (g1.floor_mb, g1.demand_mb, g1.headroom_mb) == (2048, 1500, 409)
    # Default ratio 1.0: the agent never shrinks it.
    assert g2.floor_mb is None and g2.unmanaged_reason.startswith('not reclaimable')
    assert g3.outside_nova and g3.floor_mb is None


def cli_args(**options) -> argparse.Namespace:
    """recommend's arguments, as argparse gives them with the defaults."""
    values = dict(samples=1, interval=0.0, reserved_mb=512, format='table',
                  window=None, risk=None, history_file='/nonexistent/capacity-history')
    return argparse.Namespace(**{**values, **options})


def test_run_prints_the_arithmetic(fake_libvirt, capsys):
    fake_libvirt.collections = [Collection(
        16384 * MiB, 8000 * MiB,
        [_sample('1', 4096, {'balloon:overcommit_ratio': '2'}, 4096, 3096)])]
    args = cli_args()
    assert rec_cmd.run(args) == 0
    out = capsys.readouterr().out
    # need = floor 2048 (demand 1000 + headroom 409 is below it); 4096 / 2048.
    assert 'what demand allows:      4096 / 2048 = 2.000' in out
    assert 'Recommended ram_allocation_ratio = 2.00 (rounded down)' in out
    assert 'placement capacity: 15872 x 2.00 = 31744 MiB' in out


def test_run_json(fake_libvirt, capsys):
    fake_libvirt.collections = [Collection(
        16384 * MiB, 8000 * MiB,
        [_sample('1', 4096, {'balloon:overcommit_ratio': '2'}, 4096, 3096)])]
    args = cli_args(format='json')
    assert rec_cmd.run(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['ratio'] == 2.0 and data['usable_mb'] == 15872
    assert data['guests'][0]['need_mb'] == 2048
    assert data['reserved_host_memory_mb_to_set'] == 512


def test_run_libvirt_down(fake_libvirt, capsys):
    args = cli_args()
    assert rec_cmd.run(args) == 1
    assert 'libvirt: unreachable' in capsys.readouterr().out


# -- advice from the capacity history ---------------------------------------------

ONE_COLLECTION = [_sample('1', 4096, {'balloon:overcommit_ratio': '2'}, 4096, 3096)]


def write_history(path, minutes: int, end_s: float) -> None:
    """A day of minutes: RAM 4096, need 1024 (q = 4.0) but 2048 (q = 2.0) every 100th."""
    first = int(end_s // 60) - minutes
    kept = history.HistoryFile(str(path), days=30)
    for i in range(minutes):
        need = 2048 if i % 100 == 0 else 1024
        kept.append(history.Minute(first + i, 15872,
                                   (history.FlavorUse('m1.medium', 1, need, 4096),)))


@pytest.mark.parametrize('text, seconds', [('7d', 604800), ('12h', 43200), ('90m', 5400),
                                           ('1.5d', 129600)])
def test_window(text, seconds):
    assert rec_cmd.parse_window(text) == seconds


@pytest.mark.parametrize('text', ['7', '0d', '-1d', 'd', '7w', 'seven days'])
def test_bad_window(text):
    with pytest.raises(ValueError, match='--window must be a positive number followed by d'):
        rec_cmd.parse_window(text)


@pytest.mark.parametrize('text, fraction', [('0.1', 0.001), ('0.1%', 0.001), ('5', 0.05)])
def test_risk(text, fraction):
    assert rec_cmd.parse_risk(text) == pytest.approx(fraction)


@pytest.mark.parametrize('text', ['0', '-1', '51', 'nan', 'a lot', ''])
def test_bad_risk(text):
    with pytest.raises(ValueError, match='--risk is a percentage of minutes above 0'):
        rec_cmd.parse_risk(text)


@pytest.mark.parametrize('option, value, message', [
    ('window', '7 weeks', "--window must be a positive number followed by d, h or m (7d, "
                          "12h, 90m), not '7 weeks'"),
    ('risk', '0', "--risk is a percentage of minutes above 0 and at most 50 (0.1 for 0.1 %), "
                  "not '0'"),
])
def test_run_rejects_bad_options_before_reading_libvirt(fake_libvirt, capsys, option, value,
                                                        message):
    assert rec_cmd.run(cli_args(**{option: value})) == 2
    assert capsys.readouterr().out.strip() == f'recommend: {message}'


def test_a_bad_window_in_the_config_is_named(fake_libvirt, capsys):
    from nova_balloon.conf import CONF

    CONF.set_override('advice_window', 'a week', group='capacity')
    try:
        assert rec_cmd.run(cli_args()) == 2
    finally:
        CONF.clear_override('advice_window', group='capacity')
    assert capsys.readouterr().out.strip() == (
        "recommend: [capacity] advice_window must be a positive number followed by d, h or "
        "m (7d, 12h, 90m), not 'a week'")


def test_run_prints_the_history_figure(fake_libvirt, capsys, tmp_path, monkeypatch):
    now = 28_333_333 * 60.0
    monkeypatch.setattr(rec_cmd.time, 'time', lambda: now)
    write_history(tmp_path / 'h', 1440, now)
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, ONE_COLLECTION)]
    assert rec_cmd.run(cli_args(window='1d', risk='1', history_file=str(tmp_path / 'h'))) == 0
    out = capsys.readouterr().out
    # The snapshot figure stays.
    assert 'Recommended ram_allocation_ratio = 2.00 (rounded down)' in out
    # 15 of the 1440 minutes have q = 2.0; at 1 %, floor(14.4) = 14 may be short: the
    # 15th smallest q is still 2.0. At 0.5 % too; at 2 %, the 29th smallest: 4.0.
    assert 'at most floor(0.01 x 1440) = 14 minutes may be short' in out
    assert 'History supports ram_allocation_ratio = 2.00' in out
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, ONE_COLLECTION)]
    assert rec_cmd.run(cli_args(window='1d', risk='2', history_file=str(tmp_path / 'h'),
                                format='json')) == 0
    data = json.loads(capsys.readouterr().out)
    assert data['ratio'] == 2.0
    assert data['history']['ratio'] == 4.0 and data['history']['minutes'] == 1440
    assert data['history']['risk'] == 0.02 and data['history']['window_s'] == 86400


def test_run_says_when_history_is_too_short(fake_libvirt, capsys, tmp_path, monkeypatch):
    now = 28_333_333 * 60.0
    monkeypatch.setattr(rec_cmd.time, 'time', lambda: now)
    write_history(tmp_path / 'h', 600, now)
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, ONE_COLLECTION)]
    assert rec_cmd.run(cli_args(window='1d', history_file=str(tmp_path / 'h'))) == 0
    out = capsys.readouterr().out
    assert 'No ratio from history: too little history: 600 minutes with Nova guests in the ' \
           'last 1 d, 1000 needed' in out
    assert 'History supports' not in out


def test_run_without_history(fake_libvirt, capsys):
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, ONE_COLLECTION)]
    assert rec_cmd.run(cli_args()) == 0
    assert 'No ratio from history: no capacity history at /nonexistent/capacity-history yet' \
        in capsys.readouterr().out


def test_run_with_a_corrupt_history(fake_libvirt, capsys, tmp_path):
    (tmp_path / 'h').write_text('not a history\n')
    fake_libvirt.collections = [Collection(16384 * MiB, 8000 * MiB, ONE_COLLECTION)]
    assert rec_cmd.run(cli_args(history_file=str(tmp_path / 'h'))) == 0
    assert 'unreadable: not a nova-balloon capacity history (header missing)' in \
        capsys.readouterr().out


def run_cli(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    """The real command in a child process, on libvirt's own test driver
    (test:///default: a real libvirt with one guest outside Nova, no daemon)."""
    conf = tmp_path / 'recommend.conf'
    conf.write_text('[libvirt]\nconnection_uri = test:///default\n'
                    f'[capacity]\nhistory_file = {tmp_path / "h"}\n')
    code = ('from nova_balloon.cmd import cli\n'
            f'cli.main(["--config-file", {str(conf)!r}, "recommend", *{list(argv)!r}])\n')
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)


def test_the_command_reads_the_history_and_its_options(tmp_path):
    write_history(tmp_path / 'h', 1440, time.time())
    out = run_cli(tmp_path, '--window', '1d', '--risk', '0.5', '--reserved-host-memory-mb',
                  '1024')
    assert out.returncode == 0, out.stderr
    assert '  - reserved_host_memory_mb              1024' in out.stdout
    # 14 or 15 minutes at q = 2.0 (the first may fall just outside the window); at
    # 0.5 %, 7 may be short: the 8th smallest q is 2.0.
    assert 'History supports ram_allocation_ratio = 2.00' in out.stdout
    bad = run_cli(tmp_path, '--risk', '0.1 percent')
    assert bad.returncode == 2
    assert "recommend: --risk is a percentage of minutes above 0" in bad.stdout
