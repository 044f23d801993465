"""The Placement ratio mode against a real Placement service.

tools/start-placement.sh serves openstack-placement on 127.0.0.1 (SQLite,
noauth2); tools/install.sh starts it and the ``placement`` fixture makes
sure it is up. Each test creates a resource provider named like a
hypervisor, with the MEMORY_MB and VCPU inventory nova-compute reports and
real allocations of consumers, and drives the mode through the agent's own
config loading: a nova.conf with ``[placement]`` credentials (keystoneauth's
``admin_token`` plugin: noauth2 takes the token ``admin``), and the
``[placement_ratio]`` options. No guests: no libvirt lock needed.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from keystoneauth1 import adapter, session, token_endpoint
from oslo_config import cfg
from prometheus_client import CollectorRegistry, generate_latest

from nova_balloon.capacity.history import (
    HEADER,
    SECONDS_PER_MINUTE,
    FlavorUse,
    History,
    Minute,
    format_line,
)
from nova_balloon.conf import balloon, placement_ratio
from nova_balloon.conf import libvirt as libvirt_conf
from nova_balloon.placement.client import PlacementClient, ProviderMemory
from nova_balloon.placement.metrics import RatioCollector
from nova_balloon.placement.updater import RatioUpdater, read_last_change

pytestmark = pytest.mark.functional

REPO_ROOT = Path(__file__).resolve().parents[2]
# Consumers need consumer_type from 1.38 on.
ADMIN_MICROVERSION = '1.39'
TOTAL_MB = 16384
RESERVED_MB = 512
USABLE_MB = TOTAL_MB - RESERVED_MB


@pytest.fixture(scope='session')
def placement_endpoint() -> str:
    """Placement's endpoint; tools/install.sh already started it, this makes sure."""
    done = subprocess.run(['bash', str(REPO_ROOT / 'tools' / 'start-placement.sh')],
                          check=True, capture_output=True, text=True, timeout=600)
    return done.stdout.strip().splitlines()[-1]


class PlacementAdmin:
    """What nova-compute and the scheduler do to Placement, done by hand."""

    def __init__(self, endpoint: str):
        auth = token_endpoint.Token(endpoint, 'admin')
        self.api = adapter.Adapter(session.Session(auth=auth), service_type='placement',
                                   raise_exc=True)
        self.consumers: list[str] = []

    def _call(self, method: str, url: str, body: dict | None = None):
        return self.api.request(url, method, json=body, microversion=ADMIN_MICROVERSION)

    def create_node(self, name: str, ratio: float) -> str:
        """A compute node's provider with nova-compute's MEMORY_MB and VCPU inventory."""
        rp = str(uuid.uuid4())
        self._call('POST', '/resource_providers', {'name': name, 'uuid': rp})
        self._call('PUT', f'/resource_providers/{rp}/inventories', {
            'resource_provider_generation': 0,
            'inventories': {
                'MEMORY_MB': {'total': TOTAL_MB, 'reserved': RESERVED_MB, 'min_unit': 1,
                              'max_unit': TOTAL_MB, 'step_size': 1,
                              'allocation_ratio': ratio},
                'VCPU': {'total': 8, 'allocation_ratio': 4.0},
            }})
        return rp

    def allocate(self, rp: str, memory_mb: int) -> None:
        """A guest's allocation, as the scheduler claims it."""
        consumer, project = str(uuid.uuid4()), str(uuid.uuid4())
        self._call('PUT', f'/allocations/{consumer}', {
            'allocations': {rp: {'resources': {'MEMORY_MB': memory_mb, 'VCPU': 1}}},
            'project_id': project, 'user_id': project, 'consumer_generation': None,
            'consumer_type': 'INSTANCE'})
        self.consumers.append(consumer)

    def memory(self, rp: str) -> tuple[int, dict]:
        body = self._call('GET', f'/resource_providers/{rp}/inventories').json()
        return body['resource_provider_generation'], body['inventories']

    def set_memory(self, rp: str, **fields: float) -> None:
        """nova-compute's resource tracker writing MEMORY_MB with these fields changed."""
        generation, inventories = self.memory(rp)
        self._call('PUT', f'/resource_providers/{rp}/inventories/MEMORY_MB',
                   dict(inventories['MEMORY_MB'], **fields,
                        resource_provider_generation=generation))

    def remove_named(self, name: str) -> None:
        """A provider of that name left by an earlier, interrupted run, with its consumers."""
        found = self._call('GET', f'/resource_providers?name={name}').json()
        for provider in found['resource_providers']:
            rp = provider['uuid']
            held = self._call('GET', f'/resource_providers/{rp}/allocations').json()
            self.consumers.extend(held['allocations'])
            self.remove(rp)

    def remove(self, rp: str) -> None:
        for consumer in self.consumers:
            self._call('DELETE', f'/allocations/{consumer}')
        self.consumers.clear()
        self._call('DELETE', f'/resource_providers/{rp}')


@pytest.fixture
def admin(placement_endpoint: str) -> PlacementAdmin:
    return PlacementAdmin(placement_endpoint)


@pytest.fixture
def node(admin: PlacementAdmin) -> Iterator[tuple[str, str]]:
    """(name, uuid) of a fresh compute node provider at ratio 1.0 with 6 GiB allocated."""
    name = f'nbtest-{uuid.uuid4().hex[:8]}.example.org'
    rp = admin.create_node(name, 1.0)
    for _ in range(3):
        admin.allocate(rp, 2048)
    yield name, rp
    admin.remove(rp)


def history_advising(ratio: float, minutes: int = 120) -> History:
    """The last ``minutes`` minutes, each with flavor RAM / need = ``ratio``."""
    now_minute = int(time.time() // SECONDS_PER_MINUTE)
    need = 1000
    flavor = FlavorUse('m1.large', 4, need, int(round(need * ratio)))
    return History(Minute(m, USABLE_MB, (flavor,))
                   for m in range(now_minute - minutes, now_minute))


def nova_conf(tmp_path: Path, endpoint: str, name: str | None, default: str = '',
              token: str = 'admin', **ratio_options: object) -> cfg.ConfigOpts:
    """The agent's options, read from a nova.conf as the agent reads nova-compute's."""
    options = {'enabled': True, 'interval': 3600, 'window_hours': 2, 'risk_percent': 5,
               'min_ratio': 1.0, 'max_ratio': 2.0, 'max_step': 0.2, 'hysteresis': 0.05,
               'state_file': tmp_path / 'placement-ratio.json'}
    options.update(ratio_options)
    if name is not None:
        options['hypervisor_hostname'] = name
    lines = ['[DEFAULT]', default,
             '[libvirt]', 'connection_uri = test:///default',
             '[placement]', 'auth_type = admin_token', f'endpoint = {endpoint}',
             f'token = {token}',
             '[placement_ratio]'] + [f'{key} = {value}' for key, value in options.items()]
    path = tmp_path / 'nova.conf'
    path.write_text('\n'.join(lines) + '\n')
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    libvirt_conf.register_opts(conf)
    placement_ratio.register_opts(conf)
    conf(['--config-file', str(path)], project='nova-balloon', default_config_files=[])
    return conf


def updater_for(conf: cfg.ConfigOpts, history: History) -> RatioUpdater:
    updater = RatioUpdater.from_conf(conf, lambda: history)
    assert updater is not None
    return updater


def memory_ratio(admin: PlacementAdmin, rp: str) -> float:
    return admin.memory(rp)[1]['MEMORY_MB']['allocation_ratio']


def test_sets_the_advised_ratio_one_step_at_a_time(tmp_path, placement_endpoint, admin, node):
    name, rp = node
    generation, before = admin.memory(rp)
    updater = updater_for(nova_conf(tmp_path, placement_endpoint, name),
                          history_advising(1.5))
    # What the agent's notifier hears of each change.
    changes: list[tuple] = []
    updater.on_change = lambda *change: changes.append(change)
    outcome = updater.update()
    assert (outcome.action, outcome.ratio_before, outcome.ratio_after) == ('set', 1.0, 1.2)
    [(provider, before_ratio, after_ratio, advised, window_s, risk, reason)] = changes
    assert (provider, before_ratio, after_ratio, reason) == (name, 1.0, 1.2, outcome.reason)
    assert advised == outcome.advised and window_s > 0 and 0 < risk < 1
    new_generation, after = admin.memory(rp)
    assert after['MEMORY_MB'] == dict(before['MEMORY_MB'], allocation_ratio=1.2)
    assert after['VCPU'] == before['VCPU'] and new_generation == generation + 1
    last = read_last_change(str(tmp_path / 'placement-ratio.json'))
    assert last is not None and (last.provider, last.from_ratio, last.to_ratio) == \
        (name, 1.0, 1.2)
    # At most one change per interval, across a restart too (a new updater).
    again = updater_for(nova_conf(tmp_path, placement_endpoint, name),
                        history_advising(1.5)).update()
    assert again.action == 'unchanged' and 'the next change may come in' in again.reason
    assert memory_ratio(admin, rp) == 1.2


def test_a_ratio_changed_behind_the_agents_back_is_named(tmp_path, placement_endpoint,
                                                         admin, node, caplog):
    name, rp = node
    conf = nova_conf(tmp_path, placement_endpoint, name)
    assert updater_for(conf, history_advising(1.5)).update().ratio_after == 1.2
    # nova-compute, with a ram_allocation_ratio the agent did not see, writes 1.0 back.
    admin.set_memory(rp, allocation_ratio=1.0)
    with caplog.at_level(logging.WARNING, logger='nova_balloon.placement.updater'):
        assert updater_for(conf, history_advising(1.5)).update().action == 'unchanged'
    assert 'allocation_ratio is 1.00, not the 1.20 the agent set' in caplog.text
    assert 'ram_allocation_ratio' in caplog.text


def test_too_little_history_changes_nothing(tmp_path, placement_endpoint, admin, node):
    name, rp = node
    updater = updater_for(nova_conf(tmp_path, placement_endpoint, name),
                          history_advising(1.5, minutes=20))
    outcome = updater.update()
    assert outcome.action == 'unchanged' and 'too little history' in outcome.reason
    assert memory_ratio(admin, rp) == 1.0


def test_ceiling_floor_and_hysteresis(tmp_path, placement_endpoint, admin, node):
    name, rp = node

    def run(step: str, advice: float, **options: object) -> str:
        state = tmp_path / step
        state.mkdir()
        return updater_for(nova_conf(state, placement_endpoint, name, **options),
                           history_advising(advice)).update().action

    assert run('ceiling', 3.0, max_ratio=1.3, max_step=1.0) == 'set'
    assert memory_ratio(admin, rp) == 1.3
    assert run('hysteresis', 1.38, hysteresis=0.1) == 'unchanged'
    assert memory_ratio(admin, rp) == 1.3
    assert run('beyond-hysteresis', 1.42, hysteresis=0.1) == 'set'
    assert memory_ratio(admin, rp) == 1.42
    assert run('floor', 0.5, min_ratio=1.25, max_step=1.0) == 'set'
    assert memory_ratio(admin, rp) == 1.25


def test_never_below_what_the_allocations_need(tmp_path, placement_endpoint, admin, node):
    name, rp = node
    client_conf = nova_conf(tmp_path, placement_endpoint, name, max_step=1.0)
    updater = updater_for(client_conf, history_advising(1.7))
    assert updater.update().ratio_after == 1.7
    # 6144 + 11264 = 17408 MiB allocated of 15872 usable: at least 17408 / 15872 = 1.0968.
    admin.allocate(rp, 11264)
    later = tmp_path / 'later'
    later.mkdir()
    outcome = updater_for(nova_conf(later, placement_endpoint, name, max_step=1.0),
                          history_advising(1.0)).update()
    assert (outcome.action, outcome.ratio_after) == ('set', 1.1)
    assert 'raised to 1.10 that the allocations need' in outcome.reason
    assert memory_ratio(admin, rp) == 1.1
    # Placement itself would have taken 1.0 (it only logs the provider as
    # over capacity; InventoryInUse is for removing inventory): the rail is ours.
    client = updater.client
    memory: ProviderMemory = client.read_memory(rp, name)
    client.set_memory_ratio(memory, 1.0)
    assert memory_ratio(admin, rp) == 1.0


def test_dry_run_changes_nothing(tmp_path, placement_endpoint, admin, node):
    name, rp = node
    generation, _ = admin.memory(rp)
    updater = updater_for(nova_conf(tmp_path, placement_endpoint, name, dry_run=True),
                          history_advising(1.5))
    changes: list[tuple] = []
    updater.on_change = lambda *change: changes.append(change)
    outcome = updater.update()
    assert (outcome.action, outcome.ratio_after) == ('would_set', 1.2)
    assert changes == [], 'a dry run notifies no change'
    assert admin.memory(rp)[0] == generation and memory_ratio(admin, rp) == 1.0
    assert not (tmp_path / 'placement-ratio.json').exists()


def test_refuses_when_nova_compute_sets_ram_allocation_ratio(tmp_path, placement_endpoint,
                                                            admin, node, caplog):
    name, rp = node
    conf = nova_conf(tmp_path, placement_endpoint, name,
                     default='ram_allocation_ratio = 1.5')
    with caplog.at_level(logging.WARNING, logger='nova_balloon.placement.updater'):
        assert RatioUpdater.from_conf(conf, lambda: history_advising(1.5)) is None
    assert '[DEFAULT] ram_allocation_ratio = 1.5' in caplog.text
    assert 'nova-compute writes it into Placement' in caplog.text
    assert memory_ratio(admin, rp) == 1.0
    # 0.0 is unset to Nova (its _get_allocation_ratios tests the value's truth).
    unset = tmp_path / 'unset'
    unset.mkdir()
    conf = nova_conf(unset, placement_endpoint, name, default='ram_allocation_ratio = 0.0')
    assert updater_for(conf, history_advising(1.5)).update().action == 'set'


def test_a_generation_conflict_is_read_again_once(tmp_path, placement_endpoint, admin, node):
    name, rp = node

    class RacedClient(PlacementClient):
        """nova-compute writes MEMORY_MB between the mode's read and its write."""

        races = 1

        def set_memory_ratio(self, memory: ProviderMemory, ratio: float) -> int:
            if self.races:
                self.races -= 1
                admin.set_memory(rp, reserved=1024)
            return super().set_memory_ratio(memory, ratio)

    updater = updater_for(nova_conf(tmp_path, placement_endpoint, name),
                          history_advising(1.5))
    updater.client = RacedClient(updater.client.adapter)
    outcome = updater.update()
    assert (outcome.action, outcome.ratio_after) == ('set', 1.2)
    memory = admin.memory(rp)[1]['MEMORY_MB']
    # nova-compute's change is kept, the ratio set on top of it.
    assert (memory['reserved'], memory['allocation_ratio']) == (1024, 1.2)

    # Raced twice: the mode gives up for this interval and the ratio stays.
    twice = tmp_path / 'twice'
    twice.mkdir()
    updater = updater_for(nova_conf(twice, placement_endpoint, name), history_advising(1.5))
    updater.client = RacedClient(updater.client.adapter)
    updater.client.races = 2
    outcome = updater.update()
    assert outcome.action == 'failed' and 'changed since generation' in outcome.reason
    assert memory_ratio(admin, rp) == 1.2


def test_the_provider_is_found_by_libvirts_hostname(tmp_path, placement_endpoint, admin):
    conn = libvirt.openReadOnly('test:///default')
    hostname = conn.getHostname()
    conn.close()
    admin.remove_named(hostname)
    rp = admin.create_node(hostname, 1.0)
    try:
        outcome = updater_for(nova_conf(tmp_path, placement_endpoint, None),
                              history_advising(1.5)).update()
        assert outcome.action == 'set'
        assert memory_ratio(admin, rp) == 1.2
    finally:
        admin.remove(rp)


def test_credentials_placement_refuses_are_named(tmp_path, placement_endpoint, admin, node):
    # noauth2 gives the token "nova" a user without roles, as a service user
    # without the admin (or service) role that Placement's policy asks for.
    name, rp = node
    outcome = updater_for(nova_conf(tmp_path, placement_endpoint, name, token='nova'),
                          history_advising(1.5)).update()
    assert outcome.action == 'failed'
    assert 'HTTP 403' in outcome.reason and 'placement:resource_providers:list' in outcome.reason
    assert memory_ratio(admin, rp) == 1.0


def test_an_unknown_provider_is_named(tmp_path, placement_endpoint):
    outcome = updater_for(nova_conf(tmp_path, placement_endpoint, 'no-such-node.example.org'),
                          history_advising(1.5)).update()
    assert outcome.action == 'failed'
    assert "no resource provider named 'no-such-node.example.org'" in outcome.reason


def test_each_change_is_a_metric(tmp_path, placement_endpoint, admin, node):
    name, rp = node
    updater = updater_for(nova_conf(tmp_path, placement_endpoint, name), history_advising(1.5))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RatioCollector(updater))
    assert 'nova_balloon_placement_allocation_ratio ' not in generate_latest(registry).decode()
    updater.update()
    updater.update()
    scraped = generate_latest(registry).decode()
    assert 'nova_balloon_placement_ratio_changes_total 1.0' in scraped
    assert 'nova_balloon_placement_ratio_failures_total 0.0' in scraped
    assert 'nova_balloon_placement_allocation_ratio 1.2' in scraped
    assert 'nova_balloon_placement_advised_ratio 1.5' in scraped


def test_the_agent_sets_the_ratio_from_its_history(tmp_path, placement_endpoint, admin, node):
    """nova-balloon-agent itself: its capacity history file in, Placement's ratio out.

    libvirt's test driver (test:///default) stands in for the hypervisor: the
    mode needs none of its guests, and an agent on it touches no real guest.
    """
    name, rp = node
    history_path = tmp_path / 'capacity-history'
    history_path.write_text(HEADER + '\n' + ''.join(
        format_line(m) + '\n' for m in history_advising(1.5).minutes))
    port = free_port()
    config = tmp_path / 'agent.conf'
    config.write_text(
        f'[DEFAULT]\nlog_file = {tmp_path / "agent.log"}\n'
        '[libvirt]\nconnection_uri = test:///default\n'
        f'[balloon]\ninterval = 1\nstate_file = {tmp_path / "state.json"}\n'
        f'[capacity]\nhistory_file = {history_path}\n'
        f'[metrics]\nlisten = 127.0.0.1:{port}\n'
        f'[placement]\nauth_type = admin_token\nendpoint = {placement_endpoint}\n'
        'token = admin\n'
        '[placement_ratio]\nenabled = true\nwindow_hours = 2\nrisk_percent = 5\n'
        f'max_step = 0.2\nhypervisor_hostname = {name}\n'
        f'state_file = {tmp_path / "placement-ratio.json"}\n')
    agent = subprocess.Popen([str(Path(sys.executable).parent / 'nova-balloon-agent'),
                              '--config-file', str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while memory_ratio(admin, rp) == 1.0 and time.monotonic() < deadline:
            assert agent.poll() is None, (tmp_path / 'agent.log').read_text()
            time.sleep(0.5)
        assert memory_ratio(admin, rp) == 1.2
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10) as page:
            scraped = page.read().decode()
        assert 'nova_balloon_placement_ratio_changes_total 1.0' in scraped
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    log = (tmp_path / 'agent.log').read_text()
    assert 'Placement ratio mode on: every 3600 s, ratio within [1, 1.5]' in log
    assert f'Placement ratio of {name}: set MEMORY_MB allocation_ratio 1.00 -> 1.20' in log
    assert 'Traceback' not in log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]
