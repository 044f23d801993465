"""The agent exits with status 1 after [balloon] max_failed_cycles failed cycles."""

from __future__ import annotations

import threading
from pathlib import Path

from oslo_config import cfg
from oslo_service import backend

# As nova-balloon-agent does, before the service module imports oslo.service.
backend.init_backend(backend.BackendType.THREADING)

from nova_balloon import conf as nb_conf  # noqa: E402
from nova_balloon.agent.service import BalloonAgent  # noqa: E402
from tests.unit.test_cycle_process import (  # noqa: E402
    BrokenPolicy,
    GiB,
    RecordingDriver,
    sample,
)


def test_repeated_failures_end_the_loop_with_status_1(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    nb_conf.balloon.register_opts(conf)
    nb_conf.libvirt.register_opts(conf)
    path = tmp_path / 'agent.conf'
    path.write_text(f'[balloon]\ninterval = 1\nmax_failed_cycles = 3\n'
                    f'default_overcommit_ratio = 2\nstate_file = {tmp_path}/state.json\n')
    conf(['--config-file', str(path)])
    agent = BalloonAgent(conf)
    # A policy with a bug, on guests the test describes (no hypervisor needed).
    driver = RecordingDriver([sample('short', 2 * GiB, 10 * 1024)])
    agent.controller.policy = BrokenPolicy()
    agent.controller.driver = driver
    loop = threading.Thread(target=agent._loop, daemon=True)
    loop.start()
    loop.join(30)
    agent._stopping.set()
    assert not loop.is_alive(), 'the agent went on cycling'
    assert agent.exit_code == 1
    assert agent.controller.failed_cycles == 3
    assert driver.targets == [('short', 4 * GiB)] * 3
