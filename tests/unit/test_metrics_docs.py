"""doc/source/monitoring.rst cannot drift: its metric table, scrape config and alert rules.

The table must list exactly what the exporter exports (names, types, units,
labels). The alert rules must load in Prometheus's own ``promtool``, name
only exported metrics and states, and fire on the series each one is meant
for and only on those (``promtool test rules``). promtool comes with
Debian's prometheus package (bindep.txt).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from nova_balloon.controller.cycle import CycleReport
from nova_balloon.metrics import exporter
from nova_balloon.metrics.values import GuestState
from tests.unit.test_metrics import LIMITS, WALL, GiB, four_guests

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / 'doc' / 'source' / 'monitoring.rst'
GUEST = ', '.join(exporter.GUEST_LABELS)
ROW = re.compile(r'^   \* - ``(?P<name>\w+)``\n     - (?P<type>\w+)\n     - (?P<unit>[^\n]*)\n'
                 r'     - (?P<labels>[^\n]*)\n', re.M)


def documented() -> dict[str, tuple[str, str, str]]:
    """The metric table: name -> (type, unit, labels), *guest* spelt out."""
    rows = {}
    for row in ROW.finditer(PAGE.read_text()):
        labels = row['labels'].strip().replace('guest', GUEST, 1) if \
            row['labels'].strip().startswith('guest') else row['labels'].strip()
        rows[row['name']] = (row['type'], row['unit'].strip(), labels)
    return rows


def exported() -> dict[str, tuple[str, str, str]]:
    """What an exporter that saw a cycle exports: name -> (type, unit, labels)."""
    exp = exporter.Exporter(LIMITS)
    exp.observe(CycleReport(four_guests(), {'a': 3 * GiB}, {'b': 'gone'}, None, 0.01), 9, WALL)
    exp.oom_deflated('a')
    metrics = {}
    for family in exp.registry.collect():
        if not family.name.startswith(exporter.PREFIX):
            continue
        name = f'{family.name}_total' if family.type == 'counter' else family.name
        labels = []
        for sample in family.samples:
            labels += [label for label in sample.labels if label not in labels and label != 'le']
        unit = next((u for u in ('bytes', 'seconds') if name.endswith(f'_{u}')), '')
        metrics[name] = (family.type, unit, ', '.join(labels))
    return metrics


def test_the_table_lists_what_the_exporter_exports():
    assert documented() == exported()


def test_units_are_in_the_names():
    for name, (_, unit, _) in documented().items():
        assert unit == '' or name.endswith(f'_{unit}'), name


def code_blocks() -> dict[str, str]:
    """The page's YAML blocks by caption."""
    blocks = re.findall(r'^\.\. code-block:: yaml\n   :caption: (\S+)\n\n((?:   .*\n|\n)+)',
                        PAGE.read_text(), flags=re.M)
    return {caption: textwrap.dedent(body) for caption, body in blocks}


def alert_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(code_blocks()['nova-balloon-alerts.yml'])['groups']
    return {rule['alert']: rule for group in groups for rule in group['rules']}


def test_the_four_alerts_use_exported_metrics_and_states():
    rules = alert_rules()
    assert set(rules) == {'NovaBalloonGuestShort', 'NovaBalloonUnresponsive',
                          'NovaBalloonAgentNotCycling', 'NovaBalloonHostCritical'}
    series = set(exported())
    states = {state.value for state in GuestState}
    for rule in rules.values():
        names = re.findall(r'\bnova_balloon_\w+', rule['expr'])
        assert names and set(names) <= series, rule['expr']
        assert set(re.findall(r'state="(\w+)"', rule['expr'])) <= states, rule['expr']


def test_the_scrape_config_loads_the_rules():
    config = yaml.safe_load(code_blocks()['prometheus.yml'])
    assert config['rule_files'] == ['nova-balloon-alerts.yml']
    assert [job['job_name'] for job in config['scrape_configs']] == ['nova-balloon']


@pytest.fixture
def promtool(tmp_path: Path) -> Path:
    """The page's two files in a directory, for promtool."""
    if shutil.which('promtool') is None:
        pytest.skip('promtool (Debian package prometheus, bindep.txt) is not installed')
    for caption, body in code_blocks().items():
        (tmp_path / caption).write_text(body)
    return tmp_path


def run_promtool(directory: Path, *args: str) -> str:
    done = subprocess.run(['promtool', *args], cwd=directory, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_and_the_scrape_config(promtool: Path):
    assert 'SUCCESS: 4 rules found' in run_promtool(promtool, 'check', 'rules',
                                                     'nova-balloon-alerts.yml')
    run_promtool(promtool, 'check', 'config', 'prometheus.yml')


def test_promtool_finds_the_exported_names_conventional(promtool: Path):
    """promtool's linter on a real scrape: units, _total, no camelCase."""
    exp = exporter.Exporter(LIMITS)
    exp.observe(CycleReport(four_guests(), {'a': 3 * GiB}, {}, None, 0.01), 9, WALL)
    done = subprocess.run(['promtool', 'check', 'metrics'], input=generate_latest(exp.registry),
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and not done.stdout and not done.stderr, done


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    text = ','.join(f'{key}="{value}"' for key, value in labels.items())
    return {'series': f'{name}{{{text}}}', 'values': values}


def firing(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    """The alert promtool must find, its annotations rendered from the page's templates."""
    rule = alert_rules()[alert]

    def render(text: str) -> str:
        return re.sub(r'\{\{ \$labels\.(\w+) \}\}', lambda m: labels[m[1]], text)

    return {'exp_labels': {**labels, **rule['labels']},
            'exp_annotations': {key: render(text) for key, text in rule['annotations'].items()}}


def expect(at: str, alert: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {'eval_time': at, 'alertname': alert, 'exp_alerts': list(alerts)}


def guest_state(uuid: str, name: str, state: str) -> dict[str, str]:
    # reason="" is left out: Prometheus drops empty labels.
    return {'job': 'nova-balloon', 'instance': 'compute-1:9740', 'flavor': 'm1.large',
            'instance_uuid': uuid, 'instance_name': name, 'state': state}


def host(name: str) -> dict[str, str]:
    return {'job': 'nova-balloon', 'instance': f'{name}:9740'}


def rule_tests() -> dict[str, Any]:
    """Each alert against series that must fire it and series that must not.

    At 15 s scrapes, ``1x8`` is two minutes of samples; ``stale`` ends a
    series (a guest whose state changed).
    """
    web, db, db_now, app = (guest_state('u1', 'web-1', 'short'),
                            guest_state('u2', 'db-1', 'short'),
                            guest_state('u2', 'db-1', 'managed'),
                            guest_state('u3', 'app-1', 'unresponsive'))
    guests = {
        'interval': '15s',
        'input_series': [
            # Short for two minutes: fires. Short for 30 s, then managed: does not.
            series('nova_balloon_guest_state', web, '1x8'),
            series('nova_balloon_guest_state', db, '1 1 1 stale'),
            series('nova_balloon_guest_state', db_now, '_ _ _ 1x5'),
            series('nova_balloon_guest_state', app, '1x8'),
        ],
        'alert_rule_test': [
            expect('45s', 'NovaBalloonGuestShort'),
            expect('2m', 'NovaBalloonGuestShort', firing('NovaBalloonGuestShort', web)),
            expect('2m', 'NovaBalloonUnresponsive', firing('NovaBalloonUnresponsive', app)),
        ],
    }
    a, b, c, d, e, f = (host(name) for name in 'abcdef')
    success = 'nova_balloon_cycle_last_success_timestamp_seconds'
    hosts = {
        'interval': '15s',
        'input_series': [
            # a cycles; b cannot reach libvirt; c's endpoint is down; d's
            # cycles stopped at t=0 (its last success stays at 0).
            series('up', a, '1x20'), series('nova_balloon_agent_up', a, '1x20'),
            series(success, a, '0+15x20'),
            series('up', b, '1x20'), series('nova_balloon_agent_up', b, '0x20'),
            series(success, b, '0x20'),
            series('up', c, '0x20'),
            series('up', d, '1x20'), series('nova_balloon_agent_up', d, '1x20'),
            series(success, d, '0x20'),
            # Critical for two minutes on e, for 30 s on f.
            series('nova_balloon_host_critical', e, '1x8'),
            series('nova_balloon_host_critical', f, '1 1 1 0x5'),
        ],
        'alert_rule_test': [
            expect('90s', 'NovaBalloonAgentNotCycling'),
            expect('2m', 'NovaBalloonAgentNotCycling',
                   *(firing('NovaBalloonAgentNotCycling', h) for h in (b, c))),
            expect('5m', 'NovaBalloonAgentNotCycling',
                   *(firing('NovaBalloonAgentNotCycling', h) for h in (b, c, d))),
            expect('2m', 'NovaBalloonHostCritical', firing('NovaBalloonHostCritical', e)),
        ],
    }
    return {'rule_files': ['nova-balloon-alerts.yml'], 'evaluation_interval': '15s',
            'tests': [guests, hosts]}


def test_each_alert_fires_on_its_series_and_only_on_them(promtool: Path):
    (promtool / 'tests.yml').write_text(yaml.safe_dump(rule_tests()))
    assert 'SUCCESS' in run_promtool(promtool, 'test', 'rules', 'tests.yml')
