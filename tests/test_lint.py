"""The lint configuration in pyproject.toml holds for the whole repository (ruff)."""
import os.path as osp
import shutil
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _ruff():
    exe = osp.join(osp.dirname(sys.executable), 'ruff')
    return exe if osp.exists(exe) else shutil.which('ruff')


@pytest.mark.skipif(_ruff() is None, reason='ruff is not installed (tools/setup.sh installs it)')
def test_ruff_is_clean():
    proc = subprocess.run([_ruff(), 'check', '--no-cache', '.'], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
