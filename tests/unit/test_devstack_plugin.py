"""The devstack plugin (devstack/settings, devstack/plugin.sh), phase by phase.

devstack itself cannot run here: it wants a dedicated host, root, a database,
a message queue and every OpenStack service. So bash sources the plugin as
stack.sh, unstack.sh and clean.sh do, with minimal stand-ins for the few
devstack functions it calls: the service switches, ini editing (real files in
a temporary directory), setup_develop, pip_uninstall, run_process and
stop_process (which record their calls). What the plugin writes is then read
with the agent's own options, and the command it starts is run for real
against the installed agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from oslo_config import cfg

from nova_balloon.conf import balloon, libvirt

REPO = Path(__file__).resolve().parents[2]
DEVSTACK = REPO / 'devstack'
BIN_DIR = Path(sys.executable).parent

# Stand-ins for the devstack functions the plugin and its settings call. Each
# records its call in $CALLS, one tab-separated line per call.
STANDINS = r'''
record() { local IFS=$'\t'; echo "$*" >> "$CALLS"; }
define_plugin() { record define_plugin "$@"; }
plugin_requires() { record plugin_requires "$@"; }
echo_summary() { echo "$@"; }
# As devstack's: a service disabled in local.conf stays disabled.
enable_service() {
    local s
    for s in "$@"; do
        [[ ,$DISABLED_SERVICES, =~ ,$s, ]] && continue
        ENABLED_SERVICES+=",$s"
    done
}
is_service_enabled() {
    local s
    for s in "$@"; do
        [[ ,$ENABLED_SERVICES, =~ ,$s, ]] && return 0
    done
    return 1
}
trueorfalse() {
    local default=$1 value=${!2:-}
    case "${value,,}" in
        1|yes|true|on) echo True ;;
        0|no|false|off) echo False ;;
        *) echo "$default" ;;
    esac
}
_ini() { "$PYTHON" "$INI_TOOL" "$@"; }
iniset() { record iniset "$@"; _ini set "$@"; }
iniget() { _ini get "$@"; }
inidelete() { record inidelete "$@"; _ini delete "$@"; }
setup_develop() { record setup_develop "$@"; }
pip_install() { record pip_install "$@"; }
pip_uninstall() { record pip_uninstall "$@"; }
get_python_exec_prefix() { echo "$FAKE_EXEC_PREFIX"; }
run_process() { record run_process "$@"; }
stop_process() { record stop_process "$@"; }
'''

INI_TOOL = r'''
import configparser, sys
action, path, section, option = sys.argv[1:5]
parser = configparser.RawConfigParser(strict=False)
parser.optionxform = str
parser.read(path)
if action == 'get':
    print(parser.get(section, option, fallback=''))
    sys.exit(0)
if action == 'set':
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, option, sys.argv[5])
elif parser.has_section(section):
    parser.remove_option(section, option)
with open(path, 'w') as f:
    parser.write(f)
'''

# One devstack run: stack.sh sources the settings once, then plugin.sh per
# phase; unstack.sh and clean.sh are new processes that source both again.
# Between post-config and extra, devstack's start_nova_compute copies
# nova.conf to nova-cpu.conf ($COPY_CPU_CONF=0 plays a setup that does not).
HARNESS = r'''
set -o errexit
source "$STANDINS_FILE"
source "$DEVSTACK/settings"
for phase in "$@"; do
    case "$phase" in
        start-nova-compute)
            [[ "$COPY_CPU_CONF" == 1 ]] && cp "$NOVA_CONF" "$NOVA_CPU_CONF"
            ;;
        unstack|clean) source "$DEVSTACK/plugin.sh" "$phase" ;;
        *) source "$DEVSTACK/plugin.sh" stack "$phase" ;;
    esac
done
'''

STACK = ('install', 'post-config', 'start-nova-compute', 'extra')


class Devstack:
    """A temporary devstack layout and the calls the plugin made in it."""

    def __init__(self, tmp: Path, services: str = 'n-api,n-cpu', **env: str):
        self.tmp = tmp
        self.conf_dir = tmp / 'etc' / 'nova'
        self.conf_dir.mkdir(parents=True)
        self.nova_conf = self.conf_dir / 'nova.conf'
        self.cpu_conf = self.conf_dir / 'nova-cpu.conf'
        # libvirt's built-in test driver: the agent started below reads no
        # real guest, whatever runs on this machine.
        self.nova_conf.write_text('[DEFAULT]\ndebug = True\n\n[libvirt]\nvirt_type = qemu\n'
                                  'connection_uri = test:///default\n')
        self.calls_file = tmp / 'calls'
        (tmp / 'standins.sh').write_text(STANDINS)
        (tmp / 'ini.py').write_text(INI_TOOL)
        (tmp / 'harness.sh').write_text(HARNESS)
        self.env = {
            'PATH': os.environ.get('PATH', '/usr/bin:/bin'),
            'HOME': str(tmp),
            'STANDINS_FILE': str(tmp / 'standins.sh'),
            'DEVSTACK': str(DEVSTACK),
            'CALLS': str(self.calls_file),
            'PYTHON': sys.executable,
            'INI_TOOL': str(tmp / 'ini.py'),
            'FAKE_EXEC_PREFIX': str(BIN_DIR),
            'COPY_CPU_CONF': '1',
            'DEST': str(tmp / 'opt' / 'stack'),
            'DATA_DIR': str(tmp / 'opt' / 'stack' / 'data'),
            'NOVA_BALLOON_DIR': str(REPO),
            'NOVA_CONF': str(self.nova_conf),
            'NOVA_CPU_CONF': str(self.cpu_conf),
            'LIBVIRT_GROUP': 'libvirt',
            'VIRT_DRIVER': 'libvirt',
            'ENABLED_SERVICES': services,
            'DISABLED_SERVICES': '',
            **env,
        }

    def run(self, *phases: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(['bash', str(self.tmp / 'harness.sh'), *phases],
                                env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    def calls(self, name: str | None = None) -> list[list[str]]:
        if not self.calls_file.exists():
            return []
        lines = [line.split('\t') for line in self.calls_file.read_text().splitlines()]
        return [line[1:] for line in lines if name is None or line[0] == name]

    @property
    def data_dir(self) -> Path:
        return Path(self.env['DATA_DIR']) / 'nova-balloon'


def agent_options(path: Path) -> cfg.ConfigOpts:
    """The file as nova-balloon-agent reads it, every option checked."""
    conf = cfg.ConfigOpts()
    balloon.register_opts(conf)
    libvirt.register_opts(conf)
    conf(['--config-file', str(path)], project='nova-balloon', default_config_files=[])
    for module in (balloon, libvirt):
        for group, opts in module.list_opts().items():
            for opt in opts:
                getattr(conf[group.name], opt.dest)
    return conf


@pytest.fixture
def devstack(tmp_path):
    return Devstack(tmp_path)


def test_shellcheck_clean():
    if shutil.which('shellcheck') is None:
        pytest.skip('shellcheck is not installed')
    result = subprocess.run(['shellcheck', str(DEVSTACK / 'plugin.sh'),
                             str(DEVSTACK / 'settings')], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_settings_declare_the_plugin(devstack):
    devstack.run()
    assert devstack.calls('define_plugin') == [['nova-balloon']]


def test_stack_installs_configures_and_starts(devstack):
    devstack.run(*STACK)
    assert devstack.calls('setup_develop') == [[str(REPO)]]
    # post-config wrote nova.conf only: nova-cpu.conf is devstack's copy of it.
    written = {tuple(call[:3]) for call in devstack.calls('iniset')}
    assert {path for path, _, _ in written} == {str(devstack.nova_conf)}
    conf = agent_options(devstack.cpu_conf)
    assert conf.balloon.policy == 'adaptive'
    assert conf.balloon.default_overcommit_ratio == 1.0
    assert conf.balloon.interval == 2
    assert conf.balloon.dry_run is False
    assert conf.balloon.restore_on_stop is True
    assert conf.balloon.state_file == str(devstack.data_dir / 'state.json')
    assert conf.balloon.flavor_policy_file is None
    # nova.conf keeps what was there.
    assert 'virt_type = qemu' in devstack.nova_conf.read_text()

    assert devstack.calls('run_process') == [[
        'nova-balloon-agent',
        f'{BIN_DIR}/nova-balloon-agent --config-file {devstack.cpu_conf}',
        'libvirt']]
    assert devstack.data_dir.is_dir()


def test_settings_from_local_conf(tmp_path):
    policy_file = tmp_path / 'flavors.yaml'
    ds = Devstack(tmp_path, NOVA_BALLOON_DRY_RUN='true',
                  NOVA_BALLOON_DEFAULT_OVERCOMMIT_RATIO='1.5', NOVA_BALLOON_INTERVAL='5',
                  NOVA_BALLOON_FLAVOR_POLICY_FILE=str(policy_file))
    ds.run(*STACK)
    conf = agent_options(ds.cpu_conf)
    assert conf.balloon.dry_run is True
    assert conf.balloon.default_overcommit_ratio == 1.5
    assert conf.balloon.interval == 5
    assert conf.balloon.flavor_policy_file == str(policy_file)


def test_cpu_conf_not_copied_gets_the_options_at_extra(tmp_path):
    ds = Devstack(tmp_path, COPY_CPU_CONF='0')
    ds.cpu_conf.write_text('[DEFAULT]\n')
    ds.run(*STACK)
    assert agent_options(ds.cpu_conf).balloon.policy == 'adaptive'
    assert len(ds.calls('run_process')) == 1


def test_api_only_node_installs_the_validators_without_libvirt(tmp_path):
    """No libvirt-python on a node without n-cpu: devstack has no libvirt headers there."""
    ds = Devstack(tmp_path, services='n-api')
    ds.run(*STACK)
    assert ds.calls('setup_develop') == []
    assert ds.calls('pip_install') == [['--no-deps', '-e', str(REPO)]]
    assert ds.calls('iniset') == []
    assert ds.calls('run_process') == []


def test_compute_only_node_installs_everything(tmp_path):
    ds = Devstack(tmp_path, services='n-cpu')
    ds.run(*STACK)
    assert ds.calls('setup_develop') == [[str(REPO)]]
    assert ds.calls('pip_install') == []
    assert len(ds.calls('run_process')) == 1


def test_node_without_nova_installs_nothing(tmp_path):
    ds = Devstack(tmp_path, services='key,g-api')
    ds.run(*STACK)
    assert ds.calls('setup_develop') == [] and ds.calls('pip_install') == []
    assert ds.calls('run_process') == []


def test_agent_disabled_in_local_conf(tmp_path):
    ds = Devstack(tmp_path, DISABLED_SERVICES='nova-balloon-agent')
    ds.run(*STACK)
    assert ds.calls('setup_develop') == []
    assert ds.calls('pip_install') == [['--no-deps', '-e', str(REPO)]]
    assert ds.calls('run_process') == []


# devstack's own enable_plugin (functions-common): the branch defaults to master.
ENABLE_PLUGIN = r'''
declare -A GITREPO GITBRANCH
enable_plugin() { GITREPO[$1]=$2; GITBRANCH[$1]=${3:-master}; }
'''


def documented_localrc() -> str:
    """The [[local|localrc]] block of install.rst, as an operator copies it."""
    lines = (REPO / 'doc' / 'source' / 'install.rst').read_text().splitlines()
    start = lines.index('   [[local|localrc]]') + 1
    block = []
    for line in lines[start:]:
        if not line.startswith('   '):
            break
        block.append(line.strip())
    return '\n'.join(block)


def test_documented_enable_plugin_names_a_branch_of_this_repository():
    script = (ENABLE_PLUGIN + documented_localrc() +
              '\necho "${GITREPO[nova-balloon]} ${GITBRANCH[nova-balloon]}"\n')
    out = subprocess.run(['bash', '-c', script], capture_output=True, text=True, check=True)
    url, branch = out.stdout.split()
    assert url.endswith('.git')
    assert branch == 'main'
    refs = subprocess.run(['git', '-C', str(REPO), 'for-each-ref', '--format=%(refname)',
                           'refs/heads', 'refs/remotes'], capture_output=True, text=True)
    branches = {ref.split('/')[-1] for ref in refs.stdout.split()}
    if refs.returncode == 0 and branches:
        assert branch in branches, sorted(branches)
    settings = (DEVSTACK / 'settings').read_text()
    assert f'enable_plugin nova-balloon <git URL of nova-balloon> {branch}' in settings


def test_other_virt_driver_runs_no_agent(tmp_path):
    ds = Devstack(tmp_path, VIRT_DRIVER='fake')
    ds.run(*STACK)
    assert ds.calls('run_process') == []


def test_unstack_stops_and_clean_removes(devstack):
    devstack.run(*STACK)
    devstack.run('unstack')
    assert devstack.calls('stop_process') == [['nova-balloon-agent']]
    devstack.run('clean')
    assert devstack.calls('pip_uninstall') == [['nova-balloon']]
    assert not devstack.data_dir.exists()
    for path in (devstack.nova_conf, devstack.cpu_conf):
        text = path.read_text()
        assert 'policy' not in text and 'state_file' not in text
        assert 'virt_type = qemu' in text


def test_the_started_command_runs_the_agent(devstack):
    """Run what run_process was given, in dry run, and stop it as systemd would."""
    devstack.env['NOVA_BALLOON_DRY_RUN'] = 'True'
    devstack.run(*STACK)
    [[_, command, _]] = devstack.calls('run_process')
    state_file = devstack.data_dir / 'state.json'
    proc = subprocess.Popen(command.split(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not state_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ''
        assert json.loads(state_file.read_text())['running'] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    record = json.loads(state_file.read_text())
    assert record['running'] is False and record['dry_run'] is True
    # It read nova-compute's [libvirt] connection_uri from nova-cpu.conf, and
    # saw the test driver's one guest (not Nova's, so left alone).
    assert record['libvirt_uri'] == 'test:///default' and record['outage'] is None
    assert [(g['name'], g['state']) for g in record['guests']] == [('test', 'not managed')]
