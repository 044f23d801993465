"""Unit tests of nova_balloon.agent.state: the state file and what is read back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nova_balloon.agent import state
from nova_balloon.controller.planner import GuestMemory

NOW = 1_700_000_000.0


def test_write_read_round_trip(tmp_path):
    path = tmp_path / 'run' / 'nova-balloon' / 'state.json'  # directories created
    record = {'pid': 123, 'running': True, 'updated_at': NOW, 'interval_s': 2,
              'guests': [{'name': 'a', 'ceiling_mb': 4096, 'reason': 'x'}],
              'memory': {'u1': {'target_kib': 2097152, 'shrunk': True}}}
    state.write(str(path), record)
    assert state.read(str(path)) == record
    # Atomic replace: no temporary file left behind.
    assert os.listdir(path.parent) == ['state.json']


def test_write_replaces_previous(tmp_path):
    path = str(tmp_path / 'state.json')
    state.write(path, {'a': 1})
    state.write(path, {'b': 2})
    assert state.read(path) == {'b': 2}


def test_write_failure_leaves_no_temp_file_and_keeps_old(tmp_path):
    path = str(tmp_path / 'state.json')
    state.write(path, {'a': 1})
    with pytest.raises(TypeError):
        state.write(path, {'bad': object()})
    assert os.listdir(tmp_path) == ['state.json']
    assert state.read(path) == {'a': 1}


@pytest.mark.parametrize('content', [
    b'{not json',
    b'',
    b'[1, 2, 3]',      # valid JSON, not an object
    b'"text"',
    b'null',
    b'\xff\xfe\x00',   # not UTF-8
])
def test_read_unreadable_is_none(tmp_path, content):
    path = tmp_path / 'state.json'
    path.write_bytes(content)
    assert state.read(str(path)) is None


def test_read_missing_is_none(tmp_path):
    assert state.read(str(tmp_path / 'absent.json')) is None


def test_read_directory_is_none(tmp_path):
    assert state.read(str(tmp_path)) is None


def test_memory_record_and_adopt_round_trip():
    memory = {'a': GuestMemory(2097152, 3000000, True),
              'b': GuestMemory(None, None, False)}
    record = state.memory_record(memory)
    assert record == {'a': {'target_kib': 2097152, 'shrunk': True},
                      'b': {'target_kib': None, 'shrunk': False}}
    adopted = state.adopted_memory({'memory': record})
    # The actual balloon size is not adopted: it is read again from libvirt.
    assert adopted == {'a': GuestMemory(2097152, None, True),
                       'b': GuestMemory(None, None, False)}


@pytest.mark.parametrize('recorded', [None, {}, {'memory': None}, {'memory': []},
                                      {'memory': 'x'}, {'memory': 5}])
def test_adopted_memory_without_a_memory_mapping(recorded):
    assert state.adopted_memory(recorded) == {}


def test_adopted_memory_ignores_junk_entries():
    recorded = {'memory': {
        'good': {'target_kib': 1048576, 'shrunk': True},
        'list': [1, 2],
        'text': 'x',
        'none': None,
        'str_target': {'target_kib': '1048576', 'shrunk': True},
        'float_target': {'target_kib': 1048576.5, 'shrunk': False},
        'zero_target': {'target_kib': 0, 'shrunk': True},
        'negative_target': {'target_kib': -5, 'shrunk': True},
        'truthy_shrunk': {'target_kib': 1048576, 'shrunk': 'yes'},
        'one_shrunk': {'target_kib': 1048576, 'shrunk': 1},
        'empty': {},
    }}
    assert state.adopted_memory(recorded) == {
        'good': GuestMemory(1048576, None, True),
        'str_target': GuestMemory(None, None, True),
        'float_target': GuestMemory(None, None, False),
        'zero_target': GuestMemory(None, None, True),
        'negative_target': GuestMemory(None, None, True),
        'truthy_shrunk': GuestMemory(1048576, None, False),
        'one_shrunk': GuestMemory(1048576, None, False),
        'empty': GuestMemory(None, None, False),
    }


def test_adopted_memory_boolean_target_is_junk():
    adopted = state.adopted_memory({'memory': {'u': {'target_kib': True, 'shrunk': True}}})
    assert adopted['u'].target_kib is None


# -- agent_alive -------------------------------------------------------------------------

def alive_state(**kw):
    record = {'running': True, 'pid': os.getpid(), 'updated_at': NOW, 'interval_s': 2}
    record.update(kw)
    return record


@pytest.fixture(scope='module')
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_alive_for_this_process_fresh():
    assert state.agent_alive(alive_state(), NOW) is True
    assert state.agent_alive(alive_state(), NOW + 16) is True  # 3 * 2 + 10


def test_not_alive_when_stale():
    assert state.agent_alive(alive_state(), NOW + 16.01) is False
    assert state.agent_alive(alive_state(interval_s=60), NOW + 190) is True  # 3 * 60 + 10
    assert state.agent_alive(alive_state(interval_s=60), NOW + 191) is False


def test_not_alive_when_dead_pid(dead_pid):
    assert state.agent_alive(alive_state(pid=dead_pid), NOW) is False


@pytest.mark.parametrize('changes', [
    dict(running=False),
    dict(running=None),
    dict(pid=None),
    dict(pid='123'),
    dict(pid=1.5),
    dict(updated_at=None),
    dict(updated_at='now'),
])
def test_not_alive_for_bad_fields(changes):
    assert state.agent_alive(alive_state(**changes), NOW) is False


@pytest.mark.parametrize('recorded', [None, {}])
def test_not_alive_without_state(recorded):
    assert state.agent_alive(recorded, NOW) is False


def test_not_alive_without_updated_at():
    record = alive_state()
    del record['updated_at']
    assert state.agent_alive(record, NOW) is False


def test_alive_for_other_users_process(monkeypatch):
    """A live pid owned by another user (EPERM) still counts as alive."""
    def kill(pid, sig):
        assert (pid, sig) == (4321, 0)
        raise PermissionError(1, 'Operation not permitted')
    monkeypatch.setattr(state.os, 'kill', kill)
    assert state.agent_alive(alive_state(pid=4321), NOW) is True
    assert state.agent_alive(alive_state(pid=4321), NOW + 60) is False


def test_dead_pid_checked_with_signal_zero(monkeypatch):
    def kill(pid, sig):
        assert (pid, sig) == (4321, 0)
        raise ProcessLookupError(3, 'No such process')
    monkeypatch.setattr(state.os, 'kill', kill)
    assert state.agent_alive(alive_state(pid=4321), NOW) is False


@pytest.mark.parametrize('pid', [True, 0, -1])
def test_not_alive_for_junk_pid(pid):
    assert state.agent_alive(alive_state(pid=pid), NOW) is False


@pytest.mark.parametrize('interval', ['2', None, [2]])
def test_junk_interval_does_not_crash(interval):
    assert state.agent_alive(alive_state(interval_s=interval), NOW) in (True, False)
