"""The [DEFAULT] options of nova-compute that the agent reads from its config file."""

from oslo_config import cfg

# Registered without a group, as Nova does; named for the sample generator.
default_group = cfg.OptGroup('DEFAULT')

compute_opts = [
    cfg.IntOpt('reserved_host_memory_mb',
               default=512,
               min=0,
               help="""
Nova's own option, read from nova-compute's config file (the same default):
memory in MiB that Placement never hands to guests, so that it stays for the
host's own processes. The agent keeps it for the host too: unless
``[adaptive_policy] host_reserve_mb`` is set, the adaptive policy never hands it out
to guests as buffers.

Related options:

* ``[adaptive_policy] host_reserve_mb``
* ``[balloon] host_critical_free_mb``
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(compute_opts)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {default_group: compute_opts}
