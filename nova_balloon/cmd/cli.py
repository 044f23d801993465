"""nova-balloon: the operator CLI.

Each sub-command lives in its own module under nova_balloon/cmd/ with an
``add_parser(subparsers)`` that sets ``func`` (called with the parsed
arguments, returns the exit code).
"""

from __future__ import annotations

import sys
from typing import Any

from oslo_config import cfg

from nova_balloon.cmd import common, recommend, restore, simulate, status
from nova_balloon.conf import CONF

COMMANDS = (status, recommend, restore, simulate)


def add_command_parsers(subparsers: Any) -> None:
    for command in COMMANDS:
        command.add_parser(subparsers)


command_opt = cfg.SubCommandOpt('command', title='Commands', handler=add_command_parsers,
                                help='Available commands')


def main(argv: list[str] | None = None) -> None:
    CONF.register_cli_opt(command_opt)
    common.parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(CONF.command.func(CONF.command))
