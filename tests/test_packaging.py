"""Packaging: the wheel holds the package with its configs (score_sde.configs), the `score-sde`
command and nothing generic at top level; installed (not editable) into a fresh venv that
reuses this environment's torch, it trains and samples from any folder.

The wheel is built from a copy of the sources (nothing is written into the checkout) with
`pip wheel --no-deps --no-build-isolation`: no network."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ('setup.py', 'setup.cfg', 'pyproject.toml', 'MANIFEST.in', 'README.md', 'score_sde',
           'configs')
TINY = ['--config.model.nf=8', '--config.training.batch_size=8', '--config.training.n_iters=2',
        '--config.training.snapshot_freq=2', '--config.sampling.num_samples=4',
        '--config.sampling.batch_size=4', '--config.sampling.steps=4']


def _env() -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  return dict(env, OMP_NUM_THREADS='1')


def _call(args, cwd, timeout=300) -> subprocess.CompletedProcess:
  proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f'{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}'
  return proc


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> str:
  """The wheel built from a copy of the checkout's sources."""
  base = tmp_path_factory.mktemp('wheel')
  src, dist = base / 'src', base / 'dist'
  for name in SOURCES:
    path = os.path.join(ROOT, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    elif os.path.isfile(path):
      os.makedirs(src, exist_ok=True)
      shutil.copy(path, src / name)
  _call([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
         str(dist), str(src)], cwd=base)
  (found,) = glob.glob(str(dist / 'score_sde-*.whl'))
  return found


def test_wheel_holds_the_package_and_its_configs_only(wheel):
  with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    info = next(n for n in names if n.endswith('.dist-info/entry_points.txt'))
    entry_points = z.read(info).decode()
    metadata = z.read(info.replace('entry_points.txt', 'METADATA')).decode()
    configs_init = z.read('score_sde/configs/__init__.py').decode()
  assert {n.split('/')[0] for n in names} == {'score_sde', os.path.dirname(info)}  # no main, run_lib, configs
  shipped = {os.path.basename(n) for n in names if n.startswith('score_sde/configs/')}
  assert shipped == {f for f in os.listdir(os.path.join(ROOT, 'configs')) if f.endswith('.py')}
  assert '__path__' not in configs_init  # configs/__init__.py, not the checkout's pointer
  for module in ('app/cli.py', '__main__.py', 'app/run_lib.py', 'files/run_lock.py', 'app/config_doc.py'):
    assert f'score_sde/{module}' in names
  assert 'score-sde = score_sde.app.cli:run' in entry_points
  assert 'Provides-Extra: test' in metadata and 'Provides-Extra: bench' in metadata


def test_installed_wheel_trains_and_samples_from_any_folder(wheel, tmp_path):
  venv, work = tmp_path / 'venv', tmp_path / 'elsewhere'
  work.mkdir()
  _call([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip', str(venv)], cwd=work)
  python, score_sde = str(venv / 'bin' / 'python'), str(venv / 'bin' / 'score-sde')
  # this environment's pip, run by the venv's python, installs into the venv; --no-index: the
  # dependencies (torch, ...) must come from the system site-packages
  _call([python, '-m', 'pip', 'install', '--no-index', '-q', wheel], cwd=work)
  probe = ('import importlib.util as u, score_sde, score_sde.configs as c\n'
           'print(score_sde.__file__); print(c.__path__[0])\n'
           "print([m for m in ('main', 'run_lib', 'configs') if u.find_spec(m)])")
  lines = _call([python, '-c', probe], cwd=work).stdout.splitlines()
  site = str(venv / 'lib')
  assert lines[0].startswith(site) and lines[1].startswith(site), lines  # not the checkout's
  assert lines[2] == '[]', lines  # nothing generic at top level
  assert 'train ' in _call([score_sde, '--help'], cwd=work).stdout
  _call([score_sde, '--mode', 'train', '--config', 'digits', '--workdir', 'run', *TINY], cwd=work)
  assert os.path.exists(work / 'run' / 'checkpoints' / 'checkpoint_2.pth')
  _call([python, '-m', 'score_sde', '--mode', 'sample', '--config', 'digits', '--workdir', 'run',
         '--solver', 'dpm_solver', *TINY], cwd=work)
  assert os.path.getsize(work / 'run' / 'samples' / 'dpm_solver_checkpoint_2.png') > 0
