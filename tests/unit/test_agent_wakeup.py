"""The agent's loop wakes at once when a guest deflates its balloon on OOM.

libvirt reports a balloon's new size on its event thread, through the
driver's ``on_balloon_change`` hook that the agent sets when it starts. A
balloon that grows above the target the agent set was deflated by the guest
itself, short of memory: the agent must not wait out its interval.

Real objects throughout: the agent, its controller and its libvirt driver,
pointed at a libvirtd socket that does not exist, so that every cycle is an
outage (which leaves the remembered targets as they are) and needs no host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from oslo_config import cfg
from oslo_service import backend

# As nova-balloon-agent does, before the service module imports oslo.service.
backend.init_backend(backend.BackendType.THREADING)

from nova_balloon.agent import state  # noqa: E402
from nova_balloon.agent.service import BalloonAgent  # noqa: E402
from nova_balloon.conf import balloon, libvirt  # noqa: E402

MiB = 1024
UUID = '6f0b5c3e-0000-4000-8000-000000000001'
TARGET = 2048 * MiB
# The run of the domain the balloon events come from (GuestSample.run_id).
RUN = '7.0'


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[BalloonAgent]:
    """A started agent that has run its first cycle and then waits an hour."""
    # A config file, as the agent reads (an override would change the option
    # groups that every ConfigOpts of the process shares).
    config = tmp_path / 'agent.conf'
    config.write_text(f'[libvirt]\nconnection_uri = qemu+unix:///system?socket='
                      f'{tmp_path / "no-libvirtd"}\n'
                      f'[balloon]\ninterval = 3600\nstate_file = {tmp_path / "state.json"}\n')
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    libvirt.register_opts(conf)
    conf(['--config-file', str(config)], project='nova-balloon', default_config_files=[],
         default_config_dirs=[])
    # The agent adopts this target from its last state, as after a restart.
    state.write(conf.balloon.state_file,
                {'memory': {UUID: {'target_kib': TARGET, 'shrunk': True}}})
    agent = BalloonAgent(conf)
    agent.start()
    try:
        assert wait_until(lambda: agent.cycles == 1)
        assert agent.controller.memory[UUID].target_kib == TARGET
        yield agent
    finally:
        agent.stop()


def test_deflation_above_the_target_wakes_the_loop_at_once(agent: BalloonAgent) -> None:
    hook = agent.driver.on_balloon_change
    assert hook is not None
    hook(UUID, TARGET, RUN)  # the balloon at its target: the first size libvirt reports
    assert agent.cycles == 1
    hook(UUID, TARGET + 256 * MiB, RUN)  # the guest took 256 MiB back from its balloon
    assert wait_until(lambda: agent.cycles == 2), 'the loop waited out its interval'


@pytest.mark.parametrize('sizes', [
    # Shrinking toward its target: the balloon is just moving.
    [TARGET + 512 * MiB, TARGET + 256 * MiB],
    # Growing, but within the tolerance of the target.
    [TARGET - 64 * MiB, TARGET + 1 * MiB],
    # The first size seen: nothing to compare it with.
    [TARGET + 256 * MiB],
], ids=['moving-toward-target', 'within-tolerance', 'first-size'])
def test_other_balloon_changes_leave_the_loop_waiting(agent: BalloonAgent,
                                                      sizes: list[int]) -> None:
    hook = agent.driver.on_balloon_change
    assert hook is not None
    for size in sizes:
        hook(UUID, size, RUN)
    assert not wait_until(lambda: agent.cycles > 1, timeout_s=0.5)


def test_deflation_of_a_guest_without_a_target_leaves_the_loop_waiting(
        agent: BalloonAgent) -> None:
    hook = agent.driver.on_balloon_change
    assert hook is not None
    other = '6f0b5c3e-0000-4000-8000-000000000002'
    hook(other, TARGET, RUN)
    hook(other, TARGET + 256 * MiB, RUN)
    assert not wait_until(lambda: agent.cycles > 1, timeout_s=0.5)


def test_a_new_run_starting_at_full_size_is_no_deflation(agent: BalloonAgent) -> None:
    # A hard reboot or restore: the new QEMU's balloon starts at full size.
    hook = agent.driver.on_balloon_change
    assert hook is not None
    hook(UUID, TARGET, RUN)
    hook(UUID, TARGET + 256 * MiB, '8.0')
    assert not wait_until(lambda: agent.cycles > 1, timeout_s=0.5)
