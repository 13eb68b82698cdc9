"""Every ```python block of README.md runs, as a script file in a temporary folder (cwd = that
folder, the checkout on PYTHONPATH), as a reader would run it. A block whose first line is
`# readme-test: needs runs/digits` gets a tiny digits model trained there first (the README's
demo workdir, with a few steps instead of 3000)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_main

MARKER = re.compile(r'#\s*readme-test:\s*needs\s+(\S+)')


def python_blocks() -> list[str]:
  with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
    text = f.read()
  return re.findall(r'^```python\n(.*?)^```', text, flags=re.S | re.M)


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks():
  assert len(BLOCKS) >= 3
  known = {'runs/digits'}
  for block in BLOCKS:
    for need in MARKER.findall(block):
      assert need in known, f'README block needs {need}, which this test does not set up'


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """The folder the blocks run in, with runs/digits: the demo's model, 3 steps, nf = 8."""
  root = tmp_path_factory.mktemp('readme')
  proc = run_main('--mode', 'train', '--config', 'digits', '--workdir', str(root / 'runs' / 'digits'),
                  '--config.model.nf=8', '--config.training.batch_size=8',
                  '--config.training.n_iters=3', timeout=240)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return root


@pytest.mark.parametrize('index', range(len(BLOCKS)))
def test_block_runs(index, folder):
  block = BLOCKS[index]
  script = folder / f'readme_block_{index}.py'
  script.write_text(block)
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  proc = subprocess.run([sys.executable, str(script)], cwd=str(folder), env=env,
                        capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, f'README python block {index} failed:\n{block}\n{proc.stderr[-3000:]}'
  for written in re.findall(r"save_grid\([^,]+, '([^']+)'", block):
    assert (folder / written).stat().st_size > 0
