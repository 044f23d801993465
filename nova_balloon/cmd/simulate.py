"""``nova-balloon simulate``: balloon policies side by side on a simulated node.

Runs the agent's controller, safety rules and each named policy on a
simulated compute node whose guests follow a VM memory trace, and prints the
control-quality metrics of each policy (see nova_balloon.virt.simulated).
It needs numpy and matplotlib (the ``simulate`` extra) and no hypervisor.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from stevedore import extension

from nova_balloon import policies

SCENARIOS = ('overcommit', 'rightsize', 'spike')
ALL_POLICIES = 'static,mom,proxmox,squeezed,adaptive'
# The top-level modules of the ``simulate`` extra in setup.cfg.
EXTRA_MODULES = ('numpy', 'matplotlib')
MISSING_EXTRA = ("simulate: needs {module}, which nova-balloon installs only with its "
                 "'simulate' extra: pip install 'nova-balloon[simulate]'")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be above 0: {text}')
        return value
    return parse


def run(args: argparse.Namespace) -> int:
    # numpy and matplotlib only when simulating: other commands do without,
    # and an install without the extra gets a hint rather than a traceback.
    try:
        from nova_balloon.virt.simulated import metrics, plot, trace
        from nova_balloon.virt.simulated import run as simulation
    except ModuleNotFoundError as exc:
        module = (exc.name or '').split('.')[0]
        if module not in EXTRA_MODULES:
            raise
        print(MISSING_EXTRA.format(module=module), file=sys.stderr)
        return 1

    names = [name.strip() for name in args.policy.split(',') if name.strip()]
    known = set(extension.ExtensionManager(policies.NAMESPACE).names())
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        print(f'simulate: unknown policy {", ".join(unknown) or "(none given)"}; '
              f'known: {", ".join(sorted(known))}', file=sys.stderr)
        return 2
    try:
        traces = trace.read(args.trace, args.guests)
    except (OSError, trace.TraceError) as exc:
        print(f'simulate: cannot read the trace: {exc}', file=sys.stderr)
        return 1
    # Thousands of simulated cycles: the controller's log would drown the table.
    logging.getLogger('nova_balloon').setLevel(logging.ERROR)
    scenario = simulation.SCENARIOS[args.scenario]
    node = simulation.build_node(traces, scenario, args.hours, simulation.simulation_conf())
    watch = simulation.watched_guests(node)
    results = [simulation.run_policy(node, name, watch=watch, host_model=args.host_model)
               for name in names]
    if args.format == 'json':
        print(json.dumps({r.policy: r.metrics.as_dict() for r in results}, indent=2))
    else:
        print(f'{simulation.describe(node)}\n')
        print(metrics.table({r.policy: r.metrics for r in results}))
    if args.plot:
        plot.draw(results, args.plot, simulation.describe(node))
    return 0


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        'simulate', help='Compare balloon policies on a node simulated from VM traces.')
    parser.add_argument('--trace', required=True,
                        help='CSV trace (gzip or plain): vm, timestamp_s, mem_capacity_kb, '
                             'mem_usage_kb per sample')
    parser.add_argument('--scenario', choices=SCENARIOS, default='overcommit')
    parser.add_argument('--policy', default=ALL_POLICIES,
                        help=f'comma-separated policy names (default {ALL_POLICIES})')
    parser.add_argument('--guests', type=_positive(int), default=60,
                        help='the first N VMs of the trace (default 60)')
    parser.add_argument('--hours', type=_positive(float), default=24.0,
                        help='hours of trace time to replay (default 24)')
    parser.add_argument('--host-model', choices=('v1', 'v2'), default='v1',
                        help='v1: a guest occupies its balloon size on the host; v2: '
                             "Nova 34's free page reporting, a guest occupies its RSS "
                             '(use plus page cache) (default v1)')
    parser.add_argument('--plot', metavar='FILE.png',
                        help='also draw host memory and a few guests over time')
    parser.add_argument('--format', choices=('table', 'json'), default='table')
    parser.set_defaults(func=run)
