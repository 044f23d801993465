"""Balloon policies: plug-ins that turn snapshots into proposed targets.

A policy is a pure decision: it gets the host snapshot and the managed guests
(``GuestView``) and returns the target it proposes for each guest, in KiB. It
does no I/O and reads no clock (time comes in ``HostSnapshot.now``); it may
remember earlier snapshots to see trends. Whatever it proposes then passes the
safety rules in ``nova_balloon.safety``, which no policy can bypass.

A third party adds a policy from its own package by subclassing ``Policy``
and registering the class in the ``nova_balloon.policies`` entry-point
namespace, for example in its setup.cfg::

    [entry_points]
    nova_balloon.policies =
        mypolicy = mypackage.policy:MyPolicy

and then sets ``[balloon] policy = mypolicy`` on the compute nodes.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from oslo_config import cfg
from stevedore import driver

from nova_balloon.model import GuestView, HostSnapshot

NAMESPACE = 'nova_balloon.policies'


class Policy(abc.ABC):
    """Base class of balloon policies; constructed with the agent's ConfigOpts."""

    # Whether the planner may lower the safety headroom of the guests while
    # others lack memory (``[balloon] contended_headroom_percent``): a policy
    # that shares idle memory out under contention says so; the baselines
    # that stand for other systems keep their own behaviour.
    shares_headroom_when_contended = False

    def __init__(self, conf: cfg.ConfigOpts):
        self.conf = conf

    @abc.abstractmethod
    def propose(self, host: HostSnapshot,
                guests: Sequence[GuestView]) -> Mapping[str, int]:
        """Return proposed targets in KiB by guest uuid.

        A guest left out keeps its current target.
        """


def load(name: str, conf: cfg.ConfigOpts) -> Policy:
    """Load the named policy plug-in; load errors are raised, never swallowed."""
    manager = driver.DriverManager(NAMESPACE, name, invoke_on_load=True,
                                   invoke_args=(conf,))
    policy = manager.driver
    if not isinstance(policy, Policy):
        raise TypeError(f'{NAMESPACE} plug-in {name!r} is not a '
                        f'nova_balloon.policies.Policy')
    return policy
