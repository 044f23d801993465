"""Cloud simulation: does the ratio that history advises fit more guests, safely?

A cloud of compute nodes is filled from the shared VM traces by a
Placement-like packer: guests arrive in a seeded random order and each goes
to the first host whose flavor RAM stays within (host RAM -
reserved_host_memory_mb) x ram_allocation_ratio. The cloud is ``--copies``
copies of the trace's VMs, so that even at high ratios there are several
hosts (two copies of a VM may share a host: their demand rises together,
which makes the host's need vary more, not less).

1. Train: the cloud packed at ratio 1.0 (today's cloud) runs the first week
   of the traces; a sample of its hosts runs the agent's real controller,
   adaptive policy and safety rules in the simulator, and each records the
   capacity history the agent records (nova_balloon.capacity.record). The
   advice is ``advise`` on those hosts' minutes pooled: the risk is a
   fraction of host-minutes.
2. Judge, on the weeks after the first (which the advice has not seen),
   ratio 1.0, the static ratios 2.0 and 3.0, the advised ratio (at the
   stated ``--risk``, and at 0.1 %) and the hindsight-best one: guests
   per host (every guest of the cloud packed);
   risk, the host-minutes in which a host's guests needed more than its
   usable memory (every host, from the traces' demand with the recorder's
   need formula); pressure and host_overflow from the real controller on a
   sample of full hosts. The hindsight-best ratio is the highest one, on a
   0.01 grid up to what the floors allow (the scan stops where the risk
   passes 100 times the stated one), whose risk on those weeks is within
   the stated risk.

    .venv/bin/python benchmarks/cloud_simulation.py [--jobs N] [--compression C] ...

Trace time runs ``--compression`` times faster than simulated time in the
controller runs: pressure (guest-seconds short) grows with it, since a
demand step the controller answers in a cycle or two is a larger share of a
compressed step. Writes results/cloud-simulation.md and
results/cloud-simulation.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import logging
import math
import multiprocessing
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from nova_balloon import flavor_policy, policies
from nova_balloon.capacity import advice, history, record
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import Controller
from nova_balloon.model import KIB_PER_MIB
from nova_balloon.virt.simulated import run, trace
from nova_balloon.virt.simulated.hypervisor import SimulatedHypervisor

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACE = REPO.parent / 'shared' / 'traces' / 'bitbrains-rnd-2013-07-vm1-120.csv.gz'
RESULTS = REPO / 'benchmarks' / 'results'
DAY_S = 86400
TRAIN_S = 7 * DAY_S
POLICY = 'adaptive'
# Uncounted controller time before each judged day.
WARMUP_S = 3600
SIZES_GIB = (128, 256, 512, 1024)
# No flavor is larger than this share of a host: 1 / 4.
LARGEST_FLAVOR_SHARE = 4
STATIC_RATIOS = (2.0, 3.0)
# Also advised and judged, beside the stated risk: the example risk.
OTHER_RISK = 0.001
# The stated risks of the table from the traces alone.
TABLE_RISKS = (0.001, 0.003, 0.01, 0.02)
GRID_STEP = 0.01
# The hindsight scan stops at a ratio whose risk is this many times the stated one.
GIVE_UP = 100
OVERCOMMIT = 8.0


def extra_specs(overcommit: float) -> dict[str, str]:
    """Every flavor's balloon keys: the ratio, and no absolute floor (as the
    control-quality benchmark, whose flavors have ratio 4.0)."""
    return {flavor_policy.OVERCOMMIT_RATIO: f'{overcommit:g}', flavor_policy.MIN_MEMORY_MB: '0'}


@dataclasses.dataclass(frozen=True)
class Cloud:
    """The guests (trace VM index per guest) and the host."""

    traces: list[trace.VmTrace]
    guest_vm: list[int]
    host_mb: int
    reserved_mb: int
    start_s: int
    end_s: int
    overcommit: float

    @property
    def usable_mb(self) -> int:
        return self.host_mb - self.reserved_mb


def ram_mb(vm: trace.VmTrace) -> int:
    return vm.ceiling_kib // KIB_PER_MIB


def build_cloud(traces: Sequence[trace.VmTrace], copies: int, host_mb: int, reserved_mb: int,
                seed: int, overcommit: float) -> tuple[Cloud, list[str]]:
    """Every VM with RAM of at most a quarter of a host, ``copies`` times, in a seeded
    arrival order (a cloud puts its largest flavors on hosts of their own)."""
    kept, dropped = [], []
    for vm in traces:
        if 0 < ram_mb(vm) <= (host_mb - reserved_mb) // LARGEST_FLAVOR_SHARE:
            kept.append(vm)
        else:
            dropped.append(f'{vm.vm} ({ram_mb(vm)} MiB)')
    order = [i for i in range(len(kept)) for _ in range(copies)]
    random.Random(seed).shuffle(order)
    start = trace.start_of(kept)
    end = max(int(vm.timestamps_s[-1]) for vm in kept)
    return Cloud(kept, order, host_mb, reserved_mb, start, end, overcommit), dropped


def pack(cloud: Cloud, ratio: float) -> list[list[int]]:
    """First fit in arrival order: the guests (indices into guest_vm) of each host."""
    capacity = cloud.usable_mb * ratio
    hosts: list[list[int]] = []
    used: list[int] = []
    for guest, vm in enumerate(cloud.guest_vm):
        size = ram_mb(cloud.traces[vm])
        h = next((h for h in range(len(hosts)) if used[h] + size <= capacity), len(hosts))
        if h == len(hosts):
            hosts.append([])
            used.append(0)
        hosts[h].append(guest)
        used[h] += size
    return hosts


# -- the needs, from the traces ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Needs:
    """Each VM's need (MiB) every minute of a span, as the agent's recorder counts it."""

    start_s: int
    need_mb: np.ndarray  # (minutes, vms)


def needs(cloud: Cloud, start_s: int, end_s: int, headroom: bool = True) -> Needs:
    """``headroom=False`` counts demand alone (within floor and RAM), to show what
    the agent's safety headroom costs."""
    conf = run.simulation_conf()
    limits = planner.Settings.from_conf(conf.balloon).limits
    minutes = (end_s - start_s) // history.SECONDS_PER_MINUTE
    demand = trace.demand_kib(cloud.traces, start_s, minutes, history.SECONDS_PER_MINUTE)
    ram = np.array([vm.ceiling_kib for vm in cloud.traces], dtype=float)
    floor = np.array([flavor_policy.resolve(extra_specs(cloud.overcommit), None,
                                            planner.Settings.from_conf(conf.balloon).defaults,
                                            vm.ceiling_kib).floor_kib(vm.ceiling_kib)
                      for vm in cloud.traces], dtype=float)
    kept = np.maximum(limits.headroom_kib, (ram * limits.headroom_percent / 100).astype(int))
    # record.guest_need_kib, for every VM and minute at once.
    need = np.minimum(ram, np.maximum(floor, np.floor(demand) + (kept if headroom else 0)))
    return Needs(start_s, np.floor(need / KIB_PER_MIB))


def host_needs(cloud: Cloud, hosts: list[list[int]], span: Needs) -> np.ndarray:
    """(hosts, minutes): the sum of each host's guests' needs."""
    members = np.zeros((len(hosts), len(cloud.traces)))
    for h, guests in enumerate(hosts):
        for g in guests:
            members[h, cloud.guest_vm[g]] += 1
    return members @ span.need_mb.T


def risk_of(cloud: Cloud, ratio: float, span: Needs) -> float:
    """The fraction of host-minutes whose guests needed more than the host's usable memory."""
    per_host = host_needs(cloud, pack(cloud, ratio), span)
    return float(np.count_nonzero(per_host > cloud.usable_mb)) / per_host.size


def hindsight_best(cloud: Cloud, span: Needs, risk: float) -> float:
    """The highest ratio on the grid (up to the floors' limit) within ``risk`` on ``span``."""
    best = 1.0
    steps = int(round((cloud.overcommit - 1.0) / GRID_STEP))
    for i in range(steps + 1):
        ratio = round(1.0 + i * GRID_STEP, 2)
        at = risk_of(cloud, ratio, span)
        if at <= risk:
            best = ratio
        elif at > GIVE_UP * risk:
            break
    return best


# -- one host under the real controller ---------------------------------------------

@dataclasses.dataclass(frozen=True)
class HostRun:
    guests: int
    guest_seconds: int
    short_guest_seconds: int
    seconds: int
    overflow_seconds: int
    reclaimed_mb_s: float
    ram_mb: int
    minutes: list[history.Minute]


def simulate_host(cloud: Cloud, guests: list[int], start_s: int, end_s: int,
                  compression: float, warmup_s: int = 0) -> HostRun:
    """The agent's controller and adaptive policy on one host from start_s to end_s.

    The run starts ``warmup_s`` (trace time) earlier, uncounted: the
    simulator starts every guest at the same share of its RAM, which a
    controller that has run all along would not have left it at. Pressure
    and host_overflow are counted as nova_balloon.virt.simulated.metrics
    counts them, second by second, without keeping the per-second record.
    """
    start_s -= warmup_s
    logging.getLogger('nova_balloon').setLevel(logging.ERROR)
    conf = run.simulation_conf()
    settings = planner.Settings.from_conf(conf.balloon)
    vms = [cloud.traces[cloud.guest_vm[g]] for g in guests]
    facts = []
    for g, vm in zip(guests, vms, strict=True):
        made = run.guest_facts(g, vm)
        assert made.nova is not None
        facts.append(dataclasses.replace(
            made, uuid=f'guest-{g}', name=f'{vm.vm}#{g}',
            nova=dataclasses.replace(made.nova, extra_specs=extra_specs(cloud.overcommit))))
    steps = int((end_s - start_s) / compression)
    demand = trace.demand_kib(vms, start_s, steps, compression)
    ceiling = np.array([f.max_memory_kib for f in facts], dtype=float)
    host_kib = cloud.host_mb * KIB_PER_MIB
    initial = ceiling * min(1.0, host_kib / ceiling.sum())
    hypervisor = SimulatedHypervisor(facts, demand, host_kib, initial)
    controller = Controller(hypervisor, policies.load(POLICY, conf), settings,
                            flavor_policy.PolicyFile(None), dry_run=False,
                            clock=hypervisor.now)
    recorder = record.MinuteRecorder()
    minutes = []
    short = overflow = 0
    reclaimed = 0.0
    flavor_kib = float(ceiling.sum())
    controller_second = settings.interval_s // 2
    counted_from = int(warmup_s / compression)
    for second in range(steps):
        if second:
            hypervisor.step()
        if second < counted_from:
            if second % settings.interval_s == controller_second:
                controller.run_cycle()
            continue
        if second % settings.interval_s == controller_second:
            report = controller.run_cycle()
            if report.plan is not None:
                minute = record.minute_of_plan(report.plan, start_s + second * compression,
                                               cloud.reserved_mb, settings.limits)
                done = recorder.add(minute) if minute is not None else None
                if done is not None:
                    minutes.append(done)
        actual = hypervisor.actual
        short += int(np.count_nonzero(hypervisor.demand > actual))
        used = float(actual.sum())
        overflow += used - host_kib > KIB_PER_MIB
        reclaimed += flavor_kib - used
    steps -= counted_from
    return HostRun(len(guests), steps * len(guests), short, steps, overflow,
                   reclaimed / KIB_PER_MIB, int(flavor_kib) // KIB_PER_MIB, minutes)


def sample_full_hosts(hosts: list[list[int]], count: int, seed: int) -> list[list[int]]:
    """Up to ``count`` hosts, at random, leaving out the last (partly filled) one."""
    full = hosts[:-1] if len(hosts) > 1 else hosts
    return random.Random(seed).sample(full, min(count, len(full)))


# -- the run ----------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    label: str
    ratio: float
    hosts: int
    guests_per_host: float
    risk: float
    simulated: int = 0
    pressure: float = math.nan
    host_overflow: float = math.nan
    reclaimed: float = math.nan
    recorded_risk: float = math.nan


@functools.cache
def _traces(path: str) -> list[trace.VmTrace]:
    return trace.read(path, vm_count(path))


def vm_count(path: str) -> int:
    """How many VMs the trace holds (a first pass over its VM column)."""
    seen = set()
    with trace._open_text(path) as stream:
        header = stream.readline().strip().split(',')
        column = header.index('vm')
        for line in stream:
            seen.add(line.split(',', column + 1)[column])
    return len(seen)


def _job(args: argparse.Namespace, guests: list[int], start_s: int, end_s: int,
         compression: float, warmup_s: int = 0) -> HostRun:
    cloud, _ = build_cloud(_traces(args.trace), args.copies, args.host_gib * 1024,
                           args.reserved_mb, args.seed, args.overcommit)
    started = time.monotonic()
    done = simulate_host(cloud, guests, start_s, end_s, compression, warmup_s)
    print(f'  {len(guests)} guests from {time.strftime("%m-%d", time.gmtime(start_s))}, '
          f'{(end_s - start_s) / DAY_S:g} days x{compression:g}: '
          f'{time.monotonic() - started:.0f} s', file=sys.stderr, flush=True)
    return done


def judged_days(cloud: Cloud, count: int, seed: int) -> list[int]:
    """Start times of ``count`` whole days after the training week, at random."""
    days = int((cloud.end_s - cloud.start_s) // DAY_S)
    chosen = random.Random(seed).sample(range(TRAIN_S // DAY_S, days), count)
    return [cloud.start_s + day * DAY_S for day in sorted(chosen)]


def minutes_of(cloud: Cloud, guests: list[int], span: Needs) -> list[history.Minute]:
    """A host's minutes as the recorder would write them, from the traces' demand."""
    per_host = host_needs(cloud, [guests], span)[0]
    ram = sum(ram_mb(cloud.traces[cloud.guest_vm[g]]) for g in guests)
    first = span.start_s // history.SECONDS_PER_MINUTE
    return [history.Minute(first + i, cloud.usable_mb,
                           (history.FlavorUse('all', len(guests), int(need), ram),))
            for i, need in enumerate(per_host.tolist())]


def judged_row(label: str, ratio: float, cloud: Cloud, span: Needs,
               runs: Sequence[HostRun]) -> Row:
    hosts = pack(cloud, ratio)
    row = Row(label, ratio, len(hosts), len(cloud.guest_vm) / len(hosts),
              risk_of(cloud, ratio, span), simulated=len(runs))
    if runs:
        row.pressure = sum(r.short_guest_seconds for r in runs) / \
            sum(r.guest_seconds for r in runs)
        row.host_overflow = sum(r.overflow_seconds for r in runs) / sum(r.seconds for r in runs)
        row.reclaimed = sum(r.reclaimed_mb_s / r.seconds for r in runs) / \
            sum(r.ram_mb for r in runs)
        minutes = [m for r in runs for m in r.minutes]
        row.recorded_risk = sum(1 for m in minutes if m.need_mb > m.usable_mb) / \
            max(1, len(minutes))
    return row


def _pct(value: float, decimals: int = 3) -> str:
    return '-' if math.isnan(value) else f'{100 * value:.{decimals}f}'


def table(rows: Sequence[Row]) -> list[str]:
    head = ['ratio', 'value', 'hosts', 'guests per host', 'x ratio 1.0',
            'risk (% host-minutes short, all hosts)', 'hosts simulated',
            'pressure (% guest-time)', 'host_overflow (% time)', 'reclaimed (% flavor RAM)',
            'risk recorded by the simulated agents (%)']
    base = rows[0].guests_per_host
    out = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [r.label, f'{r.ratio:.2f}', str(r.hosts), f'{r.guests_per_host:.2f}',
                 f'{r.guests_per_host / base:.2f}', _pct(r.risk), str(r.simulated),
                 _pct(r.pressure), _pct(r.host_overflow), _pct(r.reclaimed, 1),
                 _pct(r.recorded_risk)]
        out.append('| ' + ' | '.join(cells) + ' |')
    return out


def draw(rows: Sequence[Row], path: Path, risk: float) -> None:
    figure = Figure(figsize=(9, 4), dpi=90)
    left, right = figure.subplots(1, 2)
    for row in rows:
        for ax, x in ((left, row.pressure), (right, row.risk)):
            if math.isnan(x):
                continue
            ax.scatter([100 * x], [row.guests_per_host], s=25)
            ax.annotate(f'{row.label} ({row.ratio:.2f})', (100 * x, row.guests_per_host),
                        fontsize=7, xytext=(4, 2), textcoords='offset points')
    left.axvline(0.1, color='red', lw=0.8, ls='--', label='goal: 0.1 % of guest-time')
    right.axvline(100 * risk, color='red', lw=0.8, ls='--', label='stated risk')
    left.set_xlabel('pressure (% of guest-time short), simulated hosts', fontsize=8)
    right.set_xlabel('risk (% of host-minutes short), every host', fontsize=8)
    for ax in (left, right):
        ax.set_ylabel('guests per host', fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc='lower right')
    figure.suptitle('Cloud simulation, weeks after the training week', fontsize=10)
    figure.tight_layout()
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--trace', default=str(SHARED_TRACE))
    parser.add_argument('--overcommit', type=float, default=OVERCOMMIT,
                        help="every flavor's balloon:overcommit_ratio (default %(default)s)")
    parser.add_argument('--copies', type=int, default=8,
                        help='copies of every trace VM in the cloud (default %(default)s)')
    parser.add_argument('--host-gib', type=int, default=512,
                        help='RAM of every compute node, GiB (default %(default)s)')
    parser.add_argument('--reserved-mb', type=int, default=512,
                        help='reserved_host_memory_mb (default %(default)s, as Nova)')
    parser.add_argument('--risk', type=float, default=1.0,
                        help='stated risk, percent of host-minutes (default %(default)s)')
    parser.add_argument('--train-compression', type=float, default=5.0,
                        help='trace seconds per simulated second in the training week\'s '
                             'controller runs (default %(default)s)')
    parser.add_argument('--train-hosts', type=int, default=6,
                        help='hosts of the ratio-1.0 cloud whose agents record the training '
                             'week (default %(default)s)')
    parser.add_argument('--judge-hosts', type=int, default=2,
                        help='full hosts per ratio run by the controller on the judged days '
                             '(default %(default)s)')
    parser.add_argument('--judge-days', type=int, default=2,
                        help='days of the later weeks (at random) on which those hosts run, '
                             'in real time (default %(default)s)')
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--out', default=str(RESULTS / 'cloud-simulation.md'))
    args = parser.parse_args(argv)
    if not 0 < args.risk < 100 or args.train_compression <= 0 or args.overcommit < 1 or min(
            args.copies, args.host_gib, args.train_hosts, args.jobs, args.judge_days) < 1 or \
            args.judge_hosts < 0 or args.reserved_mb < 0:
        parser.error('--risk must be in (0, 100), --train-compression above 0, --overcommit '
                     '1 or more, --copies, --host-gib, --train-hosts, --judge-days and --jobs '
                     '1 or more, --judge-hosts and --reserved-mb 0 or more')
    logging.basicConfig(level=logging.ERROR)
    started = time.monotonic()
    risk = args.risk / 100
    cloud, dropped = build_cloud(_traces(args.trace), args.copies, args.host_gib * 1024,
                                 args.reserved_mb, args.seed, args.overcommit)
    train_end = cloud.start_s + TRAIN_S
    minute = history.SECONDS_PER_MINUTE
    judge_end = cloud.end_s // minute * minute
    train_span = needs(cloud, cloud.start_s, train_end)
    judge_span = needs(cloud, train_end, judge_end)
    today = pack(cloud, 1.0)
    trainers = sample_full_hosts(today, args.train_hosts, args.seed)
    days = judged_days(cloud, args.judge_days, args.seed)
    hindsight = hindsight_best(cloud, judge_span, risk)
    demand_only = hindsight_best(cloud, needs(cloud, train_end, judge_end, headroom=False), risk)
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        def judge(ratio: float) -> list[concurrent.futures.Future[HostRun]]:
            chosen = sample_full_hosts(pack(cloud, ratio), args.judge_hosts, args.seed)
            return [pool.submit(_job, args, g, day, day + DAY_S, 1.0, WARMUP_S)
                    for g in chosen for day in days]

        training = [pool.submit(_job, args, g, cloud.start_s, train_end,
                                args.train_compression) for g in trainers]
        static = {r: judge(r) for r in (1.0, *STATIC_RATIOS)}
        train_runs = [f.result() for f in training]
        learned = advice.advise_pooled([r.minutes for r in train_runs], TRAIN_S, risk)
        print(f'advice from training: {learned.ratio} ({learned.reason}); hindsight best '
              f'{hindsight}', file=sys.stderr, flush=True)
        other = advice.advise_pooled([r.minutes for r in train_runs], TRAIN_S, OTHER_RISK)
        later = {}
        if learned.ratio is not None:
            later['advised'] = (learned.ratio, judge(learned.ratio))
        if other.ratio is not None and other.ratio != learned.ratio:
            later[f'advised at {100 * OTHER_RISK:g} % risk'] = (other.ratio,
                                                                 judge(other.ratio))
        later['hindsight best'] = (hindsight, judge(hindsight))
        # The workers run the controllers meanwhile.
        sizes = sensitivity(args, risk)
        risks = risk_table(cloud)
        rows = [judged_row('ratio 1.0' if r == 1.0 else 'static', r, cloud, judge_span,
                           [f.result() for f in futures]) for r, futures in static.items()]
        rows += [judged_row(label, r, cloud, judge_span, [f.result() for f in futures])
                 for label, (r, futures) in later.items()]
    every_host = advice.advise_pooled([minutes_of(cloud, g, train_span) for g in today],
                                      TRAIN_S, risk)
    elapsed = time.monotonic() - started
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot = out.with_suffix('.png')
    draw(rows, plot, risk)
    out.write_text(report(args, cloud, dropped, today, trainers, learned, every_host, rows,
                          (hindsight, demand_only), risk, elapsed, plot.name, days, sizes,
                          risks))
    print(out.read_text())
    return 0


def report(args: argparse.Namespace, cloud: Cloud, dropped: list[str],
           today: list[list[int]], trainers: list[list[int]], learned: advice.Advice,
           every_host: advice.Advice, rows: list[Row], hindsights: tuple[float, float],
           risk: float, elapsed: float, plot: str, days: list[int], sizes: list[str],
           risks: list[str]) -> str:
    hindsight, demand_only = hindsights
    base = rows[0]
    later = (cloud.end_s - cloud.start_s - TRAIN_S) / DAY_S
    ram = sum(ram_mb(cloud.traces[vm]) for vm in cloud.guest_vm)
    lines = [
        '# Cloud simulation: advice from history, judged on unseen weeks', '',
        f'Written by `.venv/bin/python benchmarks/cloud_simulation.py{_flags(args)}` in '
        f'{elapsed / 60:.1f} min ({args.jobs} processes).', '',
        '## The cloud', '',
        f'- Trace `{Path(args.trace).name}`: {len(cloud.traces)} VMs with RAM and at most a '
        f'quarter of a host, {args.copies} copies of each = {len(cloud.guest_vm)} guests, '
        f'{ram / 1024:.0f} GiB of flavor RAM. Left out: {", ".join(dropped) or "none"} (no RAM '
        f'in the trace, or more than a quarter of a host: a cloud puts its largest flavors '
        f'on hosts of their own).',
        f'- Flavors: each VM\'s provisioned memory as flavor RAM, `balloon:overcommit_ratio` '
        f'{cloud.overcommit:g}, `balloon:min_memory_mb` 0. Why: these VMs use a median '
        f'6.6 % of their RAM (the simulator adds 5 % for the kernel), and a guest never goes '
        f'below its demand plus the safety headroom ([balloon] headroom_percent 10 % of its '
        f'RAM), about 16 % of RAM when idle; a floor of 1/{cloud.overcommit:g} sits below that, '
        f'so the floors never bind and the headroom is what each guest keeps. With ratio 4 '
        f'(the control-quality flavors) the floors bind at a quarter: see the last table.',
        f'- Hosts: {args.host_gib} GiB, reserved_host_memory_mb {args.reserved_mb}; packer: '
        f'first fit in a seeded arrival order (seed {args.seed}) against (RAM - reserved) x '
        f'ratio (two copies of a VM may share a host).',
        f'- Train: the first 7 days; judge: the {later:.1f} days after. Ratio 1.0 needs '
        f'{len(today)} hosts; {len(trainers)} of them (at random, full ones) run the agent\'s '
        f'controller ({POLICY} policy, default options) through the training week (trace '
        f'time x{args.train_compression:g}: a cycle every {10 * args.train_compression:g} s '
        f'of trace time, so every minute has one), each recording its capacity history with '
        f'the agent\'s recorder; the advice pools their host-minutes (`advise_pooled`).',
        f'- Judge: every guest packed at each ratio (guests per host = guests / hosts); risk '
        f'counted on every host and every minute of the later weeks from the traces\' demand '
        f'with the recorder\'s need formula; pressure, host_overflow and reclaimed from the '
        f'controller on {args.judge_hosts} full hosts per ratio (at random; never the last, '
        f'partly filled host), each on {len(days)} days of the later weeks (at random: '
        f'{", ".join(time.strftime("%m-%d", time.gmtime(d)) for d in days)}) in real time '
        f'(trace time x1, each after an uncounted hour of warm-up). Sampled because the '
        f'controller runs a cycle every 10 s for every guest: all the later weeks on every '
        f'host would take hours; compressing trace time instead would inflate pressure '
        f'(a demand step answered within a cycle or two is a larger share of a shorter step).',
        '', '## The advice learned from the training week', '',
        f'Risk {100 * risk:g} % of host-minutes, window 7 days. {learned.reason}.', '',
        'A short minute is one in which the guests needed more than the host, each '
        'guest counted at its use plus its full headroom ([balloon] headroom_percent). '
        'It is not a minute in which a guest lacks memory: on a contended host the agent '
        'lowers the other guests\' headroom to [balloon] contended_headroom_percent and '
        'gives the rest to the guests that lack it. What guests lack is pressure, '
        'measured by the controller below.', '',
        '```', *learned.arithmetic, '```', '',
        f'From every ratio-1.0 host\'s minutes (the traces\' demand, not simulated agents): '
        f'{every_host.ratio if every_host.ratio is not None else "none"}. '
        f'Hindsight best on the later weeks: {hindsight:.2f}; counting demand alone (within '
        f'floor and RAM, without the safety headroom the agent leaves every guest): '
        f'{demand_only:.2f}.', '',
        '## Results on the weeks after the training week', '',
        *table(rows), '',
    ]
    advised = next((r for r in rows if r.label == 'advised'), None)
    if advised is None:
        lines.append(f'- NOT MET: no advice ({learned.reason})')
    else:
        gain = advised.guests_per_host / base.guests_per_host
        lines += [
            _goal(gain >= 2.5 and advised.pressure <= 0.001 and advised.host_overflow == 0,
                  f'{gain:.2f} x the guests per host of ratio 1.0 (goal 2.5), pressure '
                  f'{_pct(advised.pressure)} % of guest-time (goal <= 0.1 %), host_overflow '
                  f'{_pct(advised.host_overflow)} % (goal 0)'),
            _goal(advised.ratio >= 0.8 * hindsight and advised.risk <= risk,
                  f'advised {advised.ratio:.2f} = {advised.ratio / hindsight:.0%} of the '
                  f'hindsight best {hindsight:.2f} (goal 80 %); risk on the unseen weeks '
                  f'{_pct(advised.risk)} % (goal <= {100 * risk:g} %)'),
        ]
    lines += [f'- shown: static {r.ratio:.1f}: pressure {_pct(r.pressure)} %, risk '
              f'{_pct(r.risk)} %, {r.guests_per_host:.2f} guests per host'
              for r in rows if r.label == 'static']
    lines += [f'- shown: {r.label}: {r.ratio:.2f}, '
              f'{r.guests_per_host / base.guests_per_host:.2f} x the guests per host of '
              f'ratio 1.0, pressure {_pct(r.pressure)} %, host_overflow '
              f'{_pct(r.host_overflow)} %, risk on the unseen weeks {_pct(r.risk)} %'
              for r in rows if r.label.startswith('advised at')]
    lines += ['', f'![guests per host against pressure]({plot})', '',
              '## Host size and flavor ratio, from the traces alone', '',
              'No controller runs here: the advice from every ratio-1.0 host\'s training '
              'week (the traces\' demand, the recorder\'s need formula), the hindsight-best '
              'ratio on the later weeks, and at the advised ratio the guests per host against '
              'ratio 1.0 and the risk on the later weeks. Each host size has as many copies '
              'of the VMs as 64 GiB fits in it.', '', *sizes, '',
              '## The stated risk, from the traces alone', '',
              'As the table above, on this cloud: the advice from every ratio-1.0 host\'s '
              'training week at each stated risk. Ratio 1.0 needs '
              f'{len(today)} hosts; 2.5 times its guests per host means at most '
              f'{math.floor(len(today) / 2.5)} hosts.', '', *risks, '']
    return '\n'.join(lines)


def oracle(cloud: Cloud, risk: float) -> tuple[float | None, float, float, float]:
    """Advice from every ratio-1.0 host's training week, hindsight best, gain and risk."""
    train_end = cloud.start_s + TRAIN_S
    train = needs(cloud, cloud.start_s, train_end)
    judged = needs(cloud, train_end, cloud.end_s // 60 * 60)
    today = pack(cloud, 1.0)
    ratio = advice.advise_pooled([minutes_of(cloud, g, train) for g in today], TRAIN_S,
                                 risk).ratio
    best = hindsight_best(cloud, judged, risk)
    if ratio is None:
        return None, best, math.nan, math.nan
    gain = len(today) / len(pack(cloud, ratio))
    return ratio, best, gain, risk_of(cloud, ratio, judged)


def sensitivity(args: argparse.Namespace, risk: float) -> list[str]:
    out = ['| host GiB | overcommit | guests | advised | hindsight best | advised / best | '
           'x guests per host | risk at advised (%) |', '|' + '---|' * 8]
    for gib in SIZES_GIB:
        for overcommit in (4.0, args.overcommit):
            copies = max(1, gib // 64)
            cloud, _ = build_cloud(_traces(args.trace), copies, gib * 1024, args.reserved_mb,
                                   args.seed, overcommit)
            ratio, best, gain, at = oracle(cloud, risk)
            shown = '-' if ratio is None else f'{ratio:.2f}'
            share = '-' if ratio is None else f'{ratio / best:.0%}'
            out.append(f'| {gib} | {overcommit:g} | {len(cloud.guest_vm)} | {shown} | '
                       f'{best:.2f} | {share} | {gain:.2f} | {_pct(at)} |')
    return out


def risk_table(cloud: Cloud) -> list[str]:
    """``oracle`` on this cloud at each of TABLE_RISKS."""
    out = ['| stated risk (%) | advised | hindsight best | advised / best | hosts | '
           'x guests per host | risk at advised (%) |', '|' + '---|' * 7]
    for risk in TABLE_RISKS:
        ratio, best, gain, at = oracle(cloud, risk)
        if ratio is None:
            out.append(f'| {100 * risk:g} | - | {best:.2f} | - | - | - | - |')
            continue
        out.append(f'| {100 * risk:g} | {ratio:.2f} | {best:.2f} | {ratio / best:.0%} | '
                   f'{len(pack(cloud, ratio))} | {gain:.2f} | {_pct(at)} |')
    return out


def _goal(met: bool, text: str) -> str:
    return f'- {"met" if met else "NOT MET"}: {text}'


def _flags(args: argparse.Namespace) -> str:
    return ''.join(f' --{name.replace("_", "-")} {value}' for name, value in vars(args).items()
                   if name not in ('trace', 'out') and value != DEFAULTS.get(name))


DEFAULTS = {'overcommit': OVERCOMMIT, 'copies': 8, 'host_gib': 512, 'reserved_mb': 512,
            'risk': 1.0, 'train_compression': 5.0, 'train_hosts': 6, 'judge_hosts': 2,
            'judge_days': 2, 'seed': 1, 'jobs': 2}


if __name__ == '__main__':
    sys.exit(main())
