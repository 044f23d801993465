"""Detection of balloons that do not respond, apart from the arithmetic.

As squeezed does for Xen balloon drivers: a guest whose balloon made no
progress toward its target for a bounded time, or whose statistics froze, is
unresponsive. It is then given its full memory back (which it takes whenever
its driver answers again), never shrunk, and re-tried after a pause.
"""

from __future__ import annotations

from nova_balloon.model import KIB_PER_MIB

# A balloon within this of its target has reached it (the guest balloons in
# whole pages and QEMU reports the size rounded).
SETTLE_TOLERANCE_KIB = 2 * KIB_PER_MIB


def unresponsive_reason(*, now: float, actual_kib: int, target_kib: int | None,
                        target_set_at: float | None, actual_since: float,
                        stats_age_s: float | None, after_s: float,
                        stats_missing_since: float | None = None) -> str | None:
    """Why the balloon counts as unresponsive now, or None if it responds.

    A guest without statistics is waiting for them, not unresponsive, for
    ``after_s`` from ``stats_missing_since`` (when it last reported any, or
    when the agent first saw it): a booting guest has not loaded its balloon
    driver yet, and QEMU reports none for a moment after the stats period
    changes.
    """
    if stats_age_s is None:
        if stats_missing_since is not None and now - stats_missing_since <= after_s:
            return None
        return 'the guest reports no balloon statistics'
    if stats_age_s > after_s:
        return f'balloon statistics frozen for {stats_age_s:.0f} s'
    if target_kib is None or target_set_at is None or \
            abs(actual_kib - target_kib) <= SETTLE_TOLERANCE_KIB:
        return None
    stuck_for = now - max(target_set_at, actual_since)
    if stuck_for > after_s:
        return (f'balloon stuck at {actual_kib // KIB_PER_MIB} MiB for {stuck_for:.0f} s, '
                f'target {target_kib // KIB_PER_MIB} MiB')
    return None
