"""The [balloon] group: how the agent moves guests' balloons."""

from oslo_config import cfg

from nova_balloon.conf import compute

balloon_group = cfg.OptGroup(
    'balloon',
    title='Balloon agent options',
    help="""
Options of nova-balloon-agent, the compute-node service that moves the virtio
balloons of this node's guests within the bounds of their flavor policies.
""")

agent_opts = [
    cfg.StrOpt('policy',
               default='adaptive',
               help="""
Name of the balloon policy: a plugin in the ``nova_balloon.policies``
entry-point namespace. The policy proposes targets; the safety rules that
every target passes through cannot be changed by a policy.

Possible values:

* ``adaptive``: (default) gives each guest its recent peak demand plus a
  buffer, grows a guest short of memory at once within what the host has
  free, and shares host memory by ``balloon:shares`` under contention.
* ``static``, ``mom``, ``proxmox``, ``squeezed``: re-implementations of other
  balloon controllers' algorithms, to compare with (``nova-balloon
  simulate``); not meant for production.
* The name of any policy another package registers in the namespace.
"""),
    cfg.IntOpt('interval',
               default=2,
               min=1,
               max=3600,
               help="""
Seconds between two control cycles of the agent.

Related options:

* ``fast_stats_period``: the interval while a guest is short of memory.
"""),
    cfg.IntOpt('stats_period',
               default=10,
               min=1,
               max=3600,
               help="""
Balloon statistics period, in seconds, of managed guests with plenty of free
memory (10 s is Nova's ``[libvirt] mem_stats_period_seconds`` default). The
agent sets it on every guest it manages; it never shrinks a guest whose
statistics did not refresh within a few periods.

Related options:

* ``fast_stats_period``, ``fast_free_mb``: guests short of free memory.
"""),
    cfg.IntOpt('fast_stats_period',
               default=1,
               min=1,
               max=60,
               help="""
Balloon statistics period, in seconds, of managed guests with less than
``fast_free_mb`` of free memory, and the agent's cycle interval while any
guest is in that state: a guest filling its memory must be seen, and grown,
before it runs out. Costs one guest wake-up per period per such guest.
"""),
    cfg.IntOpt('fast_free_mb',
               default=1024,
               min=0,
               help="""
Free memory (the guest's MemAvailable), in MiB, below which a managed guest
is watched closely: ``fast_stats_period`` instead of ``stats_period``.
"""),
    cfg.BoolOpt('dry_run',
                default=False,
                help="""
Log every decision the agent would take but never change a balloon. Use it to
roll out the agent and check its decisions before letting it act.
"""),
    cfg.BoolOpt('restore_on_stop',
                default=True,
                help="""
When the agent stops (SIGTERM), give every guest it shrank its full memory
back before exiting.
"""),
    cfg.BoolOpt('manage_unmanaged_guests',
                default=False,
                help="""
Also manage guests that carry no Nova metadata (not created by Nova), with the
default policy options below. By default such guests are never touched.
"""),
    cfg.StrOpt('flavor_policy_file',
               help="""
Path of a YAML file that maps flavor names to balloon policy keys, for clouds
whose Nova does not write flavor extra specs into the domain XML (before
2025.2). Example::

    m1.large:
      balloon:overcommit_ratio: 1.5
      balloon:min_memory_mb: 2048

Precedence, per key: the flavor's extra specs in the domain XML, then this
file, then the ``default_*`` options.
"""),
    cfg.StrOpt('state_file',
               default='/run/nova-balloon/state.json',
               help="""
Where the agent records, after each cycle, the targets it set and why, and its
liveness. ``nova-balloon status`` reads it, and a restarted agent adopts the
targets found there.
"""),
]

policy_default_opts = [
    cfg.FloatOpt('default_overcommit_ratio',
                 default=1.0,
                 min=1.0,
                 max=64.0,
                 help="""
Overcommit ratio of flavors that set no ``balloon:overcommit_ratio``: a guest
may be reclaimed down to its flavor RAM divided by this ratio. 1.0, the
default, never reclaims memory from such guests, so ballooning is opt-in per
flavor.
"""),
    cfg.IntOpt('default_min_memory_mb',
               default=256,
               min=0,
               help="""
Absolute floor, in MiB, of flavors that set no ``balloon:min_memory_mb``. A
guest's floor is the higher of this and flavor RAM / overcommit ratio.
"""),
    cfg.IntOpt('default_shares',
               default=1000,
               min=1,
               max=1000000,
               help="""
Weight of a guest whose flavor sets no ``balloon:shares`` when guests compete
for host memory: a guest with twice the shares keeps twice the buffer.
"""),
]

safety_opts = [
    cfg.IntOpt('headroom_mb',
               default=64,
               min=0,
               help="""
Memory, in MiB, that the agent always leaves free in a guest on top of what
the guest uses. No policy can shrink a guest below its use plus this headroom
(or ``headroom_percent``, whichever is larger).
"""),
    cfg.FloatOpt('headroom_percent',
                 default=10.0,
                 min=0.0,
                 max=100.0,
                 help="""
Headroom as a percentage of the guest's flavor RAM; the larger of this and
``headroom_mb`` applies.
"""),
    cfg.IntOpt('max_shrink_mb_per_cycle',
               default=128,
               min=1,
               help="""
The most, in MiB, that one guest's balloon may be shrunk in one cycle, unless
``max_shrink_percent_per_cycle`` of the guest's size is more. Growth is not
limited: a guest that needs memory gets it at once.
"""),
    cfg.FloatOpt('max_shrink_percent_per_cycle',
                 default=10.0,
                 min=0.0,
                 max=100.0,
                 help="""
The most that one guest's balloon may be shrunk in one cycle, as a percentage
of the memory it has now; the larger of this and ``max_shrink_mb_per_cycle``
applies. A fixed step alone would take hundreds of cycles, and as many balloon
moves, to reclaim a large guest. A guest shrinks at most once per statistics
period, since its balloon must settle first, and never below its use plus
headroom.
"""),
    cfg.IntOpt('unresponsive_after',
               default=60,
               min=5,
               help="""
Seconds after which a guest's balloon counts as unresponsive: its statistics
froze, or it made no progress toward its target. Such a guest gets its full
memory back and is not shrunk until ``unresponsive_retry`` seconds later.
"""),
    cfg.IntOpt('unresponsive_retry',
               default=300,
               min=1,
               help="""
Seconds an unresponsive balloon is left alone before the agent tries again.
"""),
    cfg.IntOpt('dead_band_mb',
               default=16,
               min=0,
               help="""
Target changes smaller than this, in MiB, are not applied, so that balloons do
not move for noise. Growth of a guest short of memory is always applied.
"""),
]

host_opts = [
    cfg.IntOpt('host_critical_free_mb',
               default=512,
               min=0,
               help="""
Host MemAvailable, in MiB, below which the host itself is about to swap or
kill a guest. Below it the agent says so and reclaims faster: up to four times
the usual step (``max_shrink_mb_per_cycle``, ``max_shrink_percent_per_cycle``)
per guest per cycle, still never below a guest's
floor or its use plus headroom. 0 turns this off.
"""),
    cfg.FloatOpt('contended_headroom_percent',
                 default=2.0,
                 min=0.0,
                 max=100.0,
                 help="""
Headroom, in percent of a guest's flavor RAM (``headroom_mb`` at least), that
guests keep above their use while the host is contended: guests short of free
memory (less than their headroom) lack more than the host has free above
``host_critical_free_mb``. The others then give up the rest of their
``headroom_percent``, at the critical pace when the host is critical too, so
that memory they hold idle goes to the guests that need it, before any of them
swaps. Once the host can give every guest its headroom again, the policy gives
it back. Memory a guest holds idle is the host's buffer, shared, rather than
each guest's own. ``headroom_percent`` or more turns this off. Only under a
policy that shares memory out under contention (the default, ``adaptive``);
the other policies keep their own behaviour.
"""),
]

process_opts = [
    cfg.StrOpt('lock_file',
               help="""
Path of the lock that keeps a second agent from starting on this host: two
agents would fight over every balloon and over the state file. The agent
holds an exclusive ``flock`` on it while it runs and writes its pid into it;
a second agent exits at once, naming the pid and command line of the first.
The kernel drops the lock when the process ends, however it ends, so a stale
file never blocks a restart.

Default: ``nova-balloon-agent.lock`` next to ``state_file`` (with the
defaults, ``/run/nova-balloon/nova-balloon-agent.lock``, in the systemd
unit's runtime directory).
"""),
    cfg.IntOpt('max_failed_cycles',
               default=10,
               min=1,
               help="""
How many control cycles in a row may fail (a bug in a policy or in the
planner) before the agent exits with status 1 so that systemd restarts it.
While cycles fail, the agent runs in a grow-only safe mode: guests short of
free memory (below ``fast_free_mb``) get their full memory, no guest is
shrunk. The first failure is logged at ERROR with its traceback.
"""),
    cfg.IntOpt('restore_mb_per_second',
               default=2048,
               min=1,
               help="""
Pace, in MiB per second, at which the agent (with ``restore_on_stop``) and
``nova-balloon restore`` give guests their memory back, so that restoring a
whole host does not make every guest's balloon deflate, and every guest
reclaim host memory, in the same second. The guests with the least free
memory go first; a guest owed more than a second's worth is restored in
one step.
"""),
    cfg.IntOpt('gc_threshold',
               default=100000,
               min=0,
               help="""
Python's garbage collector: how many new container objects set off a
collection of the youngest generation, set once when the agent starts. A
control cycle makes and frees a few records per guest, all freed at once by
reference counting; at Python's default (700) they set off collections whose
full passes scan every object the agent holds, so that on a host with
thousands of guests a cycle costs more than in proportion to its guests.
0 keeps Python's default.
"""),
]


ALL_OPTS = agent_opts + policy_default_opts + safety_opts + host_opts + process_opts


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(balloon_group)
    conf.register_opts(ALL_OPTS, group=balloon_group)
    # The adaptive policy's host reserve falls back to Nova's reservation.
    compute.register_opts(conf)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {balloon_group: ALL_OPTS}
