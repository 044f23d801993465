"""Configuration of nova-balloon: one module per option group, as in nova.conf.

The agent keeps its own ConfigOpts rather than oslo.config's global CONF: it
reads nova-compute's config files, and sharing the global object with Nova's
code in one process (Nova's API loading our extra spec validators, or tests
that import both) would register ``[libvirt] connection_uri`` twice.
"""

from oslo_config import cfg

from nova_balloon.conf import (
    adaptive_policy,
    balloon,
    capacity,
    libvirt,
    metrics,
    notifications,
    placement_ratio,
)

CONF = cfg.ConfigOpts()

balloon.register_opts(CONF)
adaptive_policy.register_opts(CONF)
libvirt.register_opts(CONF)
placement_ratio.register_opts(CONF)
metrics.register_opts(CONF)
notifications.register_opts(CONF)
capacity.register_opts(CONF)
