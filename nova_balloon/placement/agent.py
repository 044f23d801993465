"""The Placement ratio mode in nova-balloon-agent: one call from the agent's start."""

from __future__ import annotations

import threading
from collections.abc import Callable

from oslo_config import cfg
from oslo_log import log as logging
from prometheus_client import CollectorRegistry

from nova_balloon.capacity import history
from nova_balloon.capacity.history import History
from nova_balloon.capacity.keeper import HistoryKeeper
from nova_balloon.conf import placement_ratio as placement_ratio_conf
from nova_balloon.placement.metrics import RatioCollector
from nova_balloon.placement.updater import RatioChanged, RatioUpdater

LOG = logging.getLogger(__name__)


def history_reader(path: str) -> Callable[[], History]:
    """The capacity history as the file holds it now, read at each look.

    The agent's cycle thread appends to the file meanwhile: a last line
    without its newline is one being written, left for the next look. A
    file that cannot be read gives no history (no advice), with a warning.
    """
    def read() -> History:
        try:
            with open(path, encoding='utf-8') as f:
                text = f.read()
        except FileNotFoundError:
            return History()
        except (OSError, UnicodeDecodeError) as exc:
            LOG.warning('Placement ratio: capacity history %s unreadable: %s', path, exc)
            return History()
        try:
            return history.parse(text[:text.rfind('\n') + 1])
        except history.HistoryFormatError as exc:
            LOG.warning('Placement ratio: capacity history %s unusable: %s', path, exc)
            return History()

    return read


def start(conf: cfg.ConfigOpts, keeper: HistoryKeeper | None, stopping: threading.Event,
          registry: CollectorRegistry | None,
          on_change: RatioChanged | None = None) -> RatioUpdater | None:
    """Start the mode's thread when ``[placement_ratio] enabled`` and allowed; else None.

    ``keeper`` is the agent's capacity history (None when ``[capacity]
    record_history`` is off); ``registry``, the agent's metrics registry when
    it serves metrics, gets the mode's figures; ``on_change`` hears of each
    change set in Placement (the agent's notifications). The options are registered
    here too (a no-op on the agent's own ConfigOpts), so that a ConfigOpts
    made without them means the mode is off.
    """
    placement_ratio_conf.register_opts(conf)
    if keeper is None:
        if conf.placement_ratio.enabled:
            LOG.warning('[placement_ratio] enabled, but the agent will not set the ratio: '
                        '[capacity] record_history is off, so there is no history to '
                        'advise a ratio from')
        return None
    updater = RatioUpdater.from_conf(conf, history_reader(keeper.file.path))
    if updater is None:
        return None
    if registry is not None:
        registry.register(RatioCollector(updater))
    updater.on_change = on_change
    updater.start(stopping)
    return updater
