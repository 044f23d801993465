"""[capacity]: the capacity history the agent keeps, and the advice read from it."""

from oslo_config import cfg

capacity_group = cfg.OptGroup('capacity', title='Capacity history and ratio advice')

capacity_opts = [
    cfg.BoolOpt('record_history',
                default=True,
                help="""
Keep the capacity history: once a minute, per flavor, the guests' count, the
sum of what they needed (demand plus the safety headroom, at least their
floor) and the sum of their flavor RAM, and the host memory usable by Nova's
guests. ``nova-balloon recommend`` reads it to advise a
``ram_allocation_ratio`` at a stated risk. A line of about 60 bytes per
minute and flavor.

Related options:

* ``history_file``, ``history_days``
"""),
    cfg.StrOpt('history_file',
               default='/var/lib/nova-balloon/capacity-history',
               help="""
Where the agent keeps the capacity history. Unlike ``[balloon] state_file``
it must survive a reboot: advice needs days of it. A file that cannot be
read is renamed with a ``.corrupt`` suffix and the history starts over (a
warning says so); the agent never stops for it.
"""),
    cfg.IntOpt('history_days',
               default=14,
               min=1,
               max=366,
               help="""
Days of history kept: the file holds at most this many minutes, plus a tenth
before it is rewritten. Advice needs at least half of its window (``recommend
--window``, 7 days by default) covered.
"""),
    cfg.StrOpt('advice_window',
               default='7d',
               help="""
The default window of ``nova-balloon recommend``'s advice from history: a
number with ``d``, ``h`` or ``m`` (days, hours, minutes). ``--window``
overrides it.
"""),
    cfg.FloatOpt('advice_risk_percent',
                 default=0.1,
                 min=0.0001,
                 max=50.0,
                 help="""
The default risk of the advice, in percent of the window's minutes: at the
advised ratio, a host full of the same mix of guests would have needed more
memory than it has in at most this share of them. ``--risk`` overrides it.
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(capacity_group)
    conf.register_opts(capacity_opts, group=capacity_group)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {capacity_group: capacity_opts}
