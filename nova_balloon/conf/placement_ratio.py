"""[placement_ratio]: the optional mode that sets MEMORY_MB's allocation ratio in Placement.

It also registers the Nova options the mode reads from nova-compute's config
files: ``[DEFAULT] ram_allocation_ratio`` and ``initial_ram_allocation_ratio``
(whether nova-compute would overwrite the ratio) and the ``[placement]``
keystoneauth options (the credentials nova-compute uses for Placement),
registered with keystoneauth1.loading as Nova's ``nova.conf.placement`` does.
The sample leaves ``[placement]`` out: it is nova-compute's section, as
Nova's configuration reference describes it, and its options depend on the
``auth_type`` plug-in.
"""

from __future__ import annotations

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

placement_ratio_group = cfg.OptGroup(
    'placement_ratio', title="MEMORY_MB's allocation ratio in Placement, from history")

placement_ratio_opts = [
    cfg.BoolOpt('enabled',
                default=False,
                help="""
Set this compute node's MEMORY_MB ``allocation_ratio`` in Placement to the
ratio its capacity history supports (the ratio ``[placement_ratio] risk_percent``
of ``window`` allows), within the guard rails below, at most once per
``interval``. Off by default: a ratio decides how many guests land on the
host.

The agent refuses to act (and says why at start) when nova-compute's config
sets ``[DEFAULT] ram_allocation_ratio``: nova-compute then writes that value
into Placement at each resource update, undoing the agent's.

Related options:

* ``[DEFAULT] ram_allocation_ratio``
* ``[placement]`` (the credentials)
"""),
    cfg.BoolOpt('dry_run',
                default=False,
                help="""
Log the ratio the mode would set, with the numbers, and leave Placement as it
is. Also in force when ``[balloon] dry_run`` is true.
"""),
    cfg.FloatOpt('min_ratio',
                 default=1.0,
                 min=0.1,
                 max=64.0,
                 help="""
The lowest ratio the mode sets, whatever the history says.

Related options:

* ``max_ratio`` (must not be below this)
"""),
    cfg.FloatOpt('max_ratio',
                 default=1.5,
                 min=0.1,
                 max=64.0,
                 help="""
The highest ratio the mode sets, whatever the history says. Keep it at or
below what the flavors' ``balloon:overcommit_ratio`` floors allow
(``nova-balloon recommend`` shows that bound).

Related options:

* ``min_ratio``
"""),
    cfg.FloatOpt('max_step',
                 default=0.1,
                 min=0.01,
                 max=64.0,
                 help="""
The most one change moves the ratio, up or down: the ratio walks toward the
advice over several intervals.
"""),
    cfg.FloatOpt('hysteresis',
                 default=0.05,
                 min=0.0,
                 max=64.0,
                 help="""
The ratio is left alone while the advice (within ``min_ratio`` and
``max_ratio``) differs from Placement's by less than this, so that a ratio
near the advice does not go back and forth.
"""),
    cfg.IntOpt('interval',
               default=3600,
               min=60,
               help="""
Seconds between two looks at the advice, and the least time between two
changes of the ratio (kept across restarts in ``state_file``).
"""),
    cfg.FloatOpt('window_hours',
                 default=168.0,
                 min=1.0,
                 help="""
The span of capacity history the advice counts, in hours (the default, a
week, sees every weekday). Until half of it is recorded, there is no advice
and the ratio is left alone. ``[capacity] history_days`` must keep at least
this much.

Related options:

* ``[capacity] advice_window``: ``nova-balloon recommend``'s default window
  (7d); the same advice as this mode's when they are equal.
"""),
    cfg.FloatOpt('risk_percent',
                 default=0.1,
                 min=0.0001,
                 max=50.0,
                 help="""
The share, in percent, of the window's minutes in which a host filled to the
advised ratio with this host's mix of guests may need more memory than it
has. Lower is safer and gives a lower ratio.

Related options:

* ``[capacity] advice_risk_percent``: ``nova-balloon recommend``'s default
  risk (0.1); the same advice as this mode's when they are equal.
"""),
    cfg.StrOpt('hypervisor_hostname',
               help="""
The name of this compute node's resource provider in Placement. Unset (the
default), it is libvirt's ``getHostname()`` on ``[libvirt] connection_uri``,
as nova-compute's libvirt driver names its compute node.
"""),
    cfg.StrOpt('state_file',
               default='/var/lib/nova-balloon/placement-ratio.json',
               help="""
Where the mode records the time and values of its last change, so that a
restarted agent still changes the ratio at most once per ``interval``.
"""),
]

# Nova's options of the same names (nova/conf/compute.py), read, never set.
default_group = cfg.OptGroup('DEFAULT')

nova_ratio_opts = [
    cfg.FloatOpt('ram_allocation_ratio',
                 min=0.0,
                 help="""
Nova's own option, read from nova-compute's config file. When set (other
than 0.0), nova-compute writes it into Placement's MEMORY_MB inventory at
each resource update, so ``[placement_ratio] enabled`` refuses to act.
"""),
    cfg.FloatOpt('initial_ram_allocation_ratio',
                 default=1.0,
                 min=0.0,
                 help="""
Nova's own option, read from nova-compute's config file: the ratio
nova-compute gives a new resource provider's MEMORY_MB inventory. Shown in
the mode's log as the value to go back to.
"""),
]

PLACEMENT_GROUP = 'placement'
PLACEMENT_SERVICE_TYPE = 'placement'


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(placement_ratio_group)
    conf.register_opts(placement_ratio_opts, group=placement_ratio_group)
    conf.register_opts(nova_ratio_opts)
    ks_loading.register_session_conf_options(conf, PLACEMENT_GROUP)
    ks_loading.register_auth_conf_options(conf, PLACEMENT_GROUP)
    ks_loading.register_adapter_conf_options(conf, PLACEMENT_GROUP, include_deprecated=False)
    conf.set_default('service_type', PLACEMENT_SERVICE_TYPE, group=PLACEMENT_GROUP)
    conf.set_default('valid_interfaces', ['internal', 'public'], group=PLACEMENT_GROUP)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    """The mode's options and Nova's ratio options; [placement] is Nova's, documented there."""
    return {placement_ratio_group: placement_ratio_opts, default_group: nova_ratio_opts}


class InvalidOptions(ValueError):
    """A combination of [placement_ratio] options that cannot work."""


def check(conf: cfg.ConfigOpts) -> None:
    """Raise InvalidOptions naming the options whose values do not fit together."""
    group = conf.placement_ratio
    if group.min_ratio > group.max_ratio:
        raise InvalidOptions(f'[placement_ratio] min_ratio ({group.min_ratio:g}) is above '
                             f'max_ratio ({group.max_ratio:g})')
