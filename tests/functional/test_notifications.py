"""Notifications end to end: a real RabbitMQ, a real agent, a real guest.

The broker is Debian's rabbitmq-server, started (once, idempotently) by
tools/start-rabbitmq.sh, as tools/start-libvirtd.sh starts libvirtd. Each
test sends to a topic of its own and consumes from the broker with an
oslo.messaging notification listener, as any consumer would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
from oslo_config import cfg

from nova_balloon.conf import balloon
from nova_balloon.notifications import Notifier
from nova_balloon.notifications import events as ev
from tests.functional.agent_process import BIN, Agent
from tests.functional.conftest import REPO_ROOT, BootGuest
from tests.functional.guests import wait_until

pytestmark = pytest.mark.functional

MIB = 1024


@pytest.fixture(scope="module")
def broker_url() -> str:
    """The test broker's transport URL, from tools/start-rabbitmq.sh."""
    if os.geteuid() != 0:
        pytest.skip("the test broker needs root to start (tools/start-rabbitmq.sh)")
    out = subprocess.run(["bash", str(REPO_ROOT / "tools" / "start-rabbitmq.sh")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Received:
    """A notification endpoint that keeps what it consumes, in order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def _keep(self, priority: str, publisher_id: str, event_type: str,
              payload: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append({"priority": priority, "publisher_id": publisher_id,
                                  "event_type": event_type, "payload": payload})

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep("INFO", publisher_id, event_type, payload)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._keep("WARN", publisher_id, event_type, payload)

    def of(self, event_type: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["event_type"] == event_type]

    def types(self) -> list[str]:
        with self._lock:
            return [m["event_type"] for m in self.messages]


@contextlib.contextmanager
def listening(url: str, topic: str) -> Iterator[Received]:
    conf = cfg.ConfigOpts()
    conf([])
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    received = Received()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [received], executor="threading")
    listener.start()
    try:
        yield received
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()


def test_notifier_sends_to_the_broker(broker_url: str, tmp_path: Path) -> None:
    """The thin part alone: envelope, priorities and payloads as a consumer gets them.

    The Placement ratio mode's change goes through the same notifier.
    """
    topic = f"nb_notify_{uuid.uuid4().hex[:8]}"
    config = tmp_path / "notify.conf"
    config.write_text(f"[DEFAULT]\nhost = nb-compute\ntransport_url = {broker_url}\n"
                      "[oslo_messaging_notifications]\ndriver = messagingv2\n"
                      f"topics = {topic}\n")
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    conf(["--config-file", str(config)])
    notifier = Notifier(conf)
    assert notifier.enabled
    figures = ev.HostFigures(total_kib=8192 * MIB, available_kib=300 * MIB, untouched_kib=0,
                             critical_kib=512 * MIB, guests_reclaimed=1,
                             reclaimed_kib=256 * MIB)
    [sent] = ev.host_events(False, True, lambda: figures, "nb-compute")
    with listening(broker_url, topic) as received:
        notifier.agent_started()
        notifier.send([sent])
        notifier.placement_ratio_changed("nb-compute.example.org", 1.0, 1.2, 1.5, 7 * 86400,
                                         0.001, "1.00 -> 1.20")
        notifier.agent_stopped({})
        wait_until(lambda: len(received.messages) == 4, 30, "four notifications")
    assert received.types() == ["balloon.agent.start", "balloon.host.critical",
                                "balloon.placement.ratio_changed", "balloon.agent.stop"]
    start, host, ratio, stop = received.messages
    assert ratio["priority"] == "INFO"
    assert ratio["payload"]["nova_object.data"] == {
        "host": "nb-compute", "provider": "nb-compute.example.org", "ratio_before": 1.0,
        "ratio_after": 1.2, "advised": 1.5, "window_hours": 168.0, "risk_percent": 0.1,
        "reason": "1.00 -> 1.20"}
    assert {m["publisher_id"] for m in received.messages} == {"nova-balloon:nb-compute"}
    assert (start["priority"], host["priority"], stop["priority"]) == ("INFO", "WARN", "INFO")
    assert host["payload"] == sent.payload
    assert stop["payload"]["nova_object.data"]["guests_restored"] == 0
    assert start["payload"]["nova_object.name"] == "BalloonAgentPayload"


class NotifyingAgent(Agent):
    """agent_process.Agent with oslo.messaging's options in its config file.

    Agent writes its config and starts the process in one go; this one adds
    the [DEFAULT] transport_url and [oslo_messaging_notifications] a compute
    node's nova.conf would have (oslo.config's environment variables cannot
    carry the multi-valued ``driver``).
    """

    def __init__(self, workdir: Path, url: str, topic: str, **options: object):
        self.workdir = workdir
        self.log_path = workdir / "agent.log"
        self.stderr_path = workdir / "agent.log.stderr"
        self.state_path = workdir / "state.json"
        self.config_path = workdir / "agent.conf"
        general = {"interval": 1, "stats_period": 1, "state_file": self.state_path, **options}
        self.config_path.write_text(
            f"[DEFAULT]\nlog_file = {self.log_path}\ndebug = true\nhost = nb-compute\n"
            f"transport_url = {url}\n"
            "[oslo_messaging_notifications]\ndriver = messagingv2\n"
            f"topics = {topic}\n"
            "[libvirt]\nconnection_uri = qemu:///system\n"
            "[balloon]\n" + "".join(f"{k} = {v}\n" for k, v in general.items())
            + "[adaptive_policy]\ndemand_half_life = 5\n")
        self.process = subprocess.Popen(
            [str(BIN / "nova-balloon-agent"), "--config-file", str(self.config_path)],
            stdout=subprocess.DEVNULL, stderr=self.stderr_path.open("w"))


def test_agent_notifies_reclaim_and_restore_of_a_real_guest(
    broker_url: str, boot_guest: BootGuest, tmp_path: Path
) -> None:
    guest = boot_guest(memory_mib=512, flavor_name="m1.notify",
                       extra_specs={"balloon:overcommit_ratio": "2.0"})
    topic = f"nb_agent_{uuid.uuid4().hex[:8]}"
    with listening(broker_url, topic) as received:
        agent = NotifyingAgent(tmp_path, broker_url, topic)
        try:
            def reclaimed() -> list[dict[str, Any]]:
                return [m for m in received.of("balloon.guest.reclaimed")
                        if m["payload"]["nova_object.data"]["uuid"] == guest.uuid]

            [notice] = wait_until(reclaimed, 120, "balloon.guest.reclaimed for the guest")
            # The state holds while the agent shrinks the guest further: no repeat.
            wait_until(lambda: guest.dom.memoryStats()["actual"] // MIB <= 256 + 16, 90,
                       "the guest reclaimed to its floor")
            assert len(reclaimed()) == 1
            assert agent.stop(signal.SIGTERM) == 0
        finally:
            if agent.process.poll() is None:
                agent.stop(signal.SIGKILL)
        wait_until(lambda: received.of("balloon.agent.stop"), 30, "balloon.agent.stop")
    log = agent.log() + agent.stderr_path.read_text()
    assert "Traceback" not in log, log[-5000:]
    assert "Notifications on: driver messagingv2" in log

    data = notice["payload"]["nova_object.data"]
    assert notice["publisher_id"] == "nova-balloon:nb-compute"
    assert notice["priority"] == "INFO"
    assert notice["payload"]["nova_object.version"] == "1.0"
    assert (data["host"], data["name"], data["flavor"]) == ("nb-compute", guest.name,
                                                            "m1.notify")
    assert (data["memory_mb"], data["floor_mb"]) == (512, 256)
    assert 256 <= data["target_mb"] < 512

    [restored] = [m for m in received.of("balloon.guest.restored")
                  if m["payload"]["nova_object.data"]["uuid"] == guest.uuid]
    assert restored["payload"]["nova_object.data"]["target_mb"] == 512
    assert guest.dom.memoryStats()["actual"] // MIB == 512
    [stop] = received.of("balloon.agent.stop")
    assert stop["payload"]["nova_object.data"]["guests_restored"] >= 1
    types = received.types()
    assert types[0] == "balloon.agent.start"
    assert types.index("balloon.guest.reclaimed") < types.index("balloon.guest.restored") \
        < types.index("balloon.agent.stop") == len(types) - 1
