"""The agent wired to its metrics: each cycle counted, OOM deflation events counted.

Real objects throughout, as in test_agent_wakeup: the agent, its controller
and its libvirt driver pointed at a libvirtd socket that does not exist, so
that every cycle is an outage and needs no host; the endpoint is scraped
over HTTP.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from oslo_config import cfg
from oslo_service import backend

# As nova-balloon-agent does, before the service module imports oslo.service.
backend.init_backend(backend.BackendType.THREADING)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from nova_balloon.agent import state  # noqa: E402
from nova_balloon.agent.service import BalloonAgent  # noqa: E402
from nova_balloon.conf import balloon, libvirt, metrics  # noqa: E402

MiB = 1024
UUID = '6f0b5c3e-0000-4000-8000-000000000001'
TARGET = 2048 * MiB
# The run of the domain libvirt's events name (the domain id and reboots).
RUN = '7.0'


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[BalloonAgent, int]]:
    """A started agent with metrics on, that has run its first cycle and then waits."""
    port = free_port()
    config = tmp_path / 'agent.conf'
    config.write_text(f'[libvirt]\nconnection_uri = qemu+unix:///system?socket='
                      f'{tmp_path / "no-libvirtd"}\n'
                      f'[balloon]\ninterval = 3600\nstate_file = {tmp_path / "state.json"}\n'
                      f'[metrics]\nlisten = 127.0.0.1:{port}\n')
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    libvirt.register_opts(conf)
    metrics.register_opts(conf)
    conf(['--config-file', str(config)], project='nova-balloon', default_config_files=[],
         default_config_dirs=[])
    state.write(conf.balloon.state_file,
                {'memory': {UUID: {'target_kib': TARGET, 'shrunk': True}}})
    agent = BalloonAgent(conf)
    agent.start()
    try:
        assert wait_until(lambda: agent.cycles == 1, 30)
        yield agent, port
    finally:
        agent.stop()
        if agent.metrics is not None:
            agent.metrics.close()


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10) as reply:
        text = reply.read().decode()
    return {s.name + ''.join(f',{k}={v}' for k, v in sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_each_cycle_is_counted_and_an_outage_shows(agent: tuple[BalloonAgent, int]) -> None:
    service, port = agent
    # agent.cycles counts the cycle a moment before the metrics do.
    assert wait_until(lambda: scrape(port)['nova_balloon_cycles_total,'
                                           'result=libvirt_unreachable'] == 1, 30)
    got = scrape(port)
    assert got['nova_balloon_cycles_total,result=libvirt_unreachable'] == 1
    assert got['nova_balloon_libvirt_errors_total,kind=unreachable'] == 1
    assert got['nova_balloon_agent_up'] == 0
    assert got['nova_balloon_cycle_duration_seconds_count'] == 1
    assert 'nova_balloon_cycle_last_success_timestamp_seconds' not in got


def test_an_oom_deflation_event_is_counted(agent: tuple[BalloonAgent, int]) -> None:
    service, _ = agent
    assert service.metrics is not None
    hook = service.driver.on_balloon_change
    assert hook is not None
    hook(UUID, TARGET, RUN)
    hook(UUID, TARGET - 128 * MiB, RUN)  # moving down: no deflation
    hook(UUID, TARGET + 256 * MiB, RUN)  # above its target, growing: the guest deflated
    # Outages leave no plan to render the guest from: read the count itself.
    assert service.metrics._oom_deflations == {UUID: 1}
