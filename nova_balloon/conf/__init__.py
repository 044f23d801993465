"""Configuration of nova-balloon: one module per option group, as in nova.conf."""

from oslo_config import cfg

from nova_balloon.conf import balloon, libvirt

CONF = cfg.CONF

balloon.register_opts(CONF)
libvirt.register_opts(CONF)
