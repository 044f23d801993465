"""The optional mode that sets the compute node's MEMORY_MB allocation ratio in Placement.

``guard`` holds the pure guard rails; ``client`` talks to Placement through
keystoneauth as nova-compute does; ``updater`` ties the capacity advice,
the guard rails and the client together once per ``[placement_ratio] interval``.
"""
