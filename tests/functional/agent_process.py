"""nova-balloon-agent as a process, started the way an operator starts it."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from nova_balloon.conf import adaptive_policy, balloon

BIN = Path(sys.executable).parent


def default_timing() -> dict[str, object]:
    """The agent's own defaults for the timing that Agent otherwise speeds up."""
    return {opt.name: opt.default for opt in balloon.ALL_OPTS
            if opt.name in ("interval", "stats_period")}


class Agent:
    """A nova-balloon-agent process with its own config, log and state file."""

    def __init__(self, workdir: Path, log_name: str = "agent.log",
                 connection_uri: str = "qemu:///system", **options: object):
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.stderr_path = workdir / f"{log_name}.stderr"
        self.state_path = workdir / "state.json"
        self.config_path = workdir / "agent.conf"
        general = {"interval": 1, "stats_period": 1, "state_file": self.state_path, **options}
        # The adaptive policy's own options go to their own group.
        policy_names = {opt.name for opt in adaptive_policy.adaptive_policy_opts}
        policy = {k: general.pop(k) for k in list(general) if k in policy_names}
        self.config_path.write_text(
            f"[DEFAULT]\nlog_file = {self.log_path}\ndebug = true\n"
            f"[libvirt]\nconnection_uri = {connection_uri}\n"
            "[balloon]\n" + "".join(f"{k} = {v}\n" for k, v in general.items())
            + "[adaptive_policy]\n" + "".join(f"{k} = {v}\n" for k, v in policy.items())
            # What the agent keeps across reboots stays in the test's directory.
            + f"[capacity]\nhistory_file = {workdir / 'capacity-history'}\n"
            + f"[placement_ratio]\nstate_file = {workdir / 'placement-ratio.json'}\n"
        )
        self.process = subprocess.Popen(
            [str(BIN / "nova-balloon-agent"), "--config-file", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=self.stderr_path.open("w"),
        )

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def row(self, name: str) -> dict:
        return next((r for r in self.state().get("guests", []) if r["name"] == name), {})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def status(self) -> dict:
        out = subprocess.run(
            [
                str(BIN / "nova-balloon"),
                "--config-file",
                str(self.config_path),
                "status",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return json.loads(out.stdout)


@contextlib.contextmanager
def running_agent(workdir: Path, log_name: str = "agent.log",
                  connection_uri: str = "qemu:///system", **options: object) -> Iterator[Agent]:
    """An agent for the with-block; it must not have logged a traceback."""
    workdir.mkdir(parents=True, exist_ok=True)
    agent = Agent(workdir, log_name, connection_uri, **options)
    try:
        yield agent
    finally:
        if agent.process.poll() is None:
            agent.stop(signal.SIGKILL)
        stderr = agent.stderr_path.read_text()
        assert "Traceback" not in agent.log() + stderr, agent.log()[-5000:] + stderr
