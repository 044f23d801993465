"""The [libvirt] options the agent shares with nova-compute's config file."""

from oslo_config import cfg

libvirt_group = cfg.OptGroup('libvirt', title='Libvirt options (shared with Nova)')

libvirt_opts = [
    cfg.StrOpt('connection_uri',
               default='',
               help="""
Libvirt connection URI, read from the same option of nova-compute's config
file so that the agent talks to the hypervisor Nova uses. Empty means
``qemu:///system``.
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(libvirt_group)
    conf.register_opts(libvirt_opts, group=libvirt_group)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {libvirt_group: libvirt_opts}
