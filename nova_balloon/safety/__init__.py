"""Safety rules that every proposed target passes through; no policy bypasses them."""

from nova_balloon.safety.rules import SafetyLimits, guard, guard_target, is_short

__all__ = ['SafetyLimits', 'guard', 'guard_target', 'is_short']
