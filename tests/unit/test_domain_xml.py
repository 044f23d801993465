"""Unit tests of nova_balloon.virt.libvirt.domain_xml.parse_domain_xml."""

from __future__ import annotations

import pytest

from nova_balloon.model import NovaMetadata
from nova_balloon.virt.libvirt.domain_xml import (
    MAX_XML_BYTES,
    DomainXMLError,
    parse_domain_xml,
)

NS_11 = 'http://openstack.org/xmlns/libvirt/nova/1.1'
NS_10 = 'http://openstack.org/xmlns/libvirt/nova/1.0'
UUID = '6f1f8b5e-2b5a-4c1e-9d4e-0a1b2c3d4e5f'

DEFAULT_BALLOON = ("<memballoon model='virtio'>"
                   "<stats period='10'/></memballoon>")
SPECS = ('<nova:extraSpecs>'
         '<nova:extraSpec name="balloon:overcommit_ratio">1.5</nova:extraSpec>'
         '<nova:extraSpec name="hw:cpu_policy"> dedicated </nova:extraSpec>'
         '</nova:extraSpecs>')
NOVA_META = ('<nova:instance xmlns:nova="{ns}">'
             '<nova:package version="31.0.0"/>'
             '<nova:name>vm-1</nova:name>'
             '<nova:flavor name="m1.large">'
             '<nova:memory>4096</nova:memory><nova:vcpus>2</nova:vcpus>'
             '{specs}'
             '</nova:flavor>'
             '</nova:instance>')


def domain(*, uuid: str | None = UUID, name: str = 'instance-00000001',
           memory: str = "<memory unit='KiB'>4194304</memory>",
           metadata: str | None = None, backing: str = '', devices: str = '',
           balloon: str | None = DEFAULT_BALLOON, extra: str = '') -> str:
    return (f"<domain type='kvm'>"
            f"<name>{name}</name>"
            + (f'<uuid>{uuid}</uuid>' if uuid is not None else '')
            + (f'<metadata>{metadata}</metadata>' if metadata is not None else '')
            + f"{memory}<currentMemory unit='KiB'>4194304</currentMemory>"
            f"{backing}{extra}"
            f"<devices><disk type='file' device='disk'/>{devices}"
            f"{balloon or ''}</devices>"
            f"</domain>")


def nova_meta(ns: str = NS_11, specs: str = SPECS) -> str:
    return NOVA_META.format(ns=ns, specs=specs)


def test_plain_domain():
    facts = parse_domain_xml(domain())
    assert facts.uuid == UUID
    assert facts.name == 'instance-00000001'
    assert facts.max_memory_kib == 4194304
    assert facts.nova is None
    assert facts.unballoonable is None
    assert facts.stats_period_s == 10


@pytest.mark.parametrize('ns', [NS_11, NS_10])
def test_nova_metadata_namespaces(ns):
    facts = parse_domain_xml(domain(metadata=nova_meta(ns)))
    assert facts.nova == NovaMetadata(
        instance_name='vm-1', flavor_name='m1.large', flavor_memory_mb=4096,
        extra_specs={'balloon:overcommit_ratio': '1.5', 'hw:cpu_policy': 'dedicated'})


def test_unknown_namespace_is_no_nova_metadata():
    meta = nova_meta('http://openstack.org/xmlns/libvirt/nova/9.9')
    assert parse_domain_xml(domain(metadata=meta)).nova is None


def test_other_metadata_alongside_nova():
    meta = '<app:thing xmlns:app="http://example.com/app">x</app:thing>' + nova_meta()
    assert parse_domain_xml(domain(metadata=meta)).nova.flavor_name == 'm1.large'


def test_extra_specs_absent_is_none():
    """Before Nova 2025.2 there is no <extraSpecs>: None, not {}."""
    facts = parse_domain_xml(domain(metadata=nova_meta(specs='')))
    assert facts.nova.extra_specs is None
    assert facts.nova.flavor_name == 'm1.large'


@pytest.mark.parametrize('specs', ['<nova:extraSpecs/>', '<nova:extraSpecs></nova:extraSpecs>'])
def test_extra_specs_empty_is_empty_dict(specs):
    facts = parse_domain_xml(domain(metadata=nova_meta(specs=specs)))
    assert facts.nova.extra_specs == {}


def test_extra_spec_without_text_is_empty_string():
    specs = '<nova:extraSpecs><nova:extraSpec name="balloon:shares"/></nova:extraSpecs>'
    facts = parse_domain_xml(domain(metadata=nova_meta(specs=specs)))
    assert facts.nova.extra_specs == {'balloon:shares': ''}


def test_instance_without_flavor():
    meta = f'<nova:instance xmlns:nova="{NS_11}"><nova:name>vm-1</nova:name></nova:instance>'
    facts = parse_domain_xml(domain(metadata=meta))
    assert facts.nova == NovaMetadata(instance_name='vm-1', flavor_name=None,
                                      flavor_memory_mb=None, extra_specs=None)


def test_flavor_memory_not_a_number_is_none():
    meta = nova_meta().replace('<nova:memory>4096</nova:memory>',
                               '<nova:memory>lots</nova:memory>')
    assert parse_domain_xml(domain(metadata=meta)).nova.flavor_memory_mb is None


def test_flavor_memory_unicode_digit_does_not_crash():
    meta = nova_meta().replace('<nova:memory>4096</nova:memory>',
                               '<nova:memory>\u00b2</nova:memory>')
    assert parse_domain_xml(domain(metadata=meta)).nova.flavor_memory_mb is None


def test_stats_period_unicode_digit_does_not_crash():
    balloon = "<memballoon model='virtio'><stats period='\u00b2'/></memballoon>"
    assert parse_domain_xml(domain(balloon=balloon)).stats_period_s is None


def test_memory_unicode_digit_is_domain_xml_error():
    with pytest.raises(DomainXMLError):
        parse_domain_xml(domain(memory='<memory>\u00b2</memory>'))


# -- unballoonable -------------------------------------------------------------------

@pytest.mark.parametrize('kwargs, reason', [
    (dict(balloon=None), 'no balloon device (memballoon model none)'),
    (dict(balloon="<memballoon model='none'/>"), 'no balloon device (memballoon model none)'),
    (dict(balloon='<memballoon/>'), 'no balloon device (memballoon model none)'),
    (dict(backing='<memoryBacking><hugepages/></memoryBacking>'), 'hugepage memory backing'),
    (dict(backing="<memoryBacking><hugepages><page size='2048' unit='KiB'/></hugepages>"
                  '</memoryBacking>'), 'hugepage memory backing'),
    (dict(backing='<memoryBacking><locked/></memoryBacking>'), 'locked memory backing'),
    (dict(devices="<hostdev mode='subsystem' type='pci' managed='yes'>"
                  "<source><address domain='0x0000' bus='0x3b' slot='0x00' "
                  "function='0x1'/></source></hostdev>"),
     'PCI host device assigned (QEMU disables ballooning with vfio)'),
    (dict(devices="<interface type='hostdev' managed='yes'><source><address "
                  "type='pci' bus='0x3b'/></source></interface>"),
     'PCI host device assigned (QEMU disables ballooning with vfio)'),
    (dict(extra="<launchSecurity type='sev'><policy>0x0033</policy></launchSecurity>"),
     'memory encryption (sev)'),
    (dict(extra='<launchSecurity/>'), 'memory encryption (unknown)'),
])
def test_unballoonable(kwargs, reason):
    assert parse_domain_xml(domain(**kwargs)).unballoonable == reason


@pytest.mark.parametrize('kwargs', [
    dict(backing='<memoryBacking><source type="memfd"/><access mode="shared"/>'
                 '</memoryBacking>'),
    dict(devices="<hostdev mode='subsystem' type='usb'/>"),
    dict(devices="<interface type='bridge'/>"),
    dict(balloon="<memballoon model='virtio-non-transitional'/>"),
])
def test_balloonable(kwargs):
    assert parse_domain_xml(domain(**kwargs)).unballoonable is None


def test_balloon_checked_before_backing():
    facts = parse_domain_xml(domain(balloon=None,
                                    backing='<memoryBacking><hugepages/></memoryBacking>'))
    assert facts.unballoonable == 'no balloon device (memballoon model none)'


# -- stats period ---------------------------------------------------------------------

@pytest.mark.parametrize('balloon, period', [
    ("<memballoon model='virtio'><stats period='5'/></memballoon>", 5),
    ("<memballoon model='virtio'><stats period='0'/></memballoon>", None),
    ("<memballoon model='virtio'><stats period='-1'/></memballoon>", None),
    ("<memballoon model='virtio'><stats period='x'/></memballoon>", None),
    ("<memballoon model='virtio'><stats/></memballoon>", None),
    ("<memballoon model='virtio'/>", None),
    (None, None),
])
def test_stats_period(balloon, period):
    assert parse_domain_xml(domain(balloon=balloon)).stats_period_s == period


# -- memory units ----------------------------------------------------------------------

@pytest.mark.parametrize('memory, kib', [
    ("<memory unit='KiB'>4194304</memory>", 4194304),
    ('<memory>4194304</memory>', 4194304),            # libvirt's default unit is KiB
    ("<memory unit='k'>2048</memory>", 2048),
    ("<memory unit='b'>1073741824</memory>", 1048576),
    ("<memory unit='bytes'>2048</memory>", 2),
    ("<memory unit='KB'>1024</memory>", 1000),         # 1024000 bytes
    ("<memory unit='MiB'>4096</memory>", 4194304),
    ("<memory unit='M'>1</memory>", 1024),
    ("<memory unit='MB'>1024</memory>", 1000000),      # 1.024e9 bytes
    ("<memory unit='GiB'>4</memory>", 4194304),
    ("<memory unit='G'>1</memory>", 1048576),
    ("<memory unit='GB'>2</memory>", 1953125),         # 2e9 / 1024
    ("<memory unit='KiB'> 4194304 </memory>", 4194304),
])
def test_memory_units(memory, kib):
    assert parse_domain_xml(domain(memory=memory)).max_memory_kib == kib


@pytest.mark.parametrize('memory', [
    '',
    '<memory/>',
    "<memory unit='KiB'>-1</memory>",
    "<memory unit='KiB'>4.5</memory>",
    "<memory unit='KiB'>lots</memory>",
    "<memory unit='furlongs'>4</memory>",
])
def test_bad_memory(memory):
    with pytest.raises(DomainXMLError):
        parse_domain_xml(domain(memory=memory))


# -- hostile and broken XML ---------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE domain [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<domain><name>&lol9;</name><uuid>x</uuid><memory>1</memory></domain>"""


def test_billion_laughs_rejected():
    with pytest.raises(DomainXMLError, match='rejected'):
        parse_domain_xml(BILLION_LAUGHS)


def test_external_entity_rejected():
    xml = ('<?xml version="1.0"?><!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           '<domain><name>&x;</name><uuid>x</uuid><memory>1</memory></domain>')
    with pytest.raises(DomainXMLError, match='rejected'):
        parse_domain_xml(xml)


def test_plain_doctype_rejected():
    with pytest.raises(DomainXMLError, match='rejected'):
        parse_domain_xml('<!DOCTYPE domain>' + domain())


def test_oversize_xml_rejected():
    padding = '<!--' + 'x' * MAX_XML_BYTES + '-->'
    xml = domain(metadata=padding)
    assert len(xml) > MAX_XML_BYTES
    with pytest.raises(DomainXMLError, match='limit'):
        parse_domain_xml(xml)


def test_xml_just_under_the_limit_parsed():
    base = domain(metadata='<!---->')
    xml = domain(metadata='<!--' + 'x' * (MAX_XML_BYTES - len(base)) + '-->')
    assert len(xml) == MAX_XML_BYTES
    assert parse_domain_xml(xml).uuid == UUID


@pytest.mark.parametrize('xml', [
    '',
    'not xml',
    '<domain><name>x</name>',
    domain()[:-3],
])
def test_malformed_xml(xml):
    with pytest.raises(DomainXMLError):
        parse_domain_xml(xml)


def test_missing_uuid():
    with pytest.raises(DomainXMLError, match='uuid'):
        parse_domain_xml(domain(uuid=None))


def test_blank_uuid():
    with pytest.raises(DomainXMLError, match='uuid'):
        parse_domain_xml(domain(uuid='  '))


def test_missing_name():
    with pytest.raises(DomainXMLError, match='name'):
        parse_domain_xml(domain(name=''))


def test_domain_xml_error_is_value_error():
    assert issubclass(DomainXMLError, ValueError)


# -- with Nova's own metadata classes ------------------------------------------------

NOVA_SPECS = {'balloon:overcommit_ratio': '2.0', 'balloon:min_memory_mb': '1024',
              'balloon:enabled': 'true', 'hw:mem_page_size': 'small'}


@pytest.fixture(scope='module')
def nova_config():
    return pytest.importorskip('nova.virt.libvirt.config')


def _nova_metadata(config, extra_specs) -> str:
    """The <nova:instance> element as Nova's libvirt driver writes it."""
    flavor = config.LibvirtConfigGuestMetaNovaFlavor()
    flavor.name = 'm1.balloon'
    flavor.id = '42'
    flavor.memory = 8192
    flavor.vcpus = 4
    flavor.disk = 20
    flavor.swap = 0
    flavor.ephemeral = 0
    flavor.extra_specs = extra_specs
    instance = config.LibvirtConfigGuestMetaNovaInstance()
    instance.package = '31.0.0'
    instance.name = 'my-server'
    instance.creationTime = 1700000000
    instance.flavor = flavor
    return instance.to_xml()


def test_nova_written_metadata_with_extra_specs(nova_config):
    metadata = _nova_metadata(nova_config, NOVA_SPECS)
    assert 'extraSpec name="balloon:overcommit_ratio"' in metadata
    facts = parse_domain_xml(domain(metadata=metadata,
                                    memory="<memory unit='KiB'>8388608</memory>"))
    assert facts.max_memory_kib == 8 * 1024 * 1024
    assert facts.nova == NovaMetadata(instance_name='my-server', flavor_name='m1.balloon',
                                      flavor_memory_mb=8192, extra_specs=NOVA_SPECS)


def test_nova_written_metadata_without_extra_specs(nova_config):
    """This Nova always writes <extraSpecs>; with none set it is empty: {}."""
    facts = parse_domain_xml(domain(metadata=_nova_metadata(nova_config, None)))
    assert facts.nova.flavor_name == 'm1.balloon'
    assert facts.nova.flavor_memory_mb == 8192
    assert facts.nova.extra_specs == {}
