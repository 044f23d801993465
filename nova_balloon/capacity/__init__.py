"""Capacity advice: the agent's per-minute history of what its guests needed,
and the ``ram_allocation_ratio`` that history supports at a stated risk."""
