"""The thin client of Placement: find the compute node's provider, read and set MEMORY_MB.

It talks to Placement as nova-compute does: a keystoneauth1 session and
adapter loaded from the compute node's ``[placement]`` section, service type
``placement``. Only the MEMORY_MB inventory is written, with
``PUT /resource_providers/{uuid}/inventories/MEMORY_MB``, every other field
sent back as read, and the provider generation read with it so that a
concurrent writer (nova-compute's resource tracker) makes it fail with a 409
rather than be overwritten.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from keystoneauth1 import adapter as ks_adapter
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

from nova_balloon.conf.placement_ratio import PLACEMENT_GROUP
from nova_balloon.placement.guard import MemoryInventory

# 1.26: an inventory's reserved may equal its total (as Nova sends it).
MICROVERSION = '1.26'
MEMORY_MB = 'MEMORY_MB'
# Placement's error code for a stale resource provider generation.
GENERATION_CONFLICT = 'placement.concurrent_update'


class PlacementError(Exception):
    """Placement could not be reached or did not do what was asked."""


class PlacementUnavailable(PlacementError):
    """No answer, or a server error: try again at the next interval."""


class ProviderNotFound(PlacementError):
    """No resource provider of that name, or no MEMORY_MB inventory on it."""


class GenerationConflict(PlacementError):
    """The provider changed between our read and our write."""


class PlacementRefused(PlacementError):
    """Placement refused the write (InventoryInUse, a value out of range, ...)."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f'HTTP {status} {code}: {detail}')
        self.status = status
        self.code = code


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderMemory:
    """A provider's MEMORY_MB inventory as read, with what writing it back needs."""

    uuid: str
    name: str
    generation: int
    inventory: MemoryInventory
    # The inventory record as Placement returned it, to send back unchanged
    # but for its allocation_ratio.
    record: dict[str, Any]


def _error_of(response: Any) -> tuple[str, str]:
    """Placement's error code and detail from an error response."""
    try:
        error = response.json()['errors'][0]
        return error.get('code', 'placement.undefined_code'), \
            ' '.join(str(error.get('detail', '')).split())
    except (ValueError, KeyError, IndexError, TypeError):
        return 'unknown', ' '.join(response.text.split())[:300]


def load_adapter(conf: cfg.ConfigOpts) -> ks_adapter.Adapter:
    """A keystoneauth1 adapter from ``[placement]``, as nova-compute loads its own.

    Raises PlacementError when the section names no auth plugin, or one
    keystoneauth cannot load (an unknown ``auth_type``, a required option
    missing), with keystoneauth's reason.
    """
    try:
        auth = ks_loading.load_auth_from_conf_options(conf, PLACEMENT_GROUP)
        if auth is None:
            raise PlacementError(f'[{PLACEMENT_GROUP}] auth_type is not set: the agent reads '
                                 f"Placement's credentials from nova-compute's "
                                 f'[{PLACEMENT_GROUP}] section')
        session = ks_loading.load_session_from_conf_options(conf, PLACEMENT_GROUP, auth=auth)
        return ks_loading.load_adapter_from_conf_options(
            conf, PLACEMENT_GROUP, session=session, auth=auth, raise_exc=False)
    except ks_exceptions.ClientException as exc:
        raise PlacementError(f'[{PLACEMENT_GROUP}] credentials unusable: {exc}') from exc


class PlacementClient:
    """The few Placement calls the ratio mode makes; every failure is a PlacementError."""

    def __init__(self, adapter: ks_adapter.Adapter):
        self.adapter = adapter

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = self.adapter.request(
                url, method, json=body, microversion=MICROVERSION,
                headers={'Accept': 'application/json'})
        except ks_exceptions.ClientException as exc:
            raise PlacementUnavailable(f'{method} {url}: {exc}') from exc
        if response.status_code >= 500:
            raise PlacementUnavailable(f'{method} {url}: HTTP {response.status_code} '
                                       f'{_error_of(response)[1]}')
        return response

    def find_provider(self, name: str) -> str:
        """The UUID of the resource provider called ``name`` (the hypervisor hostname)."""
        response = self._request('GET', f'/resource_providers?name={quote(name, safe="")}')
        if response.status_code != 200:
            raise PlacementRefused(response.status_code, *_error_of(response))
        providers = response.json()['resource_providers']
        if not providers:
            raise ProviderNotFound(f'no resource provider named {name!r} in Placement; '
                                   f'is nova-compute running here, and is the name its '
                                   f'hypervisor hostname?')
        return str(providers[0]['uuid'])

    def read_memory(self, uuid: str, name: str) -> ProviderMemory:
        """The provider's MEMORY_MB inventory and usage, with the generation of the read."""
        response = self._request('GET', f'/resource_providers/{uuid}/inventories')
        if response.status_code == 404:
            raise ProviderNotFound(f'resource provider {name} ({uuid}) is gone')
        if response.status_code != 200:
            raise PlacementRefused(response.status_code, *_error_of(response))
        body = response.json()
        record = body['inventories'].get(MEMORY_MB)
        if record is None:
            raise ProviderNotFound(f'resource provider {name} ({uuid}) has no {MEMORY_MB} '
                                   f'inventory')
        usages = self._request('GET', f'/resource_providers/{uuid}/usages')
        if usages.status_code != 200:
            raise PlacementRefused(usages.status_code, *_error_of(usages))
        used = int(usages.json()['usages'].get(MEMORY_MB, 0))
        inventory = MemoryInventory(total_mb=int(record['total']),
                                    reserved_mb=int(record['reserved']),
                                    allocation_ratio=float(record['allocation_ratio']),
                                    used_mb=used)
        return ProviderMemory(uuid, name, int(body['resource_provider_generation']),
                              inventory, dict(record))

    def set_memory_ratio(self, memory: ProviderMemory, ratio: float) -> int:
        """Write MEMORY_MB with ``ratio``; the provider's new generation.

        Raises GenerationConflict when the provider changed since ``memory``
        was read, PlacementRefused when Placement says no.
        """
        body = dict(memory.record, allocation_ratio=ratio,
                    resource_provider_generation=memory.generation)
        response = self._request('PUT', f'/resource_providers/{memory.uuid}/inventories/'
                                        f'{MEMORY_MB}', body)
        if response.status_code == 200:
            return int(response.json()['resource_provider_generation'])
        code, detail = _error_of(response)
        if response.status_code == 409 and code == GENERATION_CONFLICT:
            raise GenerationConflict(f'resource provider {memory.name} changed since '
                                     f'generation {memory.generation}: {detail}')
        raise PlacementRefused(response.status_code, code, detail)
