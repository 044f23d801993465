"""[adaptive_policy]: the options of the default policy, used by no other.

Until 2026.2 they were in ``[balloon]``, where they are still read.
"""

from oslo_config import cfg

adaptive_policy_group = cfg.OptGroup('adaptive_policy',
                                     title='The adaptive balloon policy (the default)')

adaptive_policy_opts = [
    cfg.IntOpt('host_reserve_mb',
               min=0,
               deprecated_group='balloon',
               help="""
Host memory, in MiB, that the adaptive policy never hands out: the guests'
targets add up to at most what the host has less this, and one cycle's growth
comes out of what is free beyond it. When the guests want more, each keeps
its demand and the rest is shared by ``balloon:shares``. Unset (the default),
it is Nova's ``[DEFAULT] reserved_host_memory_mb``: the memory Placement
keeps from guests is the memory the agent keeps from them. Guests short of
memory may still grow into it, down to ``[balloon] host_critical_free_mb``.

Related options:

* ``[DEFAULT] reserved_host_memory_mb``
* ``[balloon] host_critical_free_mb``
"""),
    cfg.FloatOpt('buffer_percent',
                 default=5.0,
                 deprecated_group='balloon',
                 min=0.0,
                 max=400.0,
                 help="""
Free memory a guest is given above its demand estimate, as a
percentage of that estimate (as Hyper-V's memory buffer). The estimate already
holds the guest's recent peak, so a small buffer is enough.

Related options:

* ``demand_half_life``: how long the estimate holds a peak.
"""),
    cfg.IntOpt('demand_half_life',
               default=480,
               min=1,
               help="""
How slowly a guest's demand estimate falls back after a
peak, in seconds of the guest's statistics (from one sample's
``last-update`` to the next): the part of the estimate above the current
demand halves every this many seconds. It rises to a new peak at once. The
room kept for a guest's largest recent jump in demand halves every twice
this long. Counted between samples, not cycles, so that how often the
agent looks changes nothing.

Replaces ``demand_half_life_cycles`` (48 cycles of the simulator's 10 s are
the default 480 s).
"""),
    cfg.FloatOpt('idle_tax_percent',
                 default=75.0,
                 deprecated_group='balloon',
                 min=0.0,
                 max=95.0,
                 help="""
When the guests' wants do not fit the host, memory a guest
would hold but does not use weighs 1 / (1 - tax) times as much as memory in
use when the rest is shared by ``balloon:shares`` (VMware's idle memory tax;
75, the default, makes idle memory cost four times as much). 0 shares by
shares alone.
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(adaptive_policy_group)
    conf.register_opts(adaptive_policy_opts, group=adaptive_policy_group)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {adaptive_policy_group: adaptive_policy_opts}
