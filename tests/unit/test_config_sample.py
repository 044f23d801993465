"""etc/nova-balloon/nova-balloon.conf.sample is the option reference: keep it fresh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GENERATOR_CONF = REPO / 'etc' / 'nova-balloon' / 'nova-balloon-config-generator.conf'
SAMPLE = REPO / 'etc' / 'nova-balloon' / 'nova-balloon.conf.sample'


def test_sample_matches_the_options(tmp_path):
    out = tmp_path / 'nova-balloon.conf.sample'
    subprocess.run([sys.executable, '-c', 'from oslo_config.generator import main; main()',
                    '--config-file', str(GENERATOR_CONF), '--output-file', str(out)],
                   cwd=REPO, check=True, capture_output=True, text=True)
    assert out.read_text() == SAMPLE.read_text(), (
        f'{SAMPLE.relative_to(REPO)} is stale: run `tox -e genconfig` (or oslo-config-generator '
        f'--config-file {GENERATOR_CONF.relative_to(REPO)}) and commit the result')
