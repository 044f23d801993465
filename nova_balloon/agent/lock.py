"""One agent per host: an exclusive lock held for the agent's lifetime.

Two agents would fight over every balloon and overwrite each other's state
file. The lock is a ``flock`` on ``[balloon] lock_file``: the kernel drops it
when the process ends, however it ends, so a stale file never blocks a
restart. The holder writes its pid into the file so that a second agent can
say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

from oslo_config import cfg

LOCK_NAME = 'nova-balloon-agent.lock'


class AlreadyRunning(Exception):
    """Another agent holds the lock; the message names it."""


def lock_path(conf: cfg.ConfigOpts) -> str:
    """``[balloon] lock_file``, or the lock next to the state file."""
    return conf.balloon.lock_file or os.path.join(
        os.path.dirname(conf.balloon.state_file) or '.', LOCK_NAME)


def _holder(path: str) -> str:
    """'pid N (command line)' of the holder, as far as the file and /proc tell."""
    try:
        with open(path, encoding='utf-8') as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return 'a process whose pid is not in the file yet'
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            command = f.read().replace(b'\0', b' ').decode('utf-8', 'replace').strip()
    except OSError:
        command = ''
    return f'pid {pid}' + (f' ({command})' if command else '')


def acquire(path: str) -> IO[str]:
    """Take the lock or raise AlreadyRunning; keep the returned file open."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    # Held open, and locked, for the agent's lifetime.
    handle = open(path, 'a+', encoding='utf-8')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise AlreadyRunning(f'another nova-balloon-agent holds {path}: '
                             f'{_holder(path)}') from None
    except BaseException:
        handle.close()
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f'{os.getpid()}\n')
    handle.flush()
    return handle
