"""Per-domain facts from libvirt's domain XML: Nova metadata and eligibility.

The XML is parsed with defusedxml (no DTDs, no entity expansion) and a size
limit, since a domain's <metadata> may hold anything its creator wrote.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from nova_balloon.model import GuestFacts, NovaMetadata

NOVA_NAMESPACES = (
    'http://openstack.org/xmlns/libvirt/nova/1.1',
    'http://openstack.org/xmlns/libvirt/nova/1.0',
)
MAX_XML_BYTES = 4 * 1024 * 1024
_UNIT_KIB = {'b': 1 / 1024, 'bytes': 1 / 1024, 'k': 1, 'kib': 1, 'kb': 1000 / 1024,
             'm': 1024, 'mib': 1024, 'mb': 1000 * 1000 / 1024,
             'g': 1024 ** 2, 'gib': 1024 ** 2, 'gb': 1000 ** 3 / 1024}


def _whole_number(text: str | None) -> int | None:
    """An ASCII decimal integer, or None ('²'.isdigit() is True, int('²') fails)."""
    text = (text or '').strip()
    return int(text) if text.isascii() and text.isdigit() else None


class DomainXMLError(ValueError):
    """The domain XML cannot be used; the guest is skipped with this reason."""


def _memory_kib(element: Element | None) -> int:
    amount = _whole_number(element.text) if element is not None else None
    if element is None or amount is None:
        raise DomainXMLError('domain XML has no valid <memory>')
    unit = element.get('unit', 'KiB').lower()
    if unit not in _UNIT_KIB:
        raise DomainXMLError(f'domain XML has an unknown memory unit {unit!r}')
    return int(amount * _UNIT_KIB[unit])


def _has_balloon(root: Element) -> bool:
    balloon = root.find('./devices/memballoon')
    return balloon is not None and balloon.get('model', 'none') != 'none'


def _unballoonable(root: Element) -> str | None:
    """Why the balloon cannot or must not move, from the devices and backing.

    Memory the host cannot take back: pinned for a device's DMA (VFIO for
    PCI and SR-IOV host devices and mediated devices such as vGPUs, vhost-vdpa
    for vDPA ports: QEMU then discards no page the balloon takes), locked,
    huge pages, encrypted, or a shared file the guest's pages live in.
    """
    if not _has_balloon(root):
        return 'no balloon device (memballoon model none)'
    backing = root.find('./memoryBacking')
    if backing is not None and backing.find('hugepages') is not None:
        return 'hugepage memory backing'
    if backing is not None and backing.find('locked') is not None:
        return 'locked memory backing'
    if backing is not None and backing.find("source[@type='file']") is not None and \
            backing.find("access[@mode='shared']") is not None:
        return 'shared file-backed memory (pages the balloon frees stay in the file)'
    if root.find("./devices/hostdev[@type='pci']") is not None or \
            root.find("./devices/interface[@type='hostdev']") is not None:
        return 'PCI host device assigned (QEMU disables ballooning with vfio)'
    if root.find("./devices/hostdev[@type='mdev']") is not None:
        return 'mediated device assigned, such as a vGPU (vfio pins guest memory)'
    if root.find("./devices/interface[@type='vdpa']") is not None:
        return 'vDPA interface (vhost-vdpa pins guest memory)'
    security = root.find('./launchSecurity')
    if security is not None:
        return f"memory encryption ({security.get('type', 'unknown')})"
    return None


def _stats_period(root: Element) -> int | None:
    stats = root.find('./devices/memballoon/stats')
    period = _whole_number(stats.get('period')) if stats is not None else None
    return period if period else None


def _nova_metadata(root: Element) -> NovaMetadata | None:
    for ns in NOVA_NAMESPACES:
        instance = root.find(f'./metadata/{{{ns}}}instance')
        if instance is None:
            continue
        flavor = instance.find(f'{{{ns}}}flavor')
        memory = flavor.findtext(f'{{{ns}}}memory') if flavor is not None else None
        specs_node = flavor.find(f'{{{ns}}}extraSpecs') if flavor is not None else None
        extra_specs = None
        if specs_node is not None:
            extra_specs = {node.get('name', ''): (node.text or '').strip()
                           for node in specs_node.findall(f'{{{ns}}}extraSpec')}
        return NovaMetadata(
            instance_name=instance.findtext(f'{{{ns}}}name'),
            flavor_name=flavor.get('name') if flavor is not None else None,
            flavor_memory_mb=_whole_number(memory),
            extra_specs=extra_specs)
    return None


def parse_domain_xml(xml: str) -> GuestFacts:
    """Parse one domain's XML into its facts; raises DomainXMLError."""
    if len(xml.encode('utf-8', 'replace')) > MAX_XML_BYTES:
        raise DomainXMLError(f'domain XML is over the '
                             f'{MAX_XML_BYTES} byte limit')
    try:
        root = SafeET.fromstring(xml, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException) as exc:
        raise DomainXMLError(f'domain XML rejected: {type(exc).__name__}: {exc}') from None
    uuid = (root.findtext('uuid') or '').strip()
    name = (root.findtext('name') or '').strip()
    if not uuid or not name:
        raise DomainXMLError('domain XML has no <uuid> or <name>')
    return GuestFacts(uuid=uuid, name=name,
                      max_memory_kib=_memory_kib(root.find('memory')),
                      nova=_nova_metadata(root),
                      unballoonable=_unballoonable(root),
                      stats_period_s=_stats_period(root),
                      balloon_device=_has_balloon(root))
