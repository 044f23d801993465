"""The Prometheus metrics: the pure figures, the exporter's families, its HTTP endpoint."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from oslo_config import cfg
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nova_balloon.conf import balloon
from nova_balloon.conf import metrics as metrics_conf
from nova_balloon.controller import planner
from nova_balloon.controller.cycle import CycleReport
from nova_balloon.controller.planner import GuestMemory, classify
from nova_balloon.metrics import exporter, values
from nova_balloon.metrics.values import GuestState, IgnoredReason
from nova_balloon.model import (
    BalloonStats,
    GuestFacts,
    GuestSample,
    GuestView,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies import Policy
from tests.unit.planning import CEILING, LIMITS, SETTINGS, GiB, MiB

NOW = 1000.0
HOST = HostSnapshot(total_kib=64 * GiB, available_kib=32 * GiB, now=NOW)
WALL = 1_700_000_000.0


class HoldPolicy(Policy):
    """Proposes nothing: every managed guest keeps its target."""

    def __init__(self) -> None:
        super().__init__(cfg.ConfigOpts())

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        return {}


def sample(uuid: str, *, actual: int = CEILING, usable: int = 3 * GiB,
           specs: Mapping[str, str] | None = None, no_nova: bool = False,
           instance_name: str | None = 'web-1', unballoonable: str | None = None,
           run_state: RunState = RunState.RUNNING, age: float | None = 1.0,
           rss: int | None = None) -> GuestSample:
    nova = None if no_nova else NovaMetadata(
        instance_name=instance_name, flavor_name='m1.large', flavor_memory_mb=4096,
        extra_specs=dict(specs or {}))
    facts = GuestFacts(uuid=uuid, name=f'instance-{uuid}', max_memory_kib=CEILING, nova=nova,
                       unballoonable=unballoonable, stats_period_s=2)
    stats = BalloonStats(actual_kib=actual, usable_kib=usable, unused_kib=usable,
                         available_kib=actual, swap_in_kib=0, major_faults=0,
                         last_update=12345, rss_kib=rss)
    return GuestSample(facts=facts, stats=stats, run_state=run_state, stats_age_s=age)


def settled(actual: int, target: int | None = None) -> GuestMemory:
    """The agent set ``target`` long ago and the balloon has been at ``actual`` since."""
    return GuestMemory(target_kib=target, actual_kib=actual, shrunk=target is not None and
                       target < CEILING, actual_since=NOW - 100, target_set_at=NOW - 100)


def host_plan(samples: Sequence[GuestSample],
              memory: Mapping[str, GuestMemory] | None = None) -> planner.Plan:
    return planner.plan(HOST, samples, HoldPolicy(), {}, memory or {}, SETTINGS)


# A managed guest at 3 GiB with 2 GiB free, one short of memory (100 MiB free
# of 2.5 GiB), one with balloon:enabled=false and one outside Nova.
MANAGED = sample('a', actual=3 * GiB, usable=2 * GiB, rss=2 * GiB)
SHORT = sample('b', actual=2 * GiB + 512 * MiB, usable=100 * MiB, instance_name='db-1')
DISABLED = sample('c', specs={'balloon:enabled': 'false'}, instance_name='batch-1')
FOREIGN = sample('d', no_nova=True)
MEMORY = {'a': settled(3 * GiB, 3 * GiB), 'b': settled(2 * GiB + 512 * MiB, 2 * GiB + 512 * MiB)}


def four_guests() -> planner.Plan:
    return host_plan([MANAGED, SHORT, DISABLED, FOREIGN], MEMORY)


# -- the pure part ----------------------------------------------------------------------

REASON_CASES = [
    (sample('u', unballoonable='hugepage memory backing'), IgnoredReason.UNBALLOONABLE),
    (sample('u', unballoonable='no balloon device (memballoon model none)',
            run_state=RunState.PAUSED), IgnoredReason.UNBALLOONABLE),
    (sample('u', run_state=RunState.MIGRATING), IgnoredReason.MIGRATING),
    (sample('u', run_state=RunState.PAUSED), IgnoredReason.NOT_RUNNING),
    (sample('u', run_state=RunState.OTHER), IgnoredReason.NOT_RUNNING),
    (sample('u', specs={'balloon:overcommit_ratio': 'abc'}),
     IgnoredReason.INVALID_FLAVOR_POLICY),
    (sample('u', no_nova=True), IgnoredReason.NO_NOVA_METADATA),
    (sample('u', specs={'balloon:enabled': 'false'}), IgnoredReason.DISABLED),
    (sample('u', specs={'balloon:overcommit_ratio': '1.0'}), IgnoredReason.NOT_RECLAIMABLE),
]


@pytest.mark.parametrize('guest, reason', REASON_CASES)
def test_each_reason_of_classify_has_its_category(guest, reason):
    item = classify(guest, {}, SETTINGS)
    assert item.ignore_reason is not None
    assert values.ignored_reason(item) is reason


def test_reason_categories_cover_every_category():
    """The parametrized cases above name every category: none is dead."""
    covered = {reason for _, reason in REASON_CASES}
    assert covered == set(IgnoredReason)


def view_of(guest: GuestSample, memory: GuestMemory | None = None) -> GuestView:
    plan = host_plan([guest], {guest.facts.uuid: memory} if memory else {})
    return plan.views[guest.facts.uuid]


def test_state_managed_short_and_unresponsive():
    assert values.guest_state(view_of(MANAGED, MEMORY['a']), LIMITS) is GuestState.MANAGED
    assert values.guest_state(view_of(SHORT, MEMORY['b']), LIMITS) is GuestState.SHORT
    # Free memory just at the headroom (10 % of 4 GiB) is not short; below it is.
    headroom = LIMITS.headroom_for(view_of(MANAGED))
    at_line = sample('e', actual=3 * GiB, usable=headroom)
    below = sample('e', actual=3 * GiB, usable=headroom - 1)
    assert values.guest_state(view_of(at_line), LIMITS) is GuestState.MANAGED
    assert values.guest_state(view_of(below), LIMITS) is GuestState.SHORT
    # At its full memory, no balloon can help a guest short of free memory.
    full = sample('e', actual=CEILING, usable=headroom - 1)
    assert values.guest_state(view_of(full), LIMITS) is GuestState.MANAGED
    # Statistics frozen for longer than unresponsive_after (60 s).
    frozen = sample('f', actual=3 * GiB, usable=2 * GiB, age=120.0)
    assert values.guest_state(view_of(frozen), LIMITS) is GuestState.UNRESPONSIVE
    assert values.guest_state(None, LIMITS) is GuestState.IGNORED


def test_a_guest_deflating_on_oom_is_short_with_free_memory():
    # The agent set 2 GiB; the balloon grew past it by itself.
    deflating = sample('g', actual=3 * GiB, usable=2 * GiB)
    view = view_of(deflating, settled(2 * GiB + 512 * MiB, 2 * GiB))
    assert view.deflated_on_oom
    assert values.guest_state(view, LIMITS) is GuestState.SHORT


def test_guest_figures():
    figures = {g.uuid: g for g in values.guest_figures(four_guests(), LIMITS)}
    a, b, c, d = figures['a'], figures['b'], figures['c'], figures['d']
    assert (a.name, a.flavor, a.state, a.reason) == ('web-1', 'm1.large', GuestState.MANAGED,
                                                     None)
    assert (a.ceiling_kib, a.floor_kib, a.balloon_kib, a.target_kib, a.usable_kib) == (
        CEILING, 2 * GiB, 3 * GiB, 3 * GiB, 2 * GiB)
    assert a.demand_kib == 1 * GiB
    assert b.state is GuestState.SHORT and b.name == 'db-1'
    assert (c.state, c.reason, c.demand_kib) == (GuestState.IGNORED, IgnoredReason.DISABLED,
                                                 None)
    # Outside Nova: the domain name, no flavor.
    assert (d.name, d.flavor, d.reason) == ('instance-d', '', IgnoredReason.NO_NOVA_METADATA)
    assert d.usable_kib == 3 * GiB and d.floor_kib is None and d.target_kib is None


def test_host_figures():
    plan = four_guests()
    host = values.host_figures(plan, list(values.guest_figures(plan, LIMITS)))
    assert host.reclaimed_kib == 1 * GiB + 1536 * MiB
    assert host.committed_kib == 3 * GiB + 2560 * MiB + 2 * CEILING
    assert host.guests_by_state == {GuestState.MANAGED: 1, GuestState.SHORT: 1,
                                    GuestState.UNRESPONSIVE: 0, GuestState.IGNORED: 2}
    # The managed guest has touched only 2 of its 3 GiB.
    assert (host.total_kib, host.available_kib, host.free_kib) == (64 * GiB, 32 * GiB,
                                                                    31 * GiB)
    assert host.stats_age_max_s == 1.0 and not host.critical


def test_cycle_results_and_libvirt_errors():
    plan = four_guests()
    planned = CycleReport(plan, {'a': 2 * GiB}, {'b': 'gone'}, None, 0.01)
    outage = CycleReport(None, {}, {}, 'libvirtd down', 0.01)
    safe = CycleReport(None, {}, {}, None, 0.01, failure='KeyError: x')
    assert values.cycle_result(planned) is values.CycleResult.PLANNED
    assert values.cycle_result(outage) is values.CycleResult.LIBVIRT_UNREACHABLE
    assert values.cycle_result(safe) is values.CycleResult.SAFE_MODE
    assert values.libvirt_errors(planned) == {values.LibvirtErrorKind.GUEST_ACTION: 1}
    assert values.libvirt_errors(outage) == {values.LibvirtErrorKind.UNREACHABLE: 1}
    assert values.libvirt_errors(safe) == {}


# -- the exporter ------------------------------------------------------------------------

def scrape(exp: exporter.Exporter) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, by name and labels, parsed from the text format."""
    text = generate_latest(exp.registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def guest(uuid: str, name: str, flavor: str = 'm1.large', **extra: str) -> frozenset:
    return frozenset({'instance_uuid': uuid, 'instance_name': name, 'flavor': flavor,
                      **extra}.items())


NONE = frozenset()


def test_exporter_renders_a_cycle():
    exp = exporter.Exporter(LIMITS)
    exp.observe(CycleReport(four_guests(), {'a': 3 * GiB}, {'b': 'guest gone'}, None, 0.012),
                libvirt_calls=7, now=WALL)
    got = scrape(exp)
    a, b = guest('a', 'web-1'), guest('b', 'db-1')
    assert got['nova_balloon_guest_balloon_bytes', a] == 3 * GiB * 1024
    assert got['nova_balloon_guest_ceiling_bytes', a] == CEILING * 1024
    assert got['nova_balloon_guest_floor_bytes', a] == 2 * GiB * 1024
    assert got['nova_balloon_guest_target_bytes', a] == 3 * GiB * 1024
    assert got['nova_balloon_guest_usable_bytes', a] == 2 * GiB * 1024
    assert got['nova_balloon_guest_demand_bytes', a] == 1 * GiB * 1024
    assert got['nova_balloon_guest_state', guest('a', 'web-1', state='managed', reason='')] == 1
    assert got['nova_balloon_guest_state', guest('b', 'db-1', state='short', reason='')] == 1
    assert got['nova_balloon_guest_state', guest('c', 'batch-1', state='ignored',
                                                 reason='disabled')] == 1
    assert got['nova_balloon_guest_state', guest('d', 'instance-d', '', state='ignored',
                                                 reason='no_nova_metadata')] == 1
    # Ignored guests have no floor (outside Nova) nor demand.
    assert ('nova_balloon_guest_demand_bytes', guest('c', 'batch-1')) not in got
    assert ('nova_balloon_guest_floor_bytes', guest('d', 'instance-d', '')) not in got
    assert got['nova_balloon_guest_target_changes_total', a] == 1
    assert got['nova_balloon_guest_failed_actions_total', b] == 1
    assert got['nova_balloon_guest_oom_deflations_total', a] == 0
    assert got['nova_balloon_guests', frozenset({'state': 'ignored'}.items())] == 2
    assert got['nova_balloon_guests', frozenset({'state': 'unresponsive'}.items())] == 0
    assert got['nova_balloon_host_reclaimed_bytes', NONE] == (GiB + 1536 * MiB) * 1024
    assert got['nova_balloon_host_free_bytes', NONE] == 31 * GiB * 1024
    assert got['nova_balloon_host_critical', NONE] == 0
    assert got['nova_balloon_host_contended', NONE] == 0
    assert got['nova_balloon_agent_up', NONE] == 1
    assert got['nova_balloon_cycle_last_success_timestamp_seconds', NONE] == WALL
    assert got['nova_balloon_cycles_total', frozenset({'result': 'planned'}.items())] == 1
    assert got['nova_balloon_libvirt_calls_total', NONE] == 7
    assert got['nova_balloon_libvirt_errors_total',
               frozenset({'kind': 'guest_action'}.items())] == 1
    assert got['nova_balloon_cycle_duration_seconds_count', NONE] == 1
    assert got['nova_balloon_cycle_duration_seconds_bucket',
               frozenset({'le': '0.025'}.items())] == 1
    assert got['nova_balloon_cycle_duration_seconds_bucket',
               frozenset({'le': '0.01'}.items())] == 0
    # prometheus-client's process metrics come along (the agent's own RSS).
    assert got['process_resident_memory_bytes', NONE] > 0


def test_counters_add_up_and_gone_guests_leave_no_series():
    exp = exporter.Exporter(LIMITS)
    plan = four_guests()
    exp.observe(CycleReport(plan, {'a': 3 * GiB}, {}, None, 0.01), 1, WALL)
    exp.observe(CycleReport(plan, {'a': 3 * GiB, 'b': 3 * GiB}, {}, None, 0.01), 2, WALL + 2)
    exp.oom_deflated('b')
    got = scrape(exp)
    assert got['nova_balloon_guest_target_changes_total', guest('a', 'web-1')] == 2
    assert got['nova_balloon_guest_target_changes_total', guest('b', 'db-1')] == 1
    assert got['nova_balloon_guest_oom_deflations_total', guest('b', 'db-1')] == 1
    # Guest b leaves the host: none of its series stays, counters included.
    exp.observe(CycleReport(host_plan([MANAGED, DISABLED, FOREIGN], MEMORY), {}, {}, None,
                            0.01), 3, WALL + 4)
    got = scrape(exp)
    assert not [key for key in got if ('instance_uuid', 'b') in key[1]]
    assert got['nova_balloon_guest_target_changes_total', guest('a', 'web-1')] == 2
    assert got['nova_balloon_cycles_total', frozenset({'result': 'planned'}.items())] == 3


def test_counts_of_guests_gone_are_pruned():
    """The exporter's per-guest counts stay bounded by the guests of the plan."""
    exp = exporter.Exporter(LIMITS)
    for i in range(5):
        guests = [sample(f'x{i}-{j}') for j in range(3)]
        exp.observe(CycleReport(host_plan(guests), {g.facts.uuid: CEILING for g in guests},
                                {}, None, 0.01), i, WALL + i)
        assert len(exp._target_changes) <= 2 * len(guests)


def test_an_outage_keeps_the_last_figures_and_says_the_agent_is_not_up():
    exp = exporter.Exporter(LIMITS)
    exp.observe(CycleReport(four_guests(), {}, {}, None, 0.01), 3, WALL)
    exp.observe(CycleReport(None, {}, {}, 'libvirtd down', 0.001), 3, WALL + 2)
    got = scrape(exp)
    assert got['nova_balloon_agent_up', NONE] == 0
    assert got['nova_balloon_cycle_last_success_timestamp_seconds', NONE] == WALL
    assert got['nova_balloon_cycles_total',
               frozenset({'result': 'libvirt_unreachable'}.items())] == 1
    assert got['nova_balloon_libvirt_errors_total',
               frozenset({'kind': 'unreachable'}.items())] == 1
    assert got['nova_balloon_guest_balloon_bytes', guest('a', 'web-1')] == 3 * GiB * 1024
    exp.observe(CycleReport(None, {'b': CEILING}, {}, None, 0.01, failure='bug'), 3, WALL + 4)
    got = scrape(exp)
    assert got['nova_balloon_cycles_total', frozenset({'result': 'safe_mode'}.items())] == 1
    assert got['nova_balloon_guest_target_changes_total', guest('b', 'db-1')] == 1


def test_before_the_first_cycle():
    got = scrape(exporter.Exporter(LIMITS))
    assert got['nova_balloon_agent_up', NONE] == 0
    assert ('nova_balloon_cycle_last_success_timestamp_seconds', NONE) not in got
    assert ('nova_balloon_host_free_bytes', NONE) not in got


# -- [metrics] listen and the HTTP endpoint -----------------------------------------------

@pytest.mark.parametrize('value, address', [
    ('', None), ('  ', None), ('127.0.0.1:9740', ('127.0.0.1', 9740)),
    ('0.0.0.0:1', ('0.0.0.0', 1)), ('[::1]:9740', ('::1', 9740)), ('[::]:65535', ('::', 65535)),
    ('compute-1.example.org:9740', ('compute-1.example.org', 9740)),
])
def test_listen_address(value, address):
    assert metrics_conf.listen_address(value) == address


@pytest.mark.parametrize('value, says', [
    ('9740', 'expected HOST:PORT'), ('127.0.0.1', 'expected HOST:PORT'),
    ('::1:9740', 'expected HOST:PORT'), ('127.0.0.1:http', 'expected HOST:PORT'),
    ('127.0.0.1:0', 'port 0 is not in 1-65535'), ('127.0.0.1:70000', 'not in 1-65535'),
    ('[::g]:9740', "'::g'"), ('bad_host:9740', 'neither an IPv4 address nor a host name'),
])
def test_listen_address_errors_name_the_value(value, says):
    with pytest.raises(metrics_conf.ListenAddressError) as error:
        metrics_conf.listen_address(value)
    assert f'[metrics] listen = {value!r}' in str(error.value)
    assert says in str(error.value)


def agent_conf(tmp_path: Path, listen: str) -> cfg.ConfigOpts:
    """The options from a config file: an override would stay on the option group
    that every ConfigOpts of the process shares."""
    config = tmp_path / 'agent.conf'
    config.write_text(f'[metrics]\nlisten = {listen}\n')
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    metrics_conf.register_opts(conf)
    conf(['--config-file', str(config)], default_config_files=[], default_config_dirs=[])
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_metrics_are_off_by_default(tmp_path):
    assert exporter.start(agent_conf(tmp_path, '')) is None


def test_the_endpoint_serves_over_http(tmp_path):
    port = free_port()
    exp = exporter.start(agent_conf(tmp_path, f'127.0.0.1:{port}'))
    assert exp is not None
    try:
        exp.observe(CycleReport(four_guests(), {}, {}, None, 0.01), 1, WALL)
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10) as reply:
            assert reply.status == 200
            text = reply.read().decode()
        assert 'nova_balloon_guest_balloon_bytes{flavor="m1.large",instance_name="web-1",' \
               'instance_uuid="a"} 3.221225472e+09' in text
    finally:
        exp.close()


def test_a_bad_address_stops_the_agent_with_a_clear_message(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        exporter.start(agent_conf(tmp_path, 'localhost'))
    assert "[metrics] listen = 'localhost': expected HOST:PORT" in str(stopped.value.code)


def test_an_address_in_use_stops_the_agent_with_a_clear_message(tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stopped:
            exporter.start(agent_conf(tmp_path, f'127.0.0.1:{port}'))
    message = str(stopped.value.code)
    assert f'cannot serve metrics on [metrics] listen = 127.0.0.1:{port}' in message
    assert 'Address already in use' in message


def test_the_agent_refuses_a_bad_listen_value_at_start(tmp_path):
    """nova-balloon-agent itself, as an operator starts it: exit status and message."""
    config = tmp_path / 'agent.conf'
    config.write_text(f'[balloon]\nstate_file = {tmp_path}/state.json\n'
                      '[metrics]\nlisten = 9740\n')
    agent = Path(sys.executable).parent / 'nova-balloon-agent'
    done = subprocess.run([str(agent), '--config-file', str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert "[metrics] listen = '9740': expected HOST:PORT" in done.stderr
