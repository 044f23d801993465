"""What the controller needs from a hypervisor: the driver interface.

The libvirt driver, the simulator and the tests implement it, so the same
controller, policies and safety rules run against all three.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from nova_balloon.model import GuestSample


class DriverUnavailable(Exception):
    """The hypervisor cannot be reached right now (for example libvirtd is down)."""


class GuestActionFailed(Exception):
    """An action on one guest failed; the cycle goes on for the others."""


class GuestGone(GuestActionFailed):
    """The guest disappeared or stopped between collection and action."""


class GuestBusy(GuestActionFailed):
    """The guest has a job (such as a migration) that ballooning must not disturb."""


@dataclasses.dataclass(frozen=True, slots=True)
class Collection:
    """One collection: the host's memory and every active guest's sample."""

    host_total_kib: int
    host_available_kib: int
    samples: list[GuestSample]


class Driver(Protocol):
    def collect(self) -> Collection:
        """Collect host memory and all guests' balloon statistics.

        Raises DriverUnavailable when the hypervisor cannot be reached.
        """

    def set_target(self, uuid: str, target_kib: int) -> None:
        """Set a guest's live balloon target; raises GuestActionFailed."""

    def set_stats_period(self, uuid: str, period_s: int) -> None:
        """Make the guest refresh its balloon statistics every period_s seconds.

        Raises GuestActionFailed or DriverUnavailable.
        """
