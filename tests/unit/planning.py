"""The planner settings most unit tests share: a 4 GiB guest, 64 MiB / 10 % headroom.

One place for them, so that a test module states only what it changes.
"""

from __future__ import annotations

from typing import Any

from nova_balloon.controller.planner import Settings
from nova_balloon.flavor_policy import PolicyDefaults
from nova_balloon.safety import SafetyLimits

MiB = 1024
GiB = 1024 * MiB
CEILING = 4 * GiB


def limits(max_shrink_kib: int = 128 * MiB) -> SafetyLimits:
    """Headroom: the larger of 64 MiB and 10 % of the ceiling (409.6 MiB of CEILING)."""
    return SafetyLimits(headroom_kib=64 * MiB, headroom_percent=10.0,
                        max_shrink_kib=max_shrink_kib, max_shrink_percent=0.0,
                        dead_band_kib=16 * MiB)


LIMITS = limits()


def settings(overcommit_ratio: float = 2.0, safety: SafetyLimits = LIMITS,
             **options: Any) -> Settings:
    """Default ratio 2.0 (a guest with no balloon keys is managed: floor 2 GiB of
    CEILING), cycles and statistics every 2 s; ``options``, other Settings fields."""
    return Settings(defaults=PolicyDefaults(overcommit_ratio=overcommit_ratio,
                                            min_memory_mb=256, shares=1000),
                    manage_unmanaged_guests=False, limits=safety, interval_s=2.0,
                    stats_period_s=2, **options)


SETTINGS = settings()
