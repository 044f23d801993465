"""The agent's Prometheus endpoint on a real host: scraped figures against libvirt's own.

A real nova-balloon-agent process, real QEMU guests: ``big`` (384 MiB, ratio
2.0) that the agent reclaims, and ``off`` (balloon:enabled=false) that it
ignores. The endpoint is scraped over HTTP while the agent runs, and its
balloon, free memory and ceiling are compared with ``virsh dommemstat`` and
``virsh dominfo``. The agent's config file (tests/functional/agent_process)
has no [metrics] section: the address comes from oslo.config's environment
source (OS_METRICS__LISTEN), as an operator may also set it. Then a real
Prometheus server (Debian's prometheus package) runs the scrape config and
alert rules of doc/source/monitoring.rst against the agent.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.functional.agent_process import running_agent
from tests.functional.conftest import BootGuest
from tests.functional.guests import BootedGuest, destroy_quietly, wait_until
from tests.unit.test_metrics_docs import code_blocks

pytestmark = pytest.mark.functional

MIB = 1024 * 1024
# The balloon moves in pages and QEMU reports its size rounded; the guest's
# free memory moves a little between the agent's sample and virsh's.
BALLOON_TOLERANCE = 2 * MIB
USABLE_TOLERANCE = 16 * MIB

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10) as reply:
        assert reply.status == 200
        return reply.read().decode()


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def of_guest(samples: Samples, name: str, uuid: str) -> dict[str, float]:
    """The guest's per-guest samples by metric name (its state as 'state:reason')."""
    figures = {}
    for (metric, labels), value in samples.items():
        label = dict(labels)
        if label.get('instance_uuid') != uuid:
            continue
        assert label['instance_name'] == name
        if metric == 'nova_balloon_guest_state':
            figures['state'] = f"{label['state']}:{label['reason']}"
        else:
            figures[metric] = value
    return figures


def virsh(*args: str) -> str:
    return subprocess.run(['virsh', '-c', 'qemu:///system', *args], capture_output=True,
                          text=True, check=True, timeout=30).stdout


def dommemstat_bytes(guest: BootedGuest) -> dict[str, int]:
    """``virsh dommemstat``: each figure (KiB) in bytes."""
    return {key: int(value) * 1024
            for key, value in re.findall(r'^(\w+) (\d+)$', virsh('dommemstat', guest.name),
                                         flags=re.M)}


def max_memory_bytes(guest: BootedGuest) -> int:
    kib = re.search(r'^Max memory:\s+(\d+) KiB$', virsh('dominfo', guest.name), flags=re.M)
    assert kib is not None
    return int(kib.group(1)) * 1024


def host_memtotal_bytes() -> int:
    kib = re.search(r'^MemTotal:\s+(\d+) kB$', Path('/proc/meminfo').read_text(), flags=re.M)
    assert kib is not None
    return int(kib.group(1)) * 1024


@contextlib.contextmanager
def prometheus_server(workdir: Path, agent_port: int) -> Iterator[int]:
    """Prometheus with the page's config and rules, scraping the agent every second."""
    workdir.mkdir()
    blocks = code_blocks()
    config = yaml.safe_load(blocks['prometheus.yml'])
    config['global'] = {'scrape_interval': '1s', 'evaluation_interval': '1s'}
    job = config['scrape_configs'][0]
    job['scrape_interval'] = '1s'
    job['static_configs'] = [{'targets': [f'127.0.0.1:{agent_port}']}]
    (workdir / 'prometheus.yml').write_text(yaml.safe_dump(config))
    (workdir / 'nova-balloon-alerts.yml').write_text(blocks['nova-balloon-alerts.yml'])
    port = free_port()
    log = (workdir / 'prometheus.log').open('w')
    server = subprocess.Popen(
        ['prometheus', '--config.file=prometheus.yml', f'--storage.tsdb.path={workdir}/data',
         f'--web.listen-address=127.0.0.1:{port}'], cwd=workdir, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: server.poll() is None and prometheus_api(port, '/-/ready'), 60,
                   'prometheus ready')
        yield port
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def prometheus_api(port: int, path: str, **query: str) -> Any:
    """A Prometheus API answer's data, or None while it does not answer."""
    url = f'http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(query)}'
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read().decode()
    except OSError:
        return None
    return json.loads(body)['data'] if path.startswith('/api/') else body


def test_scraped_figures_match_libvirt(boot_guest: BootGuest, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    big = boot_guest(memory_mib=384, flavor_name='m1.metrics',
                     extra_specs={'balloon:overcommit_ratio': '2.0'})
    off = boot_guest(memory_mib=256, flavor_name='m1.off',
                     extra_specs={'balloon:overcommit_ratio': '2.0', 'balloon:enabled': 'false'})
    port = free_port()
    monkeypatch.setenv('OS_METRICS__LISTEN', f'127.0.0.1:{port}')
    with running_agent(tmp_path, demand_half_life=5) as agent:
        wait_until(lambda: 'Serving Prometheus metrics at http://127.0.0.1' in agent.log(), 30,
                   'the metrics endpoint')

        def settled() -> bool:
            """Reclaimed, at its target, and the last cycle saw it there."""
            mine = of_guest(parse(scrape_text(port)), big.name, big.uuid)
            balloon = mine.get('nova_balloon_guest_balloon_bytes')
            target = mine.get('nova_balloon_guest_target_bytes')
            actual = dommemstat_bytes(big)['actual']
            return balloon is not None and target is not None and balloon < 384 * MIB and \
                abs(balloon - target) <= BALLOON_TOLERANCE and \
                abs(balloon - actual) <= BALLOON_TOLERANCE

        wait_until(settled, 120, 'big guest reclaimed and settled at its target')
        before = dommemstat_bytes(big)
        text = scrape_text(port)
        after = dommemstat_bytes(big)
        samples = parse(text)
        mine = of_guest(samples, big.name, big.uuid)

        # The guest's figures, against libvirt's.
        assert mine['state'] == 'managed:'
        assert mine['nova_balloon_guest_ceiling_bytes'] == max_memory_bytes(big) == 384 * MIB
        # 384 MiB / 2.0 is below [balloon] default_min_memory_mb: the higher floor wins.
        assert mine['nova_balloon_guest_floor_bytes'] == 256 * MIB
        for key in ('actual', 'usable'):
            scraped = mine[{'actual': 'nova_balloon_guest_balloon_bytes',
                            'usable': 'nova_balloon_guest_usable_bytes'}[key]]
            tolerance = BALLOON_TOLERANCE if key == 'actual' else USABLE_TOLERANCE
            low, high = sorted((before[key], after[key]))
            assert low - tolerance <= scraped <= high + tolerance, (key, scraped, before, after)
        assert 0 < mine['nova_balloon_guest_demand_bytes'] < mine[
            'nova_balloon_guest_balloon_bytes']
        assert mine['nova_balloon_guest_target_changes_total'] >= 1
        assert mine['nova_balloon_guest_failed_actions_total'] == 0

        ignored = of_guest(samples, off.name, off.uuid)
        assert ignored['state'] == 'ignored:disabled'
        assert ignored['nova_balloon_guest_balloon_bytes'] == 256 * MIB
        assert 'nova_balloon_guest_target_bytes' not in ignored

        # The host's.
        host = {name: value for (name, labels), value in samples.items() if not labels}
        assert host['nova_balloon_agent_up'] == 1
        assert host['nova_balloon_host_total_bytes'] == host_memtotal_bytes()
        assert 0 < host['nova_balloon_host_free_bytes'] <= host['nova_balloon_host_total_bytes']
        assert host['nova_balloon_host_reclaimed_bytes'] >= \
            384 * MIB - mine['nova_balloon_guest_balloon_bytes']
        assert host['nova_balloon_libvirt_calls_total'] > 0
        assert host['nova_balloon_cycle_duration_seconds_count'] >= 1
        # Other guests on the host may have older statistics: only a sane figure.
        assert host['nova_balloon_stats_age_max_seconds'] >= 0
        assert samples['nova_balloon_cycles_total', frozenset({('result', 'planned')})] >= 1
        assert samples['nova_balloon_guests', frozenset({('state', 'ignored')})] >= 1
        if shutil.which('promtool'):
            linted = subprocess.run(['promtool', 'check', 'metrics'], input=text,
                                    capture_output=True, text=True, timeout=30)
            assert linted.returncode == 0 and not linted.stdout, linted

        if shutil.which('prometheus'):
            with prometheus_server(tmp_path / 'prometheus', port) as api:
                query = f'nova_balloon_guest_ceiling_bytes{{instance_uuid="{big.uuid}"}}'
                found = wait_until(lambda: prometheus_api(api, '/api/v1/query', query=query)
                                   ['result'], 30, 'prometheus scraped the agent')
                assert float(found[0]['value'][1]) == 384 * MIB
                assert found[0]['metric']['job'] == 'nova-balloon'
                rules = [rule for group in prometheus_api(api, '/api/v1/rules')['groups']
                         for rule in group['rules']]
                assert len(rules) == 4
                # Each rule evaluated without error against the real series.
                wait_until(lambda: all(rule['health'] == 'ok' for group in prometheus_api(
                    api, '/api/v1/rules')['groups'] for rule in group['rules']), 30,
                    'alert rules evaluated')
                firing = prometheus_api(api, '/api/v1/alerts')['alerts']
                assert not [a for a in firing if a['labels']['alertname'] in (
                    'NovaBalloonAgentNotCycling', 'NovaBalloonUnresponsive')], firing

        # A guest that goes leaves no series behind.
        destroy_quietly(off.dom)
        wait_until(lambda: not of_guest(parse(scrape_text(port)), off.name, off.uuid), 30,
                   'the destroyed guest gone from the metrics')
        assert agent.stop() == 0
