"""A short run of the soak script (tools/soak.py): the long one is run by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.functional
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_short_soak(guest_image: Path, tmp_path: Path) -> None:
    # Faults come in turns, the lifecycle ones first: two minutes at one
    # every 8 s or so (faults take their time) go through all of those.
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "soak.py"), "--minutes", "2",
         "--guests", "2", "--fault-every", "8", "--format", "json",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["guest OOM kills"] == 0
    assert report["agent exceptions"] == 0
    assert report["invariant violations"] == 0
    faults = report["faults injected"]
    for lifecycle in ("guest rebooted inside", "hard reboot", "managed save and restore",
                      "disk attached and detached", "ballooning disabled"):
        assert faults[lifecycle] >= 1, faults
    assert report["cycles run"] >= 80
