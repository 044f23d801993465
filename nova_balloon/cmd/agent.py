"""nova-balloon-agent: the compute-node service.

Runs on oslo.service's threading backend (as nova-compute does since Nova 34),
in the main process (no_fork=True). Point it at the compute node's config,
for example ``nova-balloon-agent --config-file /etc/nova/nova-cpu.conf``.

One agent per host: it takes ``[balloon] lock_file`` before anything else,
and a second agent exits with status 1, naming the process that holds it.
"""

from __future__ import annotations

import sys

from oslo_service import backend

# Before any other oslo_service import: the threading backend, no eventlet.
backend.init_backend(backend.BackendType.THREADING)

from oslo_log import log as logging  # noqa: E402
from oslo_service import service  # noqa: E402
from stevedore import exception as stevedore_exception  # noqa: E402

from nova_balloon.cmd import common  # noqa: E402
from nova_balloon.conf import CONF  # noqa: E402

LOG = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    logging.register_options(CONF)
    common.parse_args(sys.argv[1:] if argv is None else argv)
    logging.setup(CONF, common.PROJECT)
    from nova_balloon.agent import lock
    from nova_balloon.agent.service import BalloonAgent
    path = lock.lock_path(CONF)
    try:
        held = lock.acquire(path)
    except lock.AlreadyRunning as exc:
        LOG.error('Not starting: %s', exc)
        sys.exit(f'{common.PROJECT}: not starting: {exc}')
    except OSError as exc:
        sys.exit(f'{common.PROJECT}: cannot take the lock [balloon] lock_file {path}: {exc}')
    try:
        agent = BalloonAgent(CONF)
    except (stevedore_exception.NoMatches, stevedore_exception.MultipleMatches,
            TypeError, ImportError) as exc:
        sys.exit(f'{common.PROJECT}: cannot load [balloon] policy '
                 f'{CONF.balloon.policy!r}: {exc}')
    # Returns only when the agent stopped by itself (SIGTERM ends the
    # process in the launcher's handler, with status 0).
    service.launch(CONF, agent, workers=1, no_fork=True, restart_method='mutate')
    agent.stop()
    held.close()
    sys.exit(agent.exit_code)
