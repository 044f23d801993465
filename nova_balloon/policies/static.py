"""Baseline ``static``: never change a target.

The reference point of the benchmark: what a node gets with no balloon
control at all, every guest keeping the memory it started with. The safety
rules still apply, so a guest started outside its flavor's bounds is brought
inside them.
"""

from __future__ import annotations

from collections.abc import Sequence

from nova_balloon.model import GuestView, HostSnapshot
from nova_balloon.policies import Policy


class StaticPolicy(Policy):
    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> dict[str, int]:
        return {}
