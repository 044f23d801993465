"""The simulated compute node, on cases small enough to work out by hand.

Trace reading and demand, the hypervisor's model (actuation rate, inflation
stalls, shortfall counters, stale statistics, host figures), the metrics, and
the timing with which run.py drives the real controller.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import numpy as np
import pytest
from oslo_config import cfg

from nova_balloon.conf import adaptive_policy, balloon
from nova_balloon.model import GuestFacts, GuestView, HostSnapshot, NovaMetadata
from nova_balloon.policies import Policy
from nova_balloon.virt.driver import GuestActionFailed, GuestGone
from nova_balloon.virt.simulated import metrics, run, trace
from nova_balloon.virt.simulated.hypervisor import SimulatedHypervisor

MiB = 1024
GiB = 1024 * MiB

HEADER = 'vm,timestamp_s,mem_capacity_kb,mem_usage_kb,cpu_cores\n'


def write_trace(path, rows: Sequence[str], compress: bool = False) -> str:
    text = HEADER + ''.join(row + '\n' for row in rows)
    if compress:
        with gzip.open(path, 'wt') as f:
            f.write(text)
    else:
        path.write_text(text)
    return str(path)


# -- trace ---------------------------------------------------------------------------

def test_read_first_vms_in_order_of_appearance(tmp_path):
    path = write_trace(tmp_path / 't.csv.gz', [
        'b,100,2048000,1024000,1', 'a,100,1048576,0,1', 'b,400,2048000,512000,1',
        'c,100,1048576,0,1', 'a,400,1048576,262144,1'], compress=True)
    vms = trace.read(path, 2)
    assert [vm.vm for vm in vms] == ['b', 'a']
    # 2048000 KiB is 2000 MiB exactly; usage fractions 0.5 then 0.25.
    assert vms[0].ceiling_kib == 2000 * MiB
    assert vms[0].usage_fraction.tolist() == [0.5, 0.25]
    assert vms[1].timestamps_s.tolist() == [100, 400]


def test_ceiling_is_whole_mib_rounded_down(tmp_path):
    path = write_trace(tmp_path / 't.csv', ['a,0,1049599,0,1'])
    assert trace.read(path, 1)[0].ceiling_kib == 1024 * MiB


def test_sample_without_capacity_counts_as_no_use(tmp_path):
    path = write_trace(tmp_path / 't.csv', ['a,0,1048576,524288,1', 'a,300,0,0,1'])
    assert trace.read(path, 1)[0].usage_fraction.tolist() == [0.5, 0.0]


@pytest.mark.parametrize('rows, message', [
    (['a,0,1048576'], 'not a valid sample'),
    (['a,zero,1048576,0,1'], 'not a valid sample'),
    (['a,300,1048576,0,1', 'a,0,1048576,0,1'], 'not in time order'),
    (['a,0,1048576,0,1'], '1 VMs, 2 wanted'),
])
def test_bad_traces_are_refused(tmp_path, rows, message):
    path = write_trace(tmp_path / 't.csv', rows)
    with pytest.raises(trace.TraceError, match=message):
        trace.read(path, 2)


def test_missing_columns_are_refused(tmp_path):
    path = tmp_path / 't.csv'
    path.write_text('vm,timestamp_s\na,0\n')
    with pytest.raises(trace.TraceError, match='expected a header'):
        trace.read(str(path), 1)


def test_demand_is_a_step_function_of_trace_time(tmp_path):
    # M = 1000 MiB; fractions 0.1 at t=100, 0.5 at t=400, 2.0 (capped) at t=700.
    path = write_trace(tmp_path / 't.csv', [
        'a,100,1024000,102400,1', 'a,400,1024000,512000,1', 'a,700,1024000,2048000,1',
        'b,40,1024000,0,1'])
    vms = trace.read(path, 2)
    start = trace.start_of(vms)
    assert start == 40
    demand = trace.demand_kib(vms, start, 700, 1)[:, 0] / MiB
    # Before its first sample (t < 60) a VM has only the 5 % base.
    assert demand[59] == pytest.approx(50)
    # From trace time 100 (second 60): 5 % + 10 % of 1000 MiB.
    assert demand[60] == pytest.approx(150) and demand[359] == pytest.approx(150)
    assert demand[360] == pytest.approx(550)
    assert demand[660] == pytest.approx(1000)  # capped at flavor RAM


def test_compressed_trace_time(tmp_path):
    path = write_trace(tmp_path / 't.csv', ['a,0,1024000,0,1', 'a,300,1024000,512000,1'])
    demand = trace.demand_kib(trace.read(path, 1), 0, 60, 10)[:, 0] / MiB
    # k = 10: one 300 s sample lasts 30 s.
    assert demand[29] == pytest.approx(50) and demand[30] == pytest.approx(550)


def test_repeated_timestamp_uses_the_last_row(tmp_path):
    path = write_trace(tmp_path / 't.csv', ['a,0,1024000,0,1', 'a,0,1024000,512000,1'])
    demand = trace.demand_kib(trace.read(path, 1), 0, 1, 1)[:, 0] / MiB
    assert demand[0] == pytest.approx(550)


# -- hypervisor ----------------------------------------------------------------------

def facts(uuid: str, ceiling_mib: int, period: int | None = 10) -> GuestFacts:
    return GuestFacts(uuid=uuid, name=uuid, max_memory_kib=ceiling_mib * MiB,
                      nova=NovaMetadata('i', 'f', ceiling_mib, {}), unballoonable=None,
                      stats_period_s=period)


def node(demand_mib: Sequence[Sequence[float]], start_mib: Sequence[float],
         ceilings_mib: Sequence[int] | None = None, host_mib: int = 10240,
         period: int | None = 10) -> SimulatedHypervisor:
    """demand_mib[second][guest]."""
    demand = np.array(demand_mib, dtype=float) * MiB
    ceilings = ceilings_mib or [4096] * demand.shape[1]
    guests = [facts(f'g{i}', c, period) for i, c in enumerate(ceilings)]
    return SimulatedHypervisor(guests, demand, host_mib * MiB,
                               np.array(start_mib, dtype=float) * MiB)


def run_seconds(hv: SimulatedHypervisor, seconds: int) -> list[float]:
    sizes = []
    for _ in range(seconds):
        hv.step()
        sizes.append(hv.actual[0] / MiB)
    return sizes


def test_deflation_moves_at_most_256_mib_per_second():
    hv = node([[100]] * 5, [1024])
    hv.set_target('g0', 1600 * MiB)
    assert run_seconds(hv, 4) == [1280, 1536, 1600, 1600]


def test_inflation_moves_at_most_256_mib_per_second():
    hv = node([[100]] * 5, [2048])
    hv.set_target('g0', 1500 * MiB)
    assert run_seconds(hv, 4) == [1792, 1536, 1500, 1500]


def test_inflation_stalls_at_demand_and_resumes_when_it_falls():
    # Demand 1500 MiB in seconds 0 to 4, then 1200 MiB; target 1024 MiB.
    hv = node([[1500]] * 5 + [[1200]] * 2, [2048])
    hv.set_target('g0', 1024 * MiB)
    # 2048 - 256 = 1792; 1536; stalls at 1500; then 1244 (256 below), 1200 (demand).
    assert run_seconds(hv, 6) == [1792, 1536, 1500, 1500, 1244, 1200]


def test_demand_above_balloon_is_shortfall_that_swap_in_counts():
    # Balloon 1000 MiB, demand 1300 MiB from second 1: 300 MiB short each second.
    hv = node([[900], [1300], [1300], [1300]], [1000], period=1)
    assert run_seconds(hv, 3) == [1000, 1000, 1000]
    stats = hv.collect().samples[0].stats
    assert stats.swap_in_kib == 3 * 300 * MiB
    assert stats.major_faults == 3 * 300
    assert stats.usable_kib == 0


def test_statistics_refresh_only_every_period():
    # Period 10: refreshed at 0 and 10; demand changes at second 3.
    hv = node([[1000]] * 3 + [[1500]] * 9, [2048])
    first = hv.collect().samples[0]
    assert (first.stats.actual_kib, first.stats.usable_kib) == (2048 * MiB, 1048 * MiB)
    assert (first.stats.last_update, first.stats_age_s) == (0, 0.0)
    run_seconds(hv, 5)
    stale = hv.collect().samples[0]
    assert stale.stats == first.stats and stale.stats_age_s == 5.0
    run_seconds(hv, 5)
    fresh = hv.collect().samples[0]
    assert (fresh.stats.usable_kib, fresh.stats.last_update, fresh.stats_age_s) == \
        (548 * MiB, 10, 0.0)
    assert fresh.stats.unused_kib == fresh.stats.usable_kib
    assert fresh.stats.available_kib == fresh.stats.actual_kib == 2048 * MiB


def test_guest_without_period_reports_nothing_until_one_is_set():
    hv = node([[100]] * 12, [1024], period=None)
    assert hv.collect().samples[0].stats.actual_kib is None
    hv.set_stats_period('g0', 5)
    run_seconds(hv, 5)
    sample = hv.collect().samples[0]
    assert sample.facts.stats_period_s == 5
    assert (sample.stats.actual_kib, sample.stats.last_update) == (1024 * MiB, 5)


def test_host_figures():
    hv = node([[100, 100]] * 2, [1000, 3000], host_mib=5000)
    collection = hv.collect()
    assert (collection.host_total_kib, collection.host_available_kib) == \
        (5000 * MiB, 1000 * MiB)


def test_targets_outside_the_guest_and_unknown_guests_fail():
    hv = node([[100]], [1024], ceilings_mib=[2048])
    with pytest.raises(GuestActionFailed):
        hv.set_target('g0', 2049 * MiB)
    with pytest.raises(GuestGone):
        hv.set_target('nope', MiB)
    hv.set_target('g0', 2048 * MiB)
    assert hv.target_changes == 1


# -- host model v2: free page reporting and page cache ---------------------------------

def v2_node(demand_mib: Sequence[Sequence[float]], start_mib: Sequence[float],
            host_mib: int = 10240, fill_mib: float = 100) -> SimulatedHypervisor:
    demand = np.array(demand_mib, dtype=float) * MiB
    guests = [facts(f'g{i}', 4096, 1) for i in range(demand.shape[1])]
    return SimulatedHypervisor(guests, demand, host_mib * MiB,
                               np.array(start_mib, dtype=float) * MiB, host_model='v2',
                               cache_fill_kib_s=fill_mib * MiB)


def test_v2_cache_fills_within_the_balloon_and_is_dropped_first():
    # One guest, balloon 1000 MiB, demand 600 then 900 MiB; cache fills 100 MiB/s.
    hv = v2_node([[600], [600], [600], [600], [600], [900]], [1000])
    for _ in range(4):
        hv.step()
    # 4 s x 100 MiB, but never more than A - D = 400 MiB.
    assert hv.cache[0] == 400 * MiB
    assert hv.resident()[0] == 1000 * MiB
    hv.step()  # demand 900: the cache shrinks to the 100 MiB left
    assert hv.cache[0] == 100 * MiB and hv.resident()[0] == 1000 * MiB


def test_v2_host_sees_only_resident_memory_and_guests_report_it():
    # Demand 300 MiB, balloon 2000 MiB: after 2 s of 100 MiB/s cache, RSS 500 MiB.
    hv = v2_node([[300], [300], [300]], [2000], host_mib=3000)
    hv.step()
    hv.step()
    collection = hv.collect()
    assert collection.host_available_kib == (3000 - 500) * MiB
    [sample] = collection.samples
    assert sample.stats.rss_kib == 500 * MiB
    # MemAvailable counts the cache; MemFree does not.
    assert (sample.stats.usable_kib, sample.stats.unused_kib) == (1700 * MiB, 1500 * MiB)


def test_v2_balloon_inflation_drops_cache_not_use():
    hv = v2_node([[300]] * 5, [2000])
    hv.step()
    hv.step()  # cache 200 MiB
    hv.set_target('g0', 400 * MiB)
    hv.step()  # the balloon inflates by 256 MiB a second: 1744 MiB
    hv.step()  # 1488 MiB
    assert hv.actual[0] == 1488 * MiB
    assert hv.cache[0] == 400 * MiB  # filled meanwhile, still within A - D


def test_v1_is_the_default_and_counts_balloon_sizes():
    hv = node([[300], [300]], [2000], host_mib=3000)
    hv.step()
    assert hv.collect().host_available_kib == 1000 * MiB
    assert hv.collect().samples[0].stats.rss_kib is None


def test_unknown_host_model_is_refused():
    with pytest.raises(ValueError, match="host model 'v3'"):
        SimulatedHypervisor([facts('g0', 4096, 10)], np.zeros((1, 1)), MiB, np.array([MiB]),
                            host_model='v3')


def test_metrics_judge_overflow_on_resident_memory_when_given():
    # Balloons 1500 MiB over a 1200 MiB host, but the guests occupy only 900.
    actual = np.array([[750, 750]]) * MiB
    figures = metrics.measure(np.array([[300, 300]]) * MiB, actual,
                              np.array([1000, 1000]) * MiB, np.zeros(2), 1200 * MiB, 0,
                              resident_kib=np.array([900.0]) * MiB)
    assert figures.host_overflow == 0
    assert figures.reclaimed == pytest.approx(500 / 2000)
    assert figures.host_saved == pytest.approx(1100 / 2000)


# -- metrics -------------------------------------------------------------------------

def test_metrics_by_hand():
    # Two guests of 1000 MiB, floors 250 MiB, host 1200 MiB, 4 seconds.
    demand = np.array([[100, 300], [100, 700], [900, 700], [100, 100]]) * MiB
    actual = np.array([[500, 500], [500, 600], [600, 700], [500, 702]]) * MiB
    figures = metrics.measure(demand, actual, np.array([1000, 1000]) * MiB,
                              np.array([250, 250]) * MiB, 1200 * MiB, target_changes=4)
    # Used 1000, 1100, 1300, 1202: reclaimed mean of 0.5, 0.45, 0.35, 0.399.
    assert figures.reclaimed == pytest.approx((0.5 + 0.45 + 0.35 + 0.399) / 4)
    # Short 0, 100 (guest 1 at second 1), 300 (guest 0 at second 2), 0: of 2000 MiB.
    assert figures.shortfall == pytest.approx(400 / 4 / 2000)
    assert figures.pressure == pytest.approx(2 / 8)
    # Over H by 100 MiB at second 2, by 2 MiB at second 3: both above 1 MiB.
    assert figures.host_overflow == pytest.approx(2 / 4)
    assert figures.host_overflow_mib == pytest.approx(102 / 4)
    # 4 changes over 2 guests x 4/3600 h.
    assert figures.ops == pytest.approx(4 / (2 * 4 / 3600))
    # sum(max(D, F)) = 550, 950, 1600, 350: only second 2 is 400 over H.
    assert figures.unavoidable == pytest.approx(400 / 4 / 2000)


def test_overflow_of_one_mib_or_less_is_not_counted():
    actual = np.array([[1001]]) * MiB
    figures = metrics.measure(np.zeros((1, 1)), actual, np.array([2000.0]) * MiB,
                              np.zeros(1), 1000 * MiB, 0)
    assert figures.host_overflow == 0 and figures.host_overflow_mib == 1.0


def test_table_marks_the_best_of_each_metric():
    better = metrics.Metrics(0.5, 0.001, 0.01, 0.0, 0.0, 3.0, 0.0, 0.5)
    worse = metrics.Metrics(0.4, 0.002, 0.02, 0.1, 5.0, 1.0, 0.0, 0.4)
    text = metrics.table({'a': better, 'b': worse})
    rows = {line.split('|')[1].strip(): line for line in text.splitlines()[2:]}
    assert '50.00 *' in rows['reclaimed (% of flavor RAM)']
    assert '1.0 *' in rows['ops (target changes per guest-hour)']
    assert '*' not in rows['unavoidable (% of flavor RAM)']


# -- run -----------------------------------------------------------------------------

def test_simulation_conf_does_not_leak_into_other_configs():
    conf = run.simulation_conf({'buffer_percent': 3.0})
    other = cfg.ConfigOpts()
    balloon.register_opts(other)
    other([], default_config_files=[])
    adaptive_policy.register_opts(other)
    assert (conf.balloon.interval, conf.adaptive_policy.buffer_percent) == (10, 3.0)
    assert (conf.balloon.stats_period, conf.balloon.fast_stats_period) == (10, 10)
    assert (other.balloon.interval, other.adaptive_policy.buffer_percent) != (10, 3.0)


class Recorder(Policy):
    """Proposes nothing; records when it ran and what it saw."""

    seen: list[tuple[float, list[GuestView]]] = []

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        Recorder.seen.append((host.now, list(guests)))
        return {}


def test_controller_runs_at_5_15_25_on_statistics_5_s_old(tmp_path, monkeypatch):
    path = write_trace(tmp_path / 't.csv', ['a,0,4096000,0,1', 'b,0,4096000,0,1'])
    vms = trace.read(path, 2)
    sim = run.build_node(vms, run.SCENARIOS['rightsize'], 30 / 3600, run.simulation_conf())
    monkeypatch.setattr(run.policies, 'load', lambda name, conf: Recorder(conf))
    Recorder.seen = []
    result = run.run_policy(sim, 'recorder')
    assert [now for now, _ in Recorder.seen] == [5.0, 15.0, 25.0]
    views = Recorder.seen[0][1]
    # Ratio 4.0: floor 1000 MiB of 4000; the balloon is at the ceiling (rightsize).
    assert [(v.floor_kib, v.actual_kib) for v in views] == [(1000 * MiB, 4000 * MiB)] * 2
    # The recorder proposes nothing, but the host starts full (0 MiB free, below
    # its critical level): the planner takes the critical level's 512 MiB back,
    # half from each guest, in one step each, and nothing else moves.
    host_kib = 8000 * MiB
    assert result.host_used_kib[-1] == pytest.approx(host_kib - 512 * MiB, abs=2 * MiB)
    assert result.metrics.ops == 2 / (2 * 30 / 3600)
