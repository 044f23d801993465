"""Nova's ``[DEFAULT] host``, which names the agent in its notifications.

The notifications' own options are oslo.messaging's (``[DEFAULT]
transport_url``, ``[oslo_messaging_notifications]``, ``[oslo_messaging_rabbit]``):
the notifier registers them on the agent's ConfigOpts when it starts, and the
sample generator lists them under oslo.messaging's namespace. Importing
oslo.messaging here would slow down every ``nova-balloon`` command.
"""

import socket

from oslo_config import cfg

# Registered without a group, as Nova does; named for the sample generator.
default_group = cfg.OptGroup('DEFAULT')

notification_opts = [
    cfg.HostDomainOpt('host',
                      default=socket.gethostname(),
                      sample_default='<current_hostname>',
                      help="""
Nova's own option, read from nova-compute's config file (the same default):
the name of this compute host. The agent's notifications carry it, as their
publisher ``nova-balloon:<host>`` and in each payload, so that they name the
host as Nova's own notifications do.

Related options:

* ``[oslo_messaging_notifications] driver``: notifications are sent only when
  it is set (``messagingv2``), as for Nova.
"""),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(notification_opts)


def list_opts() -> dict[cfg.OptGroup, list[cfg.Opt]]:
    return {default_group: notification_opts}
