"""Controller cycles on a fake driver: what a dry run remembers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from oslo_config import cfg

from nova_balloon.controller.cycle import Controller
from nova_balloon.flavor_policy import PolicyFile
from nova_balloon.model import (
    Action,
    BalloonStats,
    GuestFacts,
    GuestSample,
    GuestView,
    HostSnapshot,
    NovaMetadata,
    RunState,
)
from nova_balloon.policies import Policy
from nova_balloon.virt.driver import Collection
from tests.unit.planning import CEILING, SETTINGS, GiB, MiB


class FixedPolicy(Policy):
    """Always proposes 2 GiB: isolates the controller from the default policy."""

    def __init__(self):
        super().__init__(cfg.ConfigOpts())

    def propose(self, host: HostSnapshot, guests: Sequence[GuestView]) -> Mapping[str, int]:
        return {g.uuid: 2 * GiB for g in guests}


class StillDriver:
    """One idle 4 GiB guest (use 1 GiB) whose balloon never moves."""

    def __init__(self):
        self.targets: list[tuple[str, int]] = []
        facts = GuestFacts(uuid='u1', name='g1', max_memory_kib=CEILING,
                           nova=NovaMetadata('vm', 'm1', 4096, {}), unballoonable=None,
                           stats_period_s=2)
        stats = BalloonStats(actual_kib=CEILING, usable_kib=3 * GiB, last_update=1)
        self.sample = GuestSample(facts, stats, RunState.RUNNING, stats_age_s=1.0)

    def collect(self) -> Collection:
        return Collection(64 * GiB, 32 * GiB, [self.sample])

    def set_target(self, uuid: str, target_kib: int) -> None:
        self.targets.append((uuid, target_kib))

    def set_stats_period(self, uuid: str, period_s: int) -> None:
        pass


def _run(dry_run: bool, times: Sequence[float]):
    driver = StillDriver()
    now = [0.0]
    controller = Controller(driver, FixedPolicy(), SETTINGS, PolicyFile(None),
                            dry_run=dry_run, clock=lambda: now[0])
    decisions = []
    for t in times:
        now[0] = t
        report = controller.run_cycle()
        [decision] = report.plan.decisions
        decisions.append((decision.action, decision.target_kib))
    return driver, decisions


def test_real_run_shrinks_once_the_balloon_has_settled():
    # t=0 and t=2: statistics not yet taken after the balloon was first seen
    # (1 s report lag): hold. t=4: shrink by the 128 MiB per-cycle limit.
    driver, decisions = _run(False, [0.0, 2.0, 4.0])
    assert decisions == [(Action.HOLD, CEILING), (Action.HOLD, CEILING),
                         (Action.SHRINK, CEILING - 128 * MiB)]
    assert driver.targets == [('u1', CEILING - 128 * MiB)]


def test_dry_run_keeps_reporting_the_shrink_it_would_apply():
    driver, decisions = _run(True, [0.0, 2.0, 4.0, 6.0])
    assert driver.targets == []
    assert decisions[2] == (Action.SHRINK, CEILING - 128 * MiB)
    # Nothing changed: the balloon is where it was, no target was set.
    assert decisions[3] == (Action.SHRINK, CEILING - 128 * MiB)
