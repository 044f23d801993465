"""Real libvirt/QEMU test guests for the nova-balloon functional tests.

The agent under test only sees what a Nova compute node shows it: libvirt
domains whose XML Nova wrote.  So the guests here are described with
Nova's own ``nova.virt.libvirt.config`` classes, the way nova 34's libvirt
driver builds them (metadata, balloon, memory backing), and they run a
tiny busybox initramfs (tools/build-guest-image.sh) under TCG, driven over
the serial console.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import re
import socket
import subprocess
import tempfile
import threading
import time
import uuid as uuidlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Self, TypeVar, overload

import libvirt
from lxml import etree

_T = TypeVar("_T")

READY_MARKER = "NOVA-BALLOON-GUEST-READY"
# console=ttyS0: the harness talks to the guest over the serial port only.
# rdinit=/init: boot from the initramfs, there is no root disk.
# panic=-1: a panicking guest reboots at once (it shows up as a fresh
# READY marker) instead of hanging a test until its timeout.
# loglevel=4: errors and worse (OOM kills) reach the console, chatter not.
# no_timer_check: what nova adds for virt_type=qemu.
GUEST_CMDLINE = "console=ttyS0 rdinit=/init panic=-1 loglevel=4 no_timer_check"
DEFAULT_BOOT_TIMEOUT = 90.0
# Guest kernel lines that mean the OOM killer fired.
OOM_RE = re.compile(r"Out of memory: Kill(?:ed)? process|oom-kill:|invoked oom-killer")
# Unix socket paths must fit in sun_path (108 bytes incl. NUL).
_MAX_SOCKET_PATH = 100


class GuestError(Exception):
    """A test guest misbehaved (boot, console or command failure)."""


class GuestConsoleClosed(GuestError):
    """The serial console hung up: QEMU exited or the guest died."""


def _vconfig() -> Any:
    """Import nova's libvirt config lazily: it is slow and warns noisily.

    Importing it pulls in eventlet (deprecation warnings) and takes a few
    seconds, which only the tests that build guest XML should pay.
    """
    with warnings.catch_warnings():
        # EventletDeprecationWarning derives from Warning only.
        warnings.simplefilter("ignore")
        from nova.virt.libvirt import config as vconfig
    return vconfig


def _nova_version() -> str:
    """What nova 34 writes in <nova:package version=...>.

    ``version_string_with_package()`` needs an initialised oslo.config;
    without a 'release' file (the usual case) it equals the bare version.
    """
    from nova import version

    if version.NOVA_PACKAGE:
        return f"{version.version_string()}-{version.NOVA_PACKAGE}"
    return str(version.version_string())


@dataclasses.dataclass
class _ImageMeta:
    """Stand-in for nova.virt.driver.ImageMeta (same attributes).

    LibvirtConfigGuestMetaImage only reads these attributes; importing
    nova.virt.driver for the real dataclass would drag in much more.
    """

    id: str
    name: str
    container_format: str | None = "bare"
    disk_format: str | None = "raw"
    min_disk: int | None = 0
    min_ram: int | None = 0
    properties: dict[str, str] = dataclasses.field(default_factory=dict)


def _balloon_config(model: str, period: int | None, autodeflate: bool) -> Any:
    """Nova's LibvirtConfigMemoryBalloon, with autodeflate switchable.

    nova 34's class always writes autodeflate='on' and
    freePageReporting='on'; ``autodeflate=False`` writes neither, as Nova
    before 34 did (QEMU's defaults: both off).
    """
    vconfig = _vconfig()

    class MemoryBalloon(vconfig.LibvirtConfigMemoryBalloon):  # type: ignore
        def format_dom(self) -> Any:
            dev = super().format_dom()
            if not autodeflate:
                for attribute in ("autodeflate", "freePageReporting"):
                    dev.attrib.pop(attribute, None)
            return dev

    balloon = MemoryBalloon()
    balloon.model = model
    balloon.period = period
    return balloon


def nova_metadata_config(
    *,
    name: str,
    memory_mib: int,
    flavor_name: str,
    extra_specs: Mapping[str, str] | None,
    flavor_id: str | None = None,
    vcpus: int = 1,
    image_uuid: str = "00000000-0000-4000-8000-00000000b100",
    user_id: str = "0123456789abcdef0123456789abcdef",
    user_name: str = "nova-balloon-tester",
    project_id: str = "fedcba9876543210fedcba9876543210",
    project_name: str = "nova-balloon-tests",
    creation_time: float | None = None,
) -> Any:
    """<nova:instance> as nova 34's driver._get_guest_config_meta builds it.

    Mirrors that method field by field for an image-backed instance with
    no ports, so the agent parses exactly what a compute node shows it.
    """
    vconfig = _vconfig()
    meta = vconfig.LibvirtConfigGuestMetaNovaInstance()
    meta.package = _nova_version()
    meta.name = name
    meta.creationTime = time.time() if creation_time is None else (creation_time)
    meta.roottype = "image"
    meta.rootid = image_uuid

    imeta = vconfig.LibvirtConfigGuestMetaImage()
    imeta.uuid = meta.rootid
    imeta.image_meta = _ImageMeta(id=image_uuid, name="nova-balloon-guest")
    meta.image = imeta

    ometa = vconfig.LibvirtConfigGuestMetaNovaOwner()
    ometa.userid = user_id
    ometa.username = user_name
    ometa.projectid = project_id
    ometa.projectname = project_name
    meta.owner = ometa

    fmeta = vconfig.LibvirtConfigGuestMetaNovaFlavor()
    fmeta.name = flavor_name
    fmeta.id = flavor_id if flavor_id is not None else flavor_name
    fmeta.memory = memory_mib
    fmeta.vcpus = vcpus
    fmeta.ephemeral = 0
    fmeta.disk = 0
    fmeta.swap = 0
    fmeta.extra_specs = dict(extra_specs or {})
    meta.flavor = fmeta

    meta.ports = vconfig.LibvirtConfigGuestMetaNovaPorts([])
    return meta


def nova_domain_xml(
    *,
    name: str,
    uuid: str,
    memory_mib: int,
    flavor_name: str,
    extra_specs: Mapping[str, str] | None,
    kernel: str | Path,
    initrd: str | Path,
    console_socket: str | Path,
    console_log: str | Path | None = None,
    balloon_model: str = "virtio",
    stats_period: int | None = None,
    autodeflate: bool = True,
    hugepages: bool | int = False,
    locked: bool = False,
    with_nova_metadata: bool = True,
    extra_specs_in_metadata: bool = True,
    display_name: str | None = None,
    flavor_id: str | None = None,
    cmdline: str = GUEST_CMDLINE,
) -> str:
    """Domain XML for a small Nova-like test guest (1 vCPU, no disk/NIC).

    Built with nova's LibvirtConfigGuest the way nova 34's libvirt driver
    does for virt_type=qemu on x86_64 (machine 'pc', ACPI/APIC, smbios
    sysinfo, UTC clock, serial console, memballoon, Nova metadata), so
    that the agent sees what it would see on a compute node.

    ``hugepages``: True for 2 MiB pages, or a page size in KiB; like nova
    this also gives the guest a NUMA cell (page nodesets refer to it).
    ``locked``: <memoryBacking><locked/>, as nova sets for
    hw:locked_memory / realtime guests.
    ``console_log``: also have virtlogd copy the console to this file, as
    nova does for its console logs.
    ``extra_specs_in_metadata=False``: metadata as Nova before 2025.2 wrote
    it, without the flavor's extra specs (the agent then reads the flavor's
    balloon keys from ``[balloon] flavor_policy_file``).
    """
    vconfig = _vconfig()
    memory_kib = memory_mib * 1024

    guest = vconfig.LibvirtConfigGuest()
    guest.virt_type = "qemu"  # TCG: KVM is not usable on test machines
    guest.name = name
    guest.uuid = uuid
    guest.memory = memory_kib
    guest.vcpus = 1

    if hugepages or locked:
        membacking = vconfig.LibvirtConfigGuestMemoryBacking()
        if hugepages:
            page = vconfig.LibvirtConfigGuestMemoryBackingPage()
            page.size_kb = 2048 if hugepages is True else int(hugepages)
            page.nodeset = [0]
            membacking.hugepages = [page]
            cpu = vconfig.LibvirtConfigGuestCPU()
            numa = vconfig.LibvirtConfigGuestCPUNUMA()
            cell = vconfig.LibvirtConfigGuestCPUNUMACell()
            cell.id = 0
            cell.cpus = {0}
            cell.memory = memory_kib
            numa.cells.append(cell)
            cpu.numa = numa
            guest.cpu = cpu
        if locked:
            membacking.locked = True
        guest.membacking = membacking

    if with_nova_metadata:
        guest.metadata.append(
            nova_metadata_config(
                name=display_name or name,
                memory_mib=memory_mib,
                flavor_name=flavor_name,
                extra_specs=extra_specs,
                flavor_id=flavor_id,
            )
        )

    guest.os_type = "hvm"
    guest.os_arch = "x86_64"
    guest.os_mach_type = "pc"  # nova's x86 default
    guest.os_kernel = str(kernel)
    guest.os_initrd = str(initrd)
    guest.os_cmdline = cmdline

    if with_nova_metadata:
        from nova import version

        sysinfo = vconfig.LibvirtConfigGuestSysinfo()
        sysinfo.system_manufacturer = version.NOVA_VENDOR
        sysinfo.system_product = version.NOVA_PRODUCT
        sysinfo.system_version = _nova_version()
        sysinfo.system_serial = uuid
        sysinfo.system_uuid = uuid
        sysinfo.system_family = "Virtual Machine"
        guest.sysinfo = sysinfo
        guest.os_smbios = vconfig.LibvirtConfigGuestSMBIOS()

    guest.add_feature(vconfig.LibvirtConfigGuestFeatureACPI())
    guest.add_feature(vconfig.LibvirtConfigGuestFeatureAPIC())
    clock = vconfig.LibvirtConfigGuestClock()
    clock.offset = "utc"
    guest.set_clock(clock)

    serial = vconfig.LibvirtConfigGuestSerial()
    serial.type = "unix"  # written as <source mode='bind' path=.../>
    serial.source_path = str(console_socket)
    if console_log is not None:
        log = vconfig.LibvirtConfigGuestCharDeviceLog()
        log.file = str(console_log)
        serial.log = log
    guest.add_device(serial)

    guest.add_device(_balloon_config(balloon_model, stats_period, autodeflate))
    if extra_specs_in_metadata:
        return str(guest.to_xml())
    root = guest.format_dom()
    for specs in root.iter("{http://openstack.org/xmlns/libvirt/nova/1.1}extraSpecs"):
        specs.getparent().remove(specs)
    return str(etree.tostring(root, encoding="unicode", pretty_print=True))


class GuestConsole:
    """Client of a guest's serial console exposed as a unix socket.

    A reader thread keeps everything the guest prints (carriage returns
    dropped), so tests can wait for output that arrived at any time and
    check the whole log afterwards, e.g. for OOM kills.
    """

    def __init__(
        self,
        socket_path: str | Path,
        *,
        log_path: str | Path | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.socket_path = str(socket_path)
        self._sock = self._connect(self.socket_path, connect_timeout)
        self._text = ""
        self._cond = threading.Condition()
        self._closed = False
        self._log_path = None if log_path is None else Path(log_path)
        self.last_exit_status: int | None = None
        self._reader = threading.Thread(
            target=self._read_loop,
            name=f"console:{Path(self.socket_path).name}",
            daemon=True,
        )
        self._reader.start()

    @staticmethod
    def _connect(path: str, timeout: float) -> socket.socket:
        """Retry: QEMU creates the listening socket a moment after start."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return sock
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise GuestError(
                        f"console socket {path} not connectable after {timeout:.0f}s: {exc}"
                    ) from exc
                time.sleep(0.1)

    def _read_loop(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        log: IO[bytes] | None = None
        try:
            if self._log_path is not None:
                log = self._log_path.open("ab")
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                if log is not None:
                    log.write(data)
                    log.flush()
                text = decoder.decode(data).replace("\r", "")
                with self._cond:
                    self._text += text
                    self._cond.notify_all()
        finally:
            if log is not None:
                log.close()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once the guest side hung up (QEMU gone) or close() ran."""
        with self._cond:
            return self._closed

    def log(self) -> str:
        """Everything the guest printed since we connected."""
        with self._cond:
            return self._text

    @property
    def offset(self) -> int:
        """Current end of the log, for ``since=`` of wait_for/oom_killed."""
        with self._cond:
            return len(self._text)

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for error messages."""
        return self.log()[-chars:]

    @overload
    def wait_for(self, pattern: str, timeout: float = 60.0, *, since: int = 0) -> str: ...

    @overload
    def wait_for(
        self,
        pattern: re.Pattern[str],
        timeout: float = 60.0,
        *,
        since: int = 0,
    ) -> re.Match[str]: ...

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = 60.0,
        *,
        since: int = 0,
    ) -> str | re.Match[str]:
        """Wait until text (or a compiled regex) shows in the log.

        Searches from offset ``since``; returns the matched text for a
        plain string, the match object for a regex.  Raises TimeoutError
        (with the log tail) or GuestConsoleClosed if the guest went away.
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._text, since)
                if match is not None:
                    return match if isinstance(pattern, re.Pattern) else (match.group(0))
                if self._closed:
                    raise GuestConsoleClosed(
                        f"console closed while waiting for "
                        f"{regex.pattern!r}; log tail:\n{self._text[-3000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{regex.pattern!r} not seen on the console within "
                        f"{timeout:.0f}s; log tail:\n{self._text[-3000:]}"
                    )
                self._cond.wait(remaining)

    def send(self, data: str | bytes) -> None:
        """Type raw input on the console (e.g. "\\x03" for Ctrl-C)."""
        if isinstance(data, str):
            data = data.encode()
        self._sock.sendall(data)

    def run(self, command: str, timeout: float = 30.0, *, check: bool = False) -> str:
        """Run a shell command in the guest and return its output.

        The output is framed by unique markers that the echoed command
        line cannot contain (they are split by quotes there), so the
        terminal echo and the prompt never leak into the result.  Kernel
        messages printed meanwhile can, as on any serial console.  The exit
        status goes to ``last_exit_status``; ``check=True`` raises on a
        non-zero one.  Background jobs (``cmd &``) should redirect their
        output, or it will mix with later commands.
        """
        if "\n" in command or len(command) > 900:
            raise ValueError("run() takes one line of at most 900 chars")
        token = uuidlib.uuid4().hex[:12]
        begin = f"NBC-BEGIN-{token}"
        end = f"NBC-END-{token}"
        # One line, or the prompt and echo of the next lines would land
        # between the markers.  "cmd &; x" is a syntax error: no ';' then.
        command = command.strip()
        sep = " " if command.endswith("&") and not command.endswith("&&") else "; "
        since = self.offset
        self.send(f"echo NBC''-BEGIN-{token}; {command}{sep}echo NBC''-END-{token}:$?\n")
        match = self.wait_for(
            re.compile(
                rf"{re.escape(begin)}\n(.*?){re.escape(end)}:(\d+)\n",
                re.DOTALL,
            ),
            timeout,
            since=since,
        )
        self.last_exit_status = int(match.group(2))
        output = match.group(1)
        if check and self.last_exit_status != 0:
            raise GuestError(f"guest command {command!r} exited {self.last_exit_status}: {output}")
        return output

    def wait_for_shell(self, timeout: float = 30.0) -> None:
        """Wait until the guest shell answers (input before it is lost)."""
        deadline = time.monotonic() + timeout
        while True:
            token = uuidlib.uuid4().hex[:12]
            since = self.offset
            self.send(f"echo NBC''-ALIVE-{token}\n")
            try:
                self.wait_for(
                    f"NBC-ALIVE-{token}",
                    min(3.0, max(0.1, deadline - time.monotonic())),
                    since=since,
                )
                return
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"guest shell not answering after {timeout:.0f}s; log tail:\n{self.tail()}"
                    ) from None

    def oom_killed(self, since: int = 0) -> bool:
        """True if the guest kernel reported an OOM kill (after since)."""
        return OOM_RE.search(self.log(), since) is not None

    def close(self) -> None:
        """Disconnect and stop the reader thread; idempotent."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclasses.dataclass
class BootedGuest:
    """A running test guest, as yielded by booted_guest()."""

    dom: libvirt.virDomain
    uuid: str
    name: str
    console: GuestConsole
    xml: str
    boot_seconds: float


def guest_meminfo(console: GuestConsole) -> dict[str, int]:
    """The guest's /proc/meminfo as {field: value} (kB, or pages/counts)."""
    out = console.run("cat /proc/meminfo", check=True)
    info: dict[str, int] = {}
    for match in re.finditer(r"^([A-Za-z0-9_()]+):\s+(\d+)(?: kB)?\s*$", out, re.MULTILINE):
        info[match.group(1)] = int(match.group(2))
    if "MemTotal" not in info:
        raise GuestError(f"unparsable /proc/meminfo from guest: {out!r}")
    return info


def wait_until(
    predicate: Callable[[], _T | None],
    timeout: float,
    what: str,
    interval: float = 0.5,
) -> _T:
    """Poll until predicate() is truthy and return it; else TimeoutError.

    Balloon moves and guest stats settle asynchronously, so tests poll
    with a bound instead of sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s: {what}")
        time.sleep(interval)


def start_memhog(
    console: GuestConsole,
    *,
    mib: int,
    rate: float,
    hold: float | None = None,
    log: str = "/tmp/memhog.log",
) -> str:
    """Start memhog in the guest background; return its guest log path.

    Its output goes to a guest file so it cannot mix with the output of
    later console commands.
    """
    hold_arg = "" if hold is None else f" --hold {hold:g}"
    console.run(
        f"memhog --mib {mib} --rate {rate:g}{hold_arg} >{log} 2>&1 &",
        check=True,
    )
    return log


def wait_memhog(
    console: GuestConsole,
    log: str = "/tmp/memhog.log",
    state: str = "holding",
    timeout: float = 60.0,
) -> str:
    """Wait until memhog's guest log shows a state line ('holding', 'done')."""
    return wait_until(
        lambda: out if f"memhog: {state}" in (out := console.run(f"cat {log}")) else "",
        timeout,
        f"memhog {state!r} in guest {log}",
    )


def host_supports_locked_memory() -> bool:
    """Can libvirtd lift QEMU's RLIMIT_MEMLOCK (needs CAP_SYS_RESOURCE)?

    <memoryBacking><locked/> guests fail to start in sandboxes that drop
    that capability; tests of locked guests skip there.
    """
    cap_sys_resource = 24
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap_sys_resource & 1)
    return False


def host_supports_hugepages() -> bool:
    """Is hugetlbfs mounted (libvirt needs it for hugepage guests)?"""
    mounts = Path("/proc/mounts").read_text().split("\n")
    return any(
        len(fields) > 2 and fields[2] == "hugetlbfs" for fields in (line.split() for line in mounts)
    )


def destroy_quietly(dom: libvirt.virDomain) -> None:
    """Destroy a domain, ignoring that it may already be gone.

    If the domain's connection died (a test restarted libvirtd), the domain
    is looked up again on a live connection.
    """
    gone = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)
    try:
        dom.destroy()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in gone:
            return
        if _answers(dom.connect()):
            raise
        try:
            live_connection().lookupByUUIDString(dom.UUIDString()).destroy()
        except libvirt.libvirtError as again:
            if again.get_error_code() not in gone:
                raise


def _answers(conn: libvirt.virConnect) -> bool:
    """Whether libvirtd still answers on this connection (isAlive lags a restart)."""
    try:
        conn.getLibVersion()
    except libvirt.libvirtError:
        return False
    return True


def current_domain(guest: BootedGuest) -> libvirt.virDomain:
    """The guest's domain on a live connection (libvirtd may have restarted)."""
    if _answers(guest.dom.connect()):
        return guest.dom
    return live_connection().lookupByUUIDString(guest.uuid)


def _socket_path(workdir: Path, name: str) -> tuple[Path, Path | None]:
    """Console socket path; in a short temp dir if workdir is too deep."""
    path = workdir / f"{name}.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path, None
    short = Path(tempfile.mkdtemp(prefix="nbg-"))
    return short / "console.sock", short


@contextlib.contextmanager
def booted_guest(
    conn: libvirt.virConnect,
    *,
    name: str,
    memory_mib: int,
    flavor_name: str,
    extra_specs: Mapping[str, str] | None,
    image_dir: str | Path,
    workdir: str | Path,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    **xml_kwargs: Any,
) -> Iterator[BootedGuest]:
    """Boot a transient Nova-like guest and destroy it afterwards.

    The domain is created paused and resumed only once the console is
    connected, so no early output (or the READY marker) can be missed.
    The XML and the console log are kept in ``workdir`` for debugging.
    """
    image_dir = Path(image_dir).resolve()  # libvirtd has another cwd
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    uuid = str(xml_kwargs.pop("uuid", None) or uuidlib.uuid4())
    sock_path, sock_dir = _socket_path(workdir, name)
    sock_path.unlink(missing_ok=True)
    xml = nova_domain_xml(
        name=name,
        uuid=uuid,
        memory_mib=memory_mib,
        flavor_name=flavor_name,
        extra_specs=extra_specs,
        kernel=image_dir / "vmlinuz",
        initrd=image_dir / "initramfs.img",
        console_socket=sock_path,
        **xml_kwargs,
    )
    (workdir / f"{name}.xml").write_text(xml)

    start = time.monotonic()
    dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
    console: GuestConsole | None = None
    try:
        console = GuestConsole(sock_path, log_path=workdir / f"{name}.console.log")
        dom.resume()
        console.wait_for(READY_MARKER, boot_timeout)
        console.wait_for_shell(max(5.0, boot_timeout - (time.monotonic() - start)))
        yield BootedGuest(
            dom=dom,
            uuid=uuid,
            name=name,
            console=console,
            xml=xml,
            boot_seconds=time.monotonic() - start,
        )
    finally:
        if console is not None:
            console.close()
        destroy_quietly(dom)
        sock_path.unlink(missing_ok=True)
        if sock_dir is not None:
            with contextlib.suppress(OSError):
                sock_dir.rmdir()


def _ignore_libvirt_error(_ctx: object, _err: object) -> None:
    """Errors still raise libvirtError; only the stderr echo is muted."""


_connection: libvirt.virConnect | None = None


def live_connection() -> libvirt.virConnect:
    """A live connection to qemu:///system, starting libvirtd if needed.

    Re-opened when it died: the fault tests restart libvirtd on purpose.
    """
    global _connection
    if _connection is not None and _answers(_connection):
        return _connection
    subprocess.run(
        ["bash", str(Path(__file__).resolve().parents[2] / "tools" / "start-libvirtd.sh")],
        check=True,
    )
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    _connection = libvirt.open("qemu:///system")
    return _connection
