"""The [metrics] group: the agent's Prometheus endpoint."""

from __future__ import annotations

import ipaddress
import re

from oslo_config import cfg

metrics_group = cfg.OptGroup(
    'metrics',
    title='Prometheus metrics',
    help="""
The agent's Prometheus endpoint: per guest balloon figures and states, per
host memory and the agent's own health. Off unless ``listen`` names an
address. The operator docs list every metric and give a scrape config and
alert rules.
""")

metrics_opts = [
    cfg.StrOpt('listen',
               default='',
               help="""
Address and port, ``HOST:PORT``, where the agent serves its metrics over HTTP
(``http://HOST:PORT/metrics``) for Prometheus to scrape. Empty (the default)
serves none. The metrics name the host's instances and flavors: listen on a
management network, not a public one.

Possible values:

* ``127.0.0.1:9740``: this host only (a Prometheus agent on the host)
* ``192.0.2.10:9740``: one address of the host
* ``0.0.0.0:9740`` or ``[::]:9740``: every IPv4, or every IPv6 (and IPv4)
  address
* A host name that resolves to one of the host's addresses
"""),
]

_HOST_PORT = re.compile(r'^(?:\[(?P<ipv6>[^\]]+)\]|(?P<host>[^\[\]:]+)):(?P<port>\d+)$')
# A DNS name: labels of letters, digits and hyphens, not starting or ending with one.
_HOST_NAME = re.compile(r'^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$')


class ListenAddressError(ValueError):
    """``[metrics] listen`` cannot be used; the message says why."""


def listen_address(value: str) -> tuple[str, int] | None:
    """``[metrics] listen`` as (host, port), or None when metrics are off.

    Raises ListenAddressError naming the value and what is wrong with it.
    """
    value = value.strip()
    if not value:
        return None
    match = _HOST_PORT.match(value)
    if match is None:
        raise ListenAddressError(
            f'[metrics] listen = {value!r}: expected HOST:PORT (an IPv6 address in '
            f'brackets, as [::1]:9740), or nothing to serve no metrics')
    port = int(match['port'])
    if not 1 <= port <= 65535:
        raise ListenAddressError(f'[metrics] listen = {value!r}: port {port} is not in '
                                 f'1-65535')
    if match['ipv6'] is not None:
        try:
            ipaddress.IPv6Address(match['ipv6'])
        except ValueError as exc:
            raise ListenAddressError(f'[metrics] listen = {value!r}: {exc}') from None
        return match['ipv6'], port
    host = match['host']
    if not _HOST_NAME.match(host):
        raise ListenAddressError(f'[metrics] listen = {value!r}: {host!r} is neither an IPv4 '
                                 f'address nor a host name')
    return host, port


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(metrics_group)
    conf.register_opts(metrics_opts, group=metrics_group)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {metrics_group: metrics_opts}
