"""The thin part of the notifications: configuration, and never waiting for a broker.

These use oslo.messaging's real rabbit driver against a port where nothing
listens (127.0.0.1:1), the broker that cannot be reached, and against a
socket that accepts and never answers, the slow one. Sending to a real
broker is tests/functional/test_notifications.py.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from oslo_config import cfg

from nova_balloon.conf import balloon
from nova_balloon.notifications import events as ev
from nova_balloon.notifications import notifier as notifier_module
from nova_balloon.notifications.notifier import Notifier

UNREACHABLE = 'rabbit://guest:guest@127.0.0.1:1/'


def notifier_for(tmp_path: Path, text: str) -> Notifier:
    config = tmp_path / 'agent.conf'
    config.write_text(text)
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    conf(['--config-file', str(config)], default_config_files=[])
    return Notifier(conf)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == notifier_module.__name__ and r.levelno == logging.WARNING]


@pytest.mark.parametrize('section', ['', '[oslo_messaging_notifications]\ndriver = noop\n'])
def test_off_unless_a_driver_is_set(tmp_path, caplog, section):
    caplog.set_level(logging.INFO)
    notifier = notifier_for(tmp_path, f'[DEFAULT]\ntransport_url = {UNREACHABLE}\n{section}')
    assert not notifier.enabled
    assert 'Notifications off: [oslo_messaging_notifications] driver is not set' in caplog.text
    notifier.agent_started()
    notifier.send([ev.Event(ev.EventType.HOST_NORMAL, {})])
    notifier.agent_stopped({})


def test_a_transport_url_that_cannot_be_used_leaves_them_off_with_a_warning(tmp_path, caplog):
    notifier = notifier_for(tmp_path, '[DEFAULT]\ntransport_url = nonsense\n'
                            '[oslo_messaging_notifications]\ndriver = messagingv2\n')
    assert not notifier.enabled
    [warning] = warnings_of(caplog)
    assert 'transport URL' in warning and 'unusable' in warning and 'No scheme' in warning


def test_an_unknown_driver_is_named(tmp_path, caplog):
    notifier = notifier_for(tmp_path, f'[DEFAULT]\ntransport_url = {UNREACHABLE}\n'
                            '[oslo_messaging_notifications]\ndriver = messagingv3\n')
    [warning] = warnings_of(caplog)
    assert warning.startswith('Notifications off: [oslo_messaging_notifications] driver '
                              'messagingv3 unknown (oslo.messaging has log, messaging, '
                              'messagingv2, noop')
    assert not notifier.enabled


def test_an_unknown_driver_next_to_a_known_one_is_named(tmp_path, caplog):
    notifier = notifier_for(tmp_path, f'[DEFAULT]\ntransport_url = {UNREACHABLE}\n'
                            '[oslo_messaging_notifications]\ndriver = log\n'
                            'driver = messagingv3\n')
    [warning] = warnings_of(caplog)
    assert warning.startswith('Notifications: [oslo_messaging_notifications] driver '
                              'messagingv3 unknown')
    assert notifier.enabled
    notifier.close()


def test_publisher_is_nova_balloon_and_the_host(tmp_path):
    notifier = notifier_for(tmp_path, '[DEFAULT]\nhost = compute-7\n')
    assert notifier.publisher_id == 'nova-balloon:compute-7'


def test_a_send_the_broker_refuses_is_one_warning(tmp_path, caplog):
    """oslo.messaging logs a failed send at ERROR with a traceback and the payload."""
    notifier = notifier_for(tmp_path, f'[DEFAULT]\ntransport_url = {UNREACHABLE}\n'
                            '[oslo_messaging_notifications]\ndriver = messagingv2\n')
    assert notifier.enabled
    notifier.agent_started()
    notifier.close(10.0)
    [warning] = warnings_of(caplog)
    assert warning.startswith('Notification balloon.agent.start not sent: ')
    assert 'Connection refused' in warning
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A broker that accepts connections and never answers: the slowest there is."""
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(16)
        yield f'rabbit://guest:guest@127.0.0.1:{server.getsockname()[1]}/'


def test_a_slow_broker_never_holds_the_caller_up(tmp_path, caplog, monkeypatch,
                                                  silent_broker):
    """The sender waits for the broker, the agent does not.

    Past the queue's bound, notifications are dropped with one warning, and
    a stopping agent waits no longer than the close timeout.
    """
    monkeypatch.setattr(notifier_module, 'QUEUE_SIZE', 3)
    notifier = notifier_for(tmp_path, f'[DEFAULT]\ntransport_url = {silent_broker}\n'
                            '[oslo_messaging_notifications]\ndriver = messagingv2\n')
    assert notifier.enabled
    event = ev.agent_event(ev.EventType.AGENT_START, 'h', '1', 'adaptive', 2, False, True)
    started = time.monotonic()
    for _ in range(10):
        notifier.send([event])
    assert time.monotonic() - started < 0.5
    dropped = [w for w in warnings_of(caplog) if 'dropping balloon.agent.start' in w]
    assert len(dropped) == 1, warnings_of(caplog)
    started = time.monotonic()
    notifier.close(1.0)
    assert time.monotonic() - started < 2.0
    assert any('not sent within 1 s of stopping' in w for w in warnings_of(caplog))
