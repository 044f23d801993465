"""The baseline policies' arithmetic, on cases worked out by hand (in MiB)."""

from __future__ import annotations

import pytest

from nova_balloon import policies
from nova_balloon.model import GuestView, HostSnapshot
from nova_balloon.policies.mom import MomPolicy
from nova_balloon.policies.proxmox import ProxmoxPolicy
from nova_balloon.policies.squeezed import SqueezedPolicy, squeeze_fraction
from nova_balloon.policies.static import StaticPolicy
from nova_balloon.virt.simulated.run import simulation_conf

MiB = 1024


def host(available_mib: float, total_mib: int = 10000, now: float = 0.0) -> HostSnapshot:
    return HostSnapshot(total_kib=total_mib * MiB, available_kib=int(available_mib * MiB),
                        now=now)


def guest(uuid: str, actual: int, usable: int | None, floor: int = 500,
          ceiling: int = 4000, shares: int = 1000) -> GuestView:
    """A guest in MiB, its statistics settled."""
    return GuestView(uuid=uuid, name=uuid, ceiling_kib=ceiling * MiB, floor_kib=floor * MiB,
                     shares=shares, actual_kib=actual * MiB, target_kib=None,
                     usable_kib=None if usable is None else usable * MiB,
                     demand_kib=None if usable is None else (actual - usable) * MiB,
                     swap_in_kib=0, major_faults=0, stats_fresh=True, balloon_moving=False,
                     deflated_on_oom=False)


def mib(proposals: dict[str, int]) -> dict[str, float]:
    return {u: t / MiB for u, t in proposals.items()}


@pytest.mark.parametrize('name, cls', [('static', StaticPolicy), ('mom', MomPolicy),
                                       ('proxmox', ProxmoxPolicy),
                                       ('squeezed', SqueezedPolicy)])
def test_registered_in_the_policy_namespace(name, cls):
    assert type(policies.load(name, simulation_conf())) is cls


def test_static_never_proposes():
    assert StaticPolicy(simulation_conf()).propose(host(0), [guest('a', 2000, 100)]) == {}


# -- mom -----------------------------------------------------------------------------

def test_mom_shrinks_under_20_percent_free():
    # Host free 10 %: guest free share 0.10. used = 2000 - 1200 = 800.
    # a: max(2000 * 0.95 = 1900, 500, 800 + 0.1 * 2000 = 1000) = 1900.
    # b: used 1900: max(1900, 500, 1900 + 200 = 2100) = 2100 > actual: no shrink.
    policy = MomPolicy(simulation_conf())
    out = policy.propose(host(1000), [guest('a', 2000, 1200), guest('b', 2000, 100)])
    assert mib(out) == {'a': 1900}


def test_mom_critical_pressure_makes_guest_free_share_negative():
    # Host free 4 % <= 5 %: guest free share 0.04 - 0.05 = -0.01.
    # used 1950: max(1900, 500, 1950 - 20 = 1930) = 1930.
    policy = MomPolicy(simulation_conf())
    assert mib(policy.propose(host(400), [guest('a', 2000, 50)])) == {'a': 1930}


def test_mom_grows_at_20_percent_free_or_more():
    # a: min(4000, max(2000 * 1.05 = 2100, 500, 800 + 0.2 * 2000 = 1200)) = 2100.
    # b: used 1000: max(1050, 500, 1000 + 200 = 1200) = 1200.
    # c: at its ceiling, nothing to do. d: 3996 -> 4000 is 4 MiB, not over 0.25 %.
    policy = MomPolicy(simulation_conf())
    out = policy.propose(host(2000), [guest('a', 2000, 1200), guest('b', 1000, 0),
                                      guest('c', 4000, 3000), guest('d', 3996, 3000)])
    assert mib(out) == {'a': 2100, 'b': 1200}


def test_mom_averages_host_free_and_guest_use_over_its_samples():
    policy = MomPolicy(simulation_conf())
    # Free 30 % then 5 %: average 17.5 %, so shrink with guest free share 0.175.
    policy.propose(host(3000), [guest('a', 2000, 1200)])
    # used = mean(2000, 2000) - mean(1200, 800) = 1000; max(1900, 500, 1000 + 350) = 1900.
    assert mib(policy.propose(host(500), [guest('a', 2000, 800)])) == {'a': 1900}
    # Ten more samples at 30 % free push the old ones out: grow again.
    for _ in range(10):
        out = policy.propose(host(3000), [guest('a', 2000, 800)])
    assert mib(out) == {'a': 2100}


def test_mom_skips_guests_without_statistics():
    assert MomPolicy(simulation_conf()).propose(host(2000), [guest('a', 2000, None)]) == {}


# -- proxmox -------------------------------------------------------------------------

def test_proxmox_grows_guests_under_pressure_first():
    # Used 7000 of 10000: goal 8000 - 7000 = 1000. b has 100 free <= 25 % of its
    # floor 1000: it alone is grown: desired 1000 + (0 + 1000) = 2000, at most
    # 100 per round -> 1100. The next pass finds no further progress.
    policy = ProxmoxPolicy(simulation_conf())
    out = policy.propose(host(3000), [guest('a', 1500, 1000, floor=1000),
                                      guest('b', 1000, 100, floor=1000)])
    assert mib(out) == {'b': 1100}


def test_proxmox_grows_everyone_when_no_guest_is_under_pressure():
    # Goal 1000 over a and c (both relaxed): alloc (500 + 0) + 1000 = 1500, each
    # desired 1000 + 750 = 1750; 100 per round: a 1600, c 1100.
    policy = ProxmoxPolicy(simulation_conf())
    out = policy.propose(host(3000), [guest('a', 1500, 1000, floor=1000),
                                      guest('c', 1000, 500, floor=1000)])
    assert mib(out) == {'a': 1600, 'c': 1100}


def test_proxmox_shrinks_guests_with_free_memory_first():
    # Used 9500: goal -1500. Only a has free memory above 25 % of its floor:
    # desired 1000 + (2000 - 1500) = 1500, at most 100 per round -> 2900.
    policy = ProxmoxPolicy(simulation_conf())
    out = policy.propose(host(500), [guest('a', 3000, 2000, floor=1000),
                                     guest('b', 2000, 100, floor=1000)])
    assert mib(out) == {'a': 2900}


def test_proxmox_clamped_guest_leaves_its_share_to_the_others():
    # Goal 1000 over a (ceiling 1050) and c: desired 1750 each; a is clamped to
    # 1050 (+50), c grows 100 -> 1100; rest 850. Next round a is done, c's
    # desired 1000 + (100 + 850) = 1950, still 1100 after its 100 MiB step.
    policy = ProxmoxPolicy(simulation_conf())
    out = policy.propose(host(3000), [guest('a', 1000, 500, floor=1000, ceiling=1050),
                                      guest('c', 1000, 500, floor=1000)])
    assert mib(out) == {'a': 1050, 'c': 1100}


def test_proxmox_does_nothing_within_10_mib_of_its_goal():
    policy = ProxmoxPolicy(simulation_conf())
    assert policy.propose(host(2005), [guest('a', 3000, 2000)]) == {}


# -- squeezed ------------------------------------------------------------------------

def test_squeezed_sets_every_guest_at_the_same_fraction_of_its_range():
    # Room for guests: 509 free + 2500 + 1000 held - 9 reserve = 4000. Floors 1500,
    # ranges 3000 + 1000: g = (4000 - 1500) / 4000 = 0.625.
    guests = [guest('a', 2500, 2000, floor=1000, ceiling=4000),
              guest('b', 1000, 500, floor=500, ceiling=1500)]
    assert mib(SqueezedPolicy(simulation_conf()).propose(host(509), guests)) == \
        {'a': 1000 + 0.625 * 3000, 'b': 500 + 0.625 * 1000}


def test_squeeze_fraction_stays_within_0_and_1():
    guests = [guest('a', 2500, 2000, floor=1000, ceiling=4000)]
    assert squeeze_fraction(100_000 * MiB, guests) == 1.0
    assert squeeze_fraction(500 * MiB, guests) == 0.0
    assert squeeze_fraction(0, [guest('f', 1000, 500, floor=1000, ceiling=1000)]) == 1.0
