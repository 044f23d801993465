"""[placement_ratio]: bad values and refusals name the problem and keep the mode off."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from oslo_config import cfg

from nova_balloon.conf import balloon, libvirt, placement_ratio
from nova_balloon.placement.updater import RatioUpdater, nova_overwrites

LOGGER = 'nova_balloon.placement.updater'
CREDENTIALS = '[placement]\nauth_type = admin_token\nendpoint = http://127.0.0.1:9\ntoken = admin\n'


def conf_from(tmp_path: Path, text: str) -> cfg.ConfigOpts:
    path = tmp_path / 'nova.conf'
    path.write_text(text)
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    libvirt.register_opts(conf)
    placement_ratio.register_opts(conf)
    conf(['--config-file', str(path)], project='nova-balloon', default_config_files=[])
    return conf


def refusal(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert RatioUpdater.from_conf(conf_from(tmp_path, text), unread_history) is None
    return caplog.text


def unread_history():
    raise AssertionError('the history is read only when the mode runs')


def test_off_by_default_and_silent(tmp_path, caplog):
    assert refusal(tmp_path, CREDENTIALS, caplog) == ''


def test_min_ratio_above_max_ratio_is_named(tmp_path, caplog):
    text = refusal(tmp_path, CREDENTIALS + '[placement_ratio]\nenabled = true\n'
                   'min_ratio = 1.8\nmax_ratio = 1.2\n', caplog)
    assert '[placement_ratio] min_ratio (1.8) is above max_ratio (1.2)' in text


def test_a_value_out_of_bounds_is_named(tmp_path, caplog):
    text = refusal(tmp_path, CREDENTIALS + '[placement_ratio]\nenabled = true\n'
                   'max_step = 0\n', caplog)
    assert 'invalid value for [placement_ratio] max_step' in text


def test_credentials_are_required(tmp_path, caplog):
    text = refusal(tmp_path, '[placement_ratio]\nenabled = true\n', caplog)
    assert '[placement] auth_type is not set' in text


@pytest.mark.parametrize('section, named', [
    ('auth_type = no-such-plugin\n', 'no-such-plugin'),
    ('auth_type = password\nusername = nova\n', 'not given: auth_url'),
])
def test_credentials_keystoneauth_cannot_load_are_named(tmp_path, caplog, section, named):
    text = refusal(tmp_path, f'[placement]\n{section}[placement_ratio]\nenabled = true\n',
                   caplog)
    assert '[placement] credentials unusable' in text and named in text


def test_nova_overwrites_when_ram_allocation_ratio_is_set(tmp_path, caplog):
    assert nova_overwrites(conf_from(tmp_path, '')) is None
    assert nova_overwrites(conf_from(tmp_path, '[DEFAULT]\nram_allocation_ratio = 0.0\n')) \
        is None
    reason = nova_overwrites(conf_from(tmp_path, '[DEFAULT]\nram_allocation_ratio = 1.5\n'))
    assert reason is not None and 'ram_allocation_ratio = 1.5' in reason
    text = refusal(tmp_path, CREDENTIALS + '[DEFAULT]\nram_allocation_ratio = 2\n'
                   '[placement_ratio]\nenabled = true\n', caplog)
    assert 'nova-compute writes it into Placement' in text


def test_an_enabled_mode_with_credentials_starts(tmp_path):
    conf = conf_from(tmp_path, CREDENTIALS + '[placement_ratio]\nenabled = true\n'
                     'hypervisor_hostname = compute-1\n')
    updater = RatioUpdater.from_conf(conf, unread_history)
    assert updater is not None and updater.provider_name() == 'compute-1'
    assert updater.settings.risk == 0.001 and updater.settings.window_s == 168 * 3600
    assert not updater.settings.dry_run


def test_the_agents_dry_run_keeps_the_mode_dry(tmp_path):
    conf = conf_from(tmp_path, CREDENTIALS + '[balloon]\ndry_run = true\n'
                     '[placement_ratio]\nenabled = true\n')
    updater = RatioUpdater.from_conf(conf, unread_history)
    assert updater is not None and updater.settings.dry_run
