"""Safety rules that every proposed target passes through; no policy bypasses them."""

from nova_balloon.safety.rules import SafetyLimits, guard

__all__ = ['SafetyLimits', 'guard']
