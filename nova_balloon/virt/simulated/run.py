"""Run the real controller, safety rules and a policy on a simulated node.

A scenario fixes the host's capacity and how fast trace time passes; the
guests are the first VMs of a trace. The controller is the agent's own
``Controller``, configured through a ConfigOpts of the agent's options (with
the benchmark's interval and stats period) and timed by the simulated clock:
statistics refresh at t = 0, 10, 20, ... s and the controller runs at
t = 5, 15, 25, ... s.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from oslo_config import cfg

from nova_balloon import flavor_policy, policies
from nova_balloon.conf import adaptive_policy, balloon, compute
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import Controller
from nova_balloon.model import KIB_PER_MIB, GuestFacts, NovaMetadata
from nova_balloon.virt.simulated import metrics, trace
from nova_balloon.virt.simulated.hypervisor import STATS_PERIOD_S, SimulatedHypervisor

INTERVAL_S = 10
# The spec's flavors: floor = M / 4, nothing else. Without an explicit
# min_memory_mb the agent's default (256 MiB) would raise small guests' floors
# above the spec's, and above their start size when the host is a third.
FLAVOR_EXTRA_SPECS = {flavor_policy.OVERCOMMIT_RATIO: '4.0', flavor_policy.MIN_MEMORY_MB: '0'}


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    # Host capacity as a fraction of the guests' flavor RAM.
    host_fraction: float
    # Trace seconds per simulated second.
    compression: float


SCENARIOS = {s.name: s for s in (
    Scenario('overcommit', 1 / 3, 1),
    Scenario('rightsize', 1.0, 1),
    Scenario('spike', 1 / 3, 10),
)}


def simulation_conf(overrides: Mapping[str, Any] | None = None) -> cfg.ConfigOpts:
    """The agent's [balloon] and [adaptive_policy] options with the benchmark's
    timing, defaults otherwise; ``overrides`` by option name.

    The groups are copies of the agent's: oslo.config keeps overrides in the
    registered group's option table, so registering the module's own group
    would leak these overrides into every other ConfigOpts, cfg.CONF included.
    """
    conf = cfg.ConfigOpts()
    groups = {}
    for group, opts in ((balloon.balloon_group, balloon.ALL_OPTS),
                        (adaptive_policy.adaptive_policy_group,
                         adaptive_policy.adaptive_policy_opts)):
        conf.register_group(cfg.OptGroup(group.name, title=group.title))
        conf.register_opts(opts, group=group.name)
        groups.update(dict.fromkeys((opt.name for opt in opts), group.name))
    compute.register_opts(conf)
    conf([], project='nova-balloon', default_config_files=[], default_config_dirs=[])
    # The spec's timing: every guest refreshes its statistics every 10 s, even
    # one the agent would watch closely for lack of free memory.
    values = {'interval': INTERVAL_S, 'stats_period': STATS_PERIOD_S,
              'fast_stats_period': STATS_PERIOD_S, **(overrides or {})}
    for name, value in values.items():
        conf.set_override(name, value, group=groups[name])
    return conf


@dataclasses.dataclass(frozen=True)
class Node:
    """A scenario's compute node: guests, their demand by second, the host."""

    scenario: Scenario
    facts: list[GuestFacts]
    demand_kib: np.ndarray
    ceiling_kib: np.ndarray
    floor_kib: np.ndarray
    host_total_kib: int

    @property
    def initial_kib(self) -> np.ndarray:
        """Every guest starts with the same share of its flavor RAM that fits the host."""
        return self.ceiling_kib * min(1.0, self.host_total_kib / self.ceiling_kib.sum())


def describe(node: Node) -> str:
    """One line that says what was simulated."""
    gib = 1024 * KIB_PER_MIB
    with_ram = int(np.count_nonzero(node.ceiling_kib))
    return (f'{node.scenario.name}: {len(node.facts)} guests ({with_ram} with RAM), '
            f'flavor RAM {node.ceiling_kib.sum() / gib:.0f} GiB, host '
            f'{node.host_total_kib / gib:.0f} GiB, {len(node.demand_kib) / 3600:.2f} h '
            f'simulated, trace time x{node.scenario.compression:g}')


def guest_facts(index: int, vm: trace.VmTrace) -> GuestFacts:
    ceiling_mib = vm.ceiling_kib // KIB_PER_MIB
    return GuestFacts(
        uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, f'nova-balloon-simulated:{vm.vm}')),
        name=vm.vm, max_memory_kib=vm.ceiling_kib,
        nova=NovaMetadata(instance_name=f'instance-{index:08x}',
                          flavor_name=f'sim.{ceiling_mib}', flavor_memory_mb=ceiling_mib,
                          extra_specs=dict(FLAVOR_EXTRA_SPECS)),
        unballoonable=None, stats_period_s=STATS_PERIOD_S)


def build_node(traces: Sequence[trace.VmTrace], scenario: Scenario, hours: float,
               conf: cfg.ConfigOpts) -> Node:
    facts = [guest_facts(i, vm) for i, vm in enumerate(traces)]
    steps = int(hours * 3600 / scenario.compression)
    demand = trace.demand_kib(list(traces), trace.start_of(list(traces)), steps,
                              scenario.compression)
    ceiling = np.array([f.max_memory_kib for f in facts], dtype=float)
    defaults = planner.Settings.from_conf(conf.balloon).defaults
    floors = []
    for f in facts:
        assert f.nova is not None
        bounds = flavor_policy.resolve(f.nova.extra_specs, None, defaults, f.max_memory_kib)
        floors.append(bounds.floor_kib(f.max_memory_kib))
    host = int(ceiling.sum() * scenario.host_fraction)
    return Node(scenario, facts, demand, ceiling, np.array(floors, dtype=float), host)


@dataclasses.dataclass(frozen=True)
class Watched:
    """One guest's course through a run, for the plot."""

    name: str
    demand_kib: np.ndarray
    actual_kib: np.ndarray
    target_kib: np.ndarray


@dataclasses.dataclass(frozen=True)
class RunResult:
    policy: str
    metrics: metrics.Metrics
    host_total_kib: int
    host_used_kib: np.ndarray
    watched: list[Watched]


def watched_guests(node: Node, count: int = 3) -> list[int]:
    """The guests whose demand rises furthest above their floor: where policies differ."""
    above_floor = (node.demand_kib - node.floor_kib).max(axis=0)
    return sorted(np.argsort(-above_floor, kind='stable')[:count].tolist())


def run_policy(node: Node, policy_name: str, overrides: Mapping[str, Any] | None = None,
               watch: Sequence[int] = (), host_model: str = 'v1',
               start_full: bool = False) -> RunResult:
    """Simulate the node under one policy from start to end of its demand.

    ``start_full``: every guest starts at its flavor's memory, as Nova boots
    it, rather than at the share of it that fits the host.
    """
    conf = simulation_conf(overrides)
    settings = planner.Settings.from_conf(conf.balloon)
    hypervisor = SimulatedHypervisor(node.facts, node.demand_kib, node.host_total_kib,
                                     node.ceiling_kib if start_full else node.initial_kib,
                                     host_model=host_model)
    controller = Controller(hypervisor, policies.load(policy_name, conf), settings,
                            flavor_policy.PolicyFile(None), dry_run=False,
                            clock=hypervisor.now)
    steps = hypervisor.steps
    actual = np.empty((steps, len(node.facts)))
    resident = np.empty(steps)
    watch = list(watch)
    targets = np.empty((steps, len(watch)))
    controller_second = settings.interval_s // 2
    for second in range(steps):
        if second:
            hypervisor.step()
        if second % settings.interval_s == controller_second:
            controller.run_cycle()
        actual[second] = hypervisor.actual
        resident[second] = hypervisor.resident().sum()
        targets[second] = hypervisor.target[watch]
    figures = metrics.measure(node.demand_kib, actual, node.ceiling_kib, node.floor_kib,
                              node.host_total_kib, hypervisor.target_changes,
                              resident_kib=resident if host_model == 'v2' else None)
    return RunResult(
        policy_name, figures, node.host_total_kib, resident,
        [Watched(node.facts[i].name, node.demand_kib[:, i], actual[:, i], targets[:, column])
         for column, i in enumerate(watch)])
