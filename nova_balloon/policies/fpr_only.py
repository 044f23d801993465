"""Baseline ``fpr-only``: every balloon at the flavor's full memory, always.

What a Nova 34 node gets from free page reporting alone: pages a guest frees
go back to the host without a balloon move, until the guest's page cache
fills them again. The control-quality benchmark sets it beside the balloon
policies under its host model v2. The safety rules and the host-critical
reclaim still apply, as to every policy.
"""

from __future__ import annotations

from collections.abc import Sequence

from nova_balloon.model import GuestView, HostSnapshot
from nova_balloon.policies import Policy


class FreePageReportingOnlyPolicy(Policy):
    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        return {guest.uuid: guest.ceiling_kib for guest in guests}
