"""The command line explains itself: --help lists the modes (one line each) and the common flags
without importing torch, --solver / --checkpoint name every mode that reads them, `--mode
config` prints the resolved config with a description of every key, and --config takes a
packaged config's name."""
from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import pytest

from configs.default import get_default_config
from score_sde.app import cli
from score_sde.app import config_doc
from score_sde.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd=ROOT, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_help_lists_the_modes_and_flags(tmp_path):
  proc = _run([os.path.join(ROOT, 'main.py'), '--help'], cwd=tmp_path)
  assert proc.returncode == 0 and not proc.stderr, proc.stderr
  out = proc.stdout
  assert out.startswith(f"usage: python {os.path.join(ROOT, 'main.py')} --mode MODE --config CONFIG")
  for mode in cli.MODES:
    assert re.search(rf'^  {mode} +\S.+$', out, re.M), mode  # one line each
  for flag in ('--mode', '--config CONFIG', '--config.KEY=VALUE', '--workdir', '--solver',
               '--checkpoint'):
    assert re.search(rf'^  {re.escape(flag)}\b', out, re.M), flag
  assert 'vp_cifar' in out and 'digits' in out  # the packaged configs
  assert _run([os.path.join(ROOT, 'main.py'), '-h'], cwd=tmp_path).stdout == out
  assert 'python -m score_sde --mode' in _run(['-m', 'score_sde', '--help'], cwd=tmp_path).stdout


def test_help_does_not_import_torch():
  code = ("import sys\nfrom score_sde.app import cli\ntry:\n  cli.run(['score-sde', '--help'])\n"
          "except SystemExit as e:\n  assert e.code == 0\n"
          "print('torch imported' if 'torch' in sys.modules else 'no torch')")
  proc = _run(['-c', code])
  assert proc.stdout.strip().splitlines()[-1] == 'no torch', proc.stdout[-500:] + proc.stderr


def test_solver_and_checkpoint_help_name_every_mode_that_reads_them():
  for flag in ('solver', 'checkpoint'):
    readers = [m for m, run in cli.MODES.items() if f'FLAGS.{flag}' in inspect.getsource(run)]
    assert 'eval' in readers
    listed = [m for m, (_, used, _) in cli.MODE_INFO.items() if flag in used]
    assert listed == readers
    help_text = cli.FLAGS[flag].help
    assert all(re.search(rf'\b{m}\b', help_text) for m in readers), (flag, help_text)
  assert list(cli.MODES) == list(cli.MODE_INFO)


def test_every_default_key_has_a_description():
  docs = config_doc.descriptions()
  keys = [k for k, _ in config_doc.flat_items(get_default_config())]
  assert [k for k in keys if not docs.get(k)] == []
  sections = {k.split('.')[0] for k in keys if '.' in k}
  assert [s for s in sorted(sections) if not docs.get(s)] == []


def test_mode_config_prints_every_key_with_its_meaning(tmp_path):
  proc = _run([os.path.join(ROOT, 'main.py'), '--mode', 'config', '--config', 'toy_gmm',
               '--config.training.n_iters=7'], cwd=tmp_path)  # no --workdir needed
  assert proc.returncode == 0, proc.stderr[-2000:]
  lines = proc.stdout.splitlines()
  from configs.toy_gmm import get_config
  for key, value in config_doc.flat_items(get_config()):
    row = [l for l in lines if l.startswith(f'{key} = ')]
    assert len(row) == 1, key
    assert re.search(r'  # \S', row[0]) and '(no description)' not in row[0], row[0]
  (n_iters,) = [l for l in lines if l.startswith('training.n_iters = ')]
  assert n_iters.startswith('training.n_iters = 7 *')
  (sde,) = [l for l in lines if l.startswith('training.sde = ')]
  assert ' *' not in sde.split('#')[0]  # the default value is not marked
  assert not os.listdir(tmp_path)  # nothing written


def test_config_takes_a_packaged_name(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = os.path.join(cli.configs_dir(), 'vp_cifar.py')
  assert os.path.isfile(path)
  assert cli.resolve_config('vp_cifar') == path == cli.resolve_config('vp_cifar.py')
  assert cli.resolve_config('digits:arg') == os.path.join(cli.configs_dir(), 'digits.py') + ':arg'
  (tmp_path / 'digits').write_text('')  # an existing file wins over a packaged name
  assert cli.resolve_config('digits') == 'digits'
  with pytest.raises(ConfigError, match='config file not found: nope.py .*packaged config: .*vp_cifar'):
    cli.resolve_config('nope.py')
  assert 'default' not in cli.packaged_configs() and 'toy_gmm' in cli.packaged_configs()


def test_workdir_is_required_except_for_config_mode(tmp_path):
  proc = _run([os.path.join(ROOT, 'main.py'), '--mode', 'sample', '--config', 'digits'], cwd=tmp_path)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'error: --mode sample needs --workdir DIR (the folder of its checkpoints, logs and samples)')


@pytest.mark.parametrize('source,needle', [
    ('from configs.nothere import x\n', "ModuleNotFoundError: No module named 'configs.nothere' "
                                        '(import the packaged configs as score_sde.configs.<name>)'),
    ('from score_sde.configs.default import get_default_config\ndef get_config():\n'
     '  c = get_default_config()\n  c.training.bacth = 3\n  return c\n',
     'AttributeError: Key "bacth" does not exist and cannot be added since the config is locked.'),
])
def test_errors_raised_by_a_config_file_are_one_line(tmp_path, source, needle):
  path = tmp_path / 'mine.py'
  path.write_text(source)
  proc = _run([os.path.join(ROOT, 'main.py'), '--mode', 'config', '--config', str(path)], cwd=tmp_path)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == f'error: config file {path} failed to load: {needle}'
