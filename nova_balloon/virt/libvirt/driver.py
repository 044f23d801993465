"""The one module that talks to libvirt.

One ``getAllDomainStats`` call per cycle collects every active guest's balloon
and state statistics. Per-domain facts (Nova metadata, eligibility) come from
the domain XML, parsed only when a domain appears, restarts or changes (a
lifecycle or metadata event). The connection is opened lazily, re-opened with
backoff after libvirtd goes away (the old one closed), and watched by a close
callback that runs on libvirt's event loop in a daemon thread, as
nova/virt/libvirt/host.py does.

A guest whose QEMU stops answering its monitor (stopped, or stuck in the
kernel) must not stall every guest: each call runs with a timeout, and the
bulk statistics call passes ``NOWAIT``, so once a call is stuck on that
guest's monitor (holding its job), the next collection skips the guest's
monitor statistics instead of queueing behind it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt
from oslo_log import log as logging

from nova_balloon.model import BalloonStats, GuestFacts, GuestSample, RunState
from nova_balloon.virt.driver import (
    Collection,
    DriverUnavailable,
    GuestActionFailed,
    GuestBusy,
    GuestGone,
)
from nova_balloon.virt.host import MeminfoReader
from nova_balloon.virt.libvirt.domain_xml import DomainXMLError, parse_domain_xml

LOG = logging.getLogger(__name__)

DEFAULT_URI = 'qemu:///system'
STATS = libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_STATE
STATS_FLAGS = (libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
               | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
MAX_BACKOFF_S = 60.0
# How long a libvirt call may take before the agent stops waiting for it. A
# call stuck on a hung QEMU monitor never returns until QEMU runs again; the
# thread it runs in is left behind, holding that guest's libvirt job.
CALL_TIMEOUT_S = 10.0
_MIGRATION_PAUSE_REASONS = frozenset({
    libvirt.VIR_DOMAIN_PAUSED_MIGRATION,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY,
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED,
})
_MIGRATION_RUN_REASONS = frozenset(
    getattr(libvirt, name) for name in ('VIR_DOMAIN_RUNNING_POSTCOPY',
                                        'VIR_DOMAIN_RUNNING_POSTCOPY_FAILED')
    if hasattr(libvirt, name))
_GONE_ERRORS = frozenset({libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID})

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """Run libvirt's default event loop in a daemon thread, once per process.

    Must run before the first connection is opened, or the connection gets no
    events and no close callback.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name='libvirt-event-loop', daemon=True).start()
        _event_loop_started = True


class CallTimedOut(Exception):
    """A libvirt call did not return in time; it goes on in its own thread."""

    def __init__(self, message: str, thread: threading.Thread):
        super().__init__(message)
        self.thread = thread


def _call_with_timeout(what: str, call: Callable[[], Any], timeout_s: float) -> Any:
    """``call()`` in a daemon thread, waiting for it at most ``timeout_s``.

    libvirt calls cannot be cancelled; one stuck on a hung QEMU monitor
    returns when QEMU runs again, and its result is then dropped.
    """
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=f'libvirt-{what}', daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        raise CallTimedOut(f'{what}: no answer from libvirt within {timeout_s:g} s', thread)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _run_state(state: int | None, reason: int | None) -> RunState:
    if state == libvirt.VIR_DOMAIN_RUNNING:
        # Post-copy: the guest runs here while its memory is still pulled
        # from the source; the balloon must not move until that ends.
        return RunState.MIGRATING if reason in _MIGRATION_RUN_REASONS else RunState.RUNNING
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return RunState.MIGRATING if reason in _MIGRATION_PAUSE_REASONS else RunState.PAUSED
    return RunState.OTHER


# libvirt's bulk stats key of each BalloonStats field.
_STATS_KEYS = {'actual_kib': 'balloon.current', 'usable_kib': 'balloon.usable',
               'unused_kib': 'balloon.unused', 'available_kib': 'balloon.available',
               'swap_in_kib': 'balloon.swap_in', 'major_faults': 'balloon.major_fault',
               'last_update': 'balloon.last-update', 'rss_kib': 'balloon.rss'}


def _stats(record: dict[str, Any]) -> BalloonStats:
    """The record's balloon figures; one that is missing or not a number is None."""
    figures = {field: record.get(key) for field, key in _STATS_KEYS.items()}
    return BalloonStats(**{field: value if isinstance(value, int) else None
                           for field, value in figures.items()})


class LibvirtDriver:
    """The driver interface (nova_balloon.virt.driver.Driver) on libvirt."""

    def __init__(self, uri: str | None, read_only: bool = False,
                 wall_clock: Callable[[], float] = time.time,
                 meminfo_path: str = '/proc/meminfo'):
        self.uri = uri or DEFAULT_URI
        self.read_only = read_only
        self.wall_clock = wall_clock
        self.host_memory = MeminfoReader(meminfo_path)
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        # Connections lost or closed by libvirtd, closed when the next opens.
        self._dead: list[libvirt.virConnect] = []
        self._event_ids: dict[int, list[int]] = {}
        self._next_attempt = 0.0
        self._backoff_s = 1.0
        # uuid -> (domain id, facts): a restarted domain has a new id.
        self._facts: dict[str, tuple[int, GuestFacts]] = {}
        self._domains: dict[str, libvirt.virDomain] = {}
        self._migrating: set[str] = set()
        # uuid -> reboots from inside the guest seen by events: the guest's
        # QEMU (and its domain id) stays, yet its memory starts over.
        self._reboots: dict[str, int] = {}
        # Reboots not yet reported by a collection: the balloon's jump to full
        # size and back, as the guest's balloon driver restarts, is no
        # deflation on OOM.
        self._reboot_pending: set[str] = set()
        # uuid -> how many times events changed the domain: facts read while
        # an event arrived are used once but not kept.
        self._generation: dict[str, int] = {}
        # uuid -> the thread of a call that never returned: the guest's QEMU
        # is hung, and further calls on it would only queue behind.
        self._stuck: dict[str, threading.Thread] = {}
        self.call_timeout_s = CALL_TIMEOUT_S
        self.calls = 0
        # Called on libvirt's event thread with (uuid, balloon KiB, run id)
        # when a balloon changes size; the agent uses it to act at once on a guest
        # that deflated its balloon on OOM. Must be quick and thread-safe.
        self.on_balloon_change: Callable[[str, int, str], None] | None = None

    # -- connection -------------------------------------------------------

    def _connect(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                return self._conn
            now = time.monotonic()
            if now < self._next_attempt:
                raise DriverUnavailable(f'{self.uri}: not connected; next attempt in '
                                        f'{self._next_attempt - now:.0f} s')
            try:
                conn = (libvirt.openReadOnly if self.read_only else libvirt.open)(self.uri)
            except libvirt.libvirtError as exc:
                self._next_attempt = now + self._backoff_s
                self._backoff_s = min(MAX_BACKOFF_S, self._backoff_s * 2)
                raise DriverUnavailable(f'{self.uri}: {exc}') from None
            self._backoff_s = 1.0
            dead, self._dead = self._dead, []
            self._conn = conn
            self._facts.clear()
            self._migrating.clear()
            self._stuck.clear()
            if _event_loop_started:
                self._register_events(conn)
        for old in dead:
            self._close(old)
        LOG.info('Connected to libvirt at %s%s', self.uri,
                 f'; closed {len(dead)} lost connection(s)' if dead else '')
        return conn

    def _forget(self, conn: libvirt.virConnect) -> None:
        """The connection is gone; the caller holds the lock."""
        if self._conn is conn:
            self._conn = None
            self._dead.append(conn)

    def _close(self, conn: libvirt.virConnect) -> None:
        """Close a lost connection for good.

        Its event callbacks hold references to it: without deregistering them
        and closing it, each libvirtd restart would leak a connection (its
        socket and event state) for the agent's lifetime.
        """
        for callback_id in self._event_ids.pop(id(conn), []):
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(callback_id)
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    def _register_events(self, conn: libvirt.virConnect) -> None:
        conn.registerCloseCallback(self._on_close, None)
        ids = self._event_ids[id(conn)] = []
        # A hot-plugged or unplugged device (a vGPU, a vDPA or SR-IOV port)
        # may pin the guest's RAM: its XML is read again, as after a restart.
        for event in (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                      libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                      libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                      libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED):
            ids.append(conn.domainEventRegisterAny(None, event, self._on_domain_changed,
                                                   None))
        for event, callback in (
                (libvirt.VIR_DOMAIN_EVENT_ID_MIGRATION_ITERATION,
                 self._on_migration_iteration),
                (libvirt.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._on_job_completed),
                (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot),
                (libvirt.VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE, self._on_balloon_change)):
            ids.append(conn.domainEventRegisterAny(None, event, callback, None))

    def _on_balloon_change(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                           actual_kib: int, opaque: Any) -> None:
        uuid = dom.UUIDString()
        if self.on_balloon_change is not None and uuid not in self._reboot_pending:
            self.on_balloon_change(uuid, actual_kib, self._run_id(dom, uuid))

    def _run_id(self, dom: libvirt.virDomain, uuid: str) -> str:
        """GuestSample.run_id: the domain id (a new QEMU process) and reboots inside."""
        return f'{dom.ID()}.{self._reboots.get(uuid, 0)}'

    def _on_reboot(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                   opaque: Any) -> None:
        uuid = dom.UUIDString()
        with self._lock:
            self._reboots[uuid] = self._reboots.get(uuid, 0) + 1
            self._reboot_pending.add(uuid)

    def _on_close(self, conn: libvirt.virConnect, reason: int, opaque: Any) -> None:
        with self._lock:
            self._forget(conn)

    def _on_domain_changed(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                           *args: Any) -> None:
        uuid = dom.UUIDString()
        with self._lock:
            self._facts.pop(uuid, None)
            self._generation[uuid] = self._generation.get(uuid, 0) + 1
            self._migrating.discard(uuid)

    def _on_migration_iteration(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                                iteration: int, opaque: Any) -> None:
        with self._lock:
            self._migrating.add(dom.UUIDString())

    def _on_job_completed(self, conn: libvirt.virConnect, dom: libvirt.virDomain,
                          params: dict[str, Any], opaque: Any) -> None:
        with self._lock:
            self._migrating.discard(dom.UUIDString())

    def _lost(self, conn: libvirt.virConnect, exc: libvirt.libvirtError) -> bool:
        """Whether a failed call means the connection is gone (not just the call)."""
        try:
            alive = conn.isAlive()
        except libvirt.libvirtError:
            alive = False
        if not alive:
            with self._lock:
                self._forget(conn)
        return not alive

    # -- Driver interface --------------------------------------------------

    def collect(self) -> Collection:
        conn = self._connect()
        records = self._all_domain_stats(conn)
        now = self.wall_clock()
        samples = []
        domains = {}
        for dom, record in records:
            uuid = dom.UUIDString()
            facts = self._facts_of(dom, uuid, record)
            if facts is None:
                continue
            domains[uuid] = dom
            stats = _stats(record)
            run_state = _run_state(record.get('state.state'), record.get('state.reason'))
            if uuid in self._migrating and self._still_migrating(dom, uuid):
                run_state = RunState.MIGRATING
            age = now - stats.last_update if stats.last_update else None
            samples.append(GuestSample(
                facts=facts, stats=stats, run_state=run_state, stats_age_s=age,
                run_id=self._run_id(dom, uuid)))
        self._domains = domains
        with self._lock:
            for uuid in set(self._facts) - set(domains):
                del self._facts[uuid]
            if len(self._generation) > len(domains):
                self._generation = {u: g for u, g in self._generation.items()
                                    if u in domains}
            if len(self._reboots) > len(domains):
                self._reboots = {u: n for u, n in self._reboots.items() if u in domains}
            self._reboot_pending.clear()
        total_kib, available_kib = self.host_memory.read()
        return Collection(total_kib, available_kib, samples)

    def _still_migrating(self, dom: libvirt.virDomain, uuid: str) -> bool:
        """Whether the migration that an event announced still runs.

        A migration that fails or is aborted (Nova's default action when
        ``live_migration_completion_timeout`` passes) ends with no job
        completed event on the source: the job itself says it is over, so
        the guest is managed again from the next cycle.
        """
        try:
            self.calls += 1
            job = _call_with_timeout('job info', dom.jobInfo, self.call_timeout_s)
        except (CallTimedOut, libvirt.libvirtError):
            return True
        if job and job[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            return True
        with self._lock:
            self._migrating.discard(uuid)
        return False

    def _all_domain_stats(self, conn: libvirt.virConnect) -> list[tuple[Any, dict[str, Any]]]:
        """The bulk statistics; once more if a guest's hung monitor held the call up.

        The first call stuck on a hung monitor holds that guest's job until
        QEMU runs again; the second one (``NOWAIT``) then skips the guest's
        monitor statistics and returns at once.
        """
        for attempt in (1, 2):
            try:
                self.calls += 1
                return _call_with_timeout(
                    'domain stats', lambda: conn.getAllDomainStats(STATS, STATS_FLAGS),
                    self.call_timeout_s)
            except CallTimedOut as exc:
                if attempt == 2:
                    raise DriverUnavailable(f'{self.uri}: {exc}') from None
                LOG.warning('libvirt gave no domain statistics within %g s, likely a '
                            "guest's hung QEMU monitor; collecting again without it",
                            self.call_timeout_s)
            except libvirt.libvirtError as exc:
                self._lost(conn, exc)
                raise DriverUnavailable(f'{self.uri}: {exc}') from None
        raise AssertionError('unreachable')

    def _xml_of(self, dom: libvirt.virDomain) -> str:
        self.calls += 1
        return dom.XMLDesc(0)

    def _facts_of(self, dom: libvirt.virDomain, uuid: str,
                  record: dict[str, Any]) -> GuestFacts | None:
        dom_id = dom.ID()
        with self._lock:
            cached = self._facts.get(uuid)
            generation = self._generation.get(uuid, 0)
        if cached is not None and cached[0] == dom_id:
            return cached[1]
        try:
            xml = self._xml_of(dom)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _GONE_ERRORS:
                return None
            conn = self._conn
            if conn is not None and self._lost(conn, exc):
                raise DriverUnavailable(f'{self.uri}: {exc}') from None
            # One domain's XML, not the host: skip the guest this cycle.
            LOG.warning('Domain %s skipped this cycle, its XML cannot be read: %s',
                        uuid, exc)
            return None
        try:
            facts = parse_domain_xml(xml)
        except DomainXMLError as exc:
            LOG.warning('Domain %s (%s) skipped: %s', dom.name(), uuid, exc)
            maximum = record.get('balloon.maximum')
            facts = GuestFacts(uuid=uuid, name=dom.name(),
                               max_memory_kib=maximum if isinstance(maximum, int) else 0,
                               nova=None, unballoonable=str(exc), stats_period_s=None)
        with self._lock:
            # An event while the XML was read may mean the XML is already old:
            # use it this cycle, read it again next cycle.
            if self._generation.get(uuid, 0) == generation:
                self._facts[uuid] = (dom_id, facts)
        return facts

    def _domain(self, uuid: str) -> libvirt.virDomain:
        dom = self._domains.get(uuid)
        if dom is None:
            raise GuestGone(f'domain {uuid} is not active')
        return dom

    def _guest_call(self, uuid: str, what: str, call: Callable[[libvirt.virDomain], Any]) -> Any:
        dom = self._domain(uuid)
        conn = self._conn
        stuck = self._stuck.get(uuid)
        if stuck is not None:
            if stuck.is_alive():
                raise GuestBusy(f'{what}: an earlier call to its QEMU has not returned '
                                f'(hung monitor?)')
            del self._stuck[uuid]
        try:
            self.calls += 1
            return _call_with_timeout(what, lambda: call(dom), self.call_timeout_s)
        except CallTimedOut as exc:
            self._stuck[uuid] = exc.thread
            raise GuestBusy(str(exc)) from None
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _GONE_ERRORS:
                raise GuestGone(f'{what}: {exc}') from None
            if conn is not None and self._lost(conn, exc):
                raise DriverUnavailable(f'{self.uri}: {exc}') from None
            raise GuestActionFailed(f'{what}: {exc}') from None

    def set_target(self, uuid: str, target_kib: int) -> None:
        job = self._guest_call(uuid, 'job info', lambda dom: dom.jobInfo())
        if job and job[0] != libvirt.VIR_DOMAIN_JOB_NONE:
            raise GuestBusy(f'a libvirt job (type {job[0]}) is in progress, such as a '
                            f'migration')
        self._guest_call(uuid, 'set balloon target', lambda dom: dom.setMemoryFlags(
            target_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE))

    def set_stats_period(self, uuid: str, period_s: int) -> None:
        self._guest_call(uuid, 'set stats period', lambda dom: dom.setMemoryStatsPeriod(
            period_s, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        with self._lock:
            self._facts.pop(uuid, None)
