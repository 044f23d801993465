"""Entry point of oslo-config-generator: every option group of nova-balloon."""

from oslo_config import cfg

from nova_balloon.conf import (
    adaptive_policy,
    balloon,
    capacity,
    compute,
    libvirt,
    metrics,
    notifications,
    placement_ratio,
)

_MODULES = (balloon, adaptive_policy, compute, libvirt, placement_ratio, metrics,
            notifications, capacity)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(group, opts) for module in _MODULES
            for group, opts in module.list_opts().items()]
