"""What every test process shares: oslo.service's threading backend.

The agent chooses it before any other oslo_service import
(nova_balloon/cmd/agent.py). A test module that imports oslo.messaging
first would otherwise settle the process on eventlet, and every later module
that starts the agent's service in-process would fail to collect, depending
only on the order pytest collects them in.
"""

from oslo_service import backend

backend.init_backend(backend.BackendType.THREADING)
