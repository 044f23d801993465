"""Versioned notifications of state changes over oslo.messaging, as Nova sends them.

``events`` decides, from two snapshots, what to send; ``notifier`` sends it.
"""

from nova_balloon.notifications.notifier import Notifier

__all__ = ['Notifier']
