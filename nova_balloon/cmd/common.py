"""Start-up shared by the agent and the CLI: parse config, check it early."""

from __future__ import annotations

import sys

from oslo_config import cfg

from nova_balloon.conf import CONF, balloon, libvirt

PROJECT = 'nova-balloon'


def check_options(conf: cfg.ConfigOpts) -> None:
    """Read every option once, so a bad value stops us now, naming the option."""
    for module in (balloon, libvirt):
        for group, opts in module.list_opts().items():
            for opt in opts:
                try:
                    getattr(conf[group.name], opt.dest)
                except (cfg.ConfigFileValueError, ValueError) as exc:
                    sys.exit(f'{PROJECT}: invalid value for [{group.name}] {opt.name}: {exc}')


def parse_args(argv: list[str], **kwargs) -> cfg.ConfigOpts:
    try:
        CONF(argv, project=PROJECT, **kwargs)
    except (cfg.ConfigFilesNotFoundError, cfg.ConfigFileParseError,
            cfg.ConfigDirNotFoundError) as exc:
        sys.exit(f'{PROJECT}: {exc}')
    check_options(CONF)
    return CONF
