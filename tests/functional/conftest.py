"""Shared fixtures of the functional tests: real libvirtd, real guests.

These tests boot TCG guests through qemu:///system, so they need root and
the Debian packages of bindep.txt; they skip (with the reason) elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.functional.guests import BootedGuest, booted_guest, live_connection

REPO_ROOT = Path(__file__).resolve().parents[2]
GUEST_IMAGE_DIR = REPO_ROOT / "build" / "guest"

BootGuest = Callable[..., BootedGuest]


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker so -m functional / -m 'not functional' work."""
    config.addinivalue_line(
        "markers",
        "functional: boots real libvirt/QEMU (TCG) guests; needs root",
    )


def _require_root() -> None:
    """Skip rather than fail on machines where we cannot run libvirtd."""
    if os.geteuid() != 0:
        pytest.skip("functional tests need root (libvirtd, /boot kernel)")


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """Directory with vmlinuz + initramfs.img, (re)built when stale."""
    _require_root()
    subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "tools" / "build-guest-image.sh"),
            str(GUEST_IMAGE_DIR),
        ],
        check=True,
    )
    return GUEST_IMAGE_DIR


@pytest.fixture
def libvirt_conn() -> libvirt.virConnect:
    """A live connection to qemu:///system (see live_connection)."""
    _require_root()
    return live_connection()


@pytest.fixture
def boot_guest(
    libvirt_conn: libvirt.virConnect,
    guest_image: Path,
    tmp_path: Path,
) -> Iterator[BootGuest]:
    """Factory booting guests that are destroyed when the test ends.

    ``boot_guest(memory_mib=256, flavor_name=..., extra_specs=..., **kw)``
    with the keywords of guests.booted_guest / nova_domain_xml; the name
    defaults to a unique ``nbtest-XXXXXXXX``.
    """
    with contextlib.ExitStack() as stack:

        def boot(
            *,
            memory_mib: int,
            flavor_name: str = "m1.nbtest",
            extra_specs: Mapping[str, str] | None = None,
            name: str | None = None,
            **kwargs: Any,
        ) -> BootedGuest:
            return stack.enter_context(
                booted_guest(
                    libvirt_conn,
                    name=name or f"nbtest-{uuid.uuid4().hex[:8]}",
                    memory_mib=memory_mib,
                    flavor_name=flavor_name,
                    extra_specs=extra_specs,
                    image_dir=guest_image,
                    workdir=tmp_path,
                    **kwargs,
                )
            )

        yield boot
