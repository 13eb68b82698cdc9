"""Every config key is read by some code (no silent no-ops), and the solver options reach the
solvers from the config."""
from __future__ import annotations

import os
import re

import pytest

from configs.default import get_default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# keys that only exist so that score_sde_pytorch's configs translate one-to-one; validated to
# their single supported value by score_sde.config_check
FIXED = {'model.attention_type', 'model.conv_size'}


def _keys(config, prefix=''):
  for k, v in config.items():
    if hasattr(v, 'items'):
      yield from _keys(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}'


def _code():
  text = []
  for folder in ('score_sde', 'run_lib.py', 'main.py'):
    path = os.path.join(ROOT, folder)
    files = [path] if path.endswith('.py') else [os.path.join(d, f) for d, _, fs in os.walk(path)
                                                 for f in fs if f.endswith('.py')]
    for f in files:
      with open(f) as fh:
        text.append(fh.read())
  return '\n'.join(text)


def test_every_config_key_is_read():
  code = _code()
  unread = []
  for key in _keys(get_default_config()):
    section, name = key.split('.', 1) if '.' in key else ('', key)
    if key in FIXED:
      assert f"'{key}'" in code  # validated
      continue
    if not re.search(rf'\.{name}\b|\[.{name}.\]|{name}=|\b{name}\b\s*[,)]', code):
      unread.append(key)
  assert unread == []


@pytest.mark.parametrize('solver,expected', [
    ('dpm_solver', {'order': 2, 'grid': 'karras', 'multistep': False}),
    ('heun', {'rho': 5.0, 's_churn': 10.0, 's_tmin': 0.0, 's_tmax': 1e30, 's_noise': 1.0}),
    ('ddpm', {'variance': 'large'}),
    ('sde', {'method': 'milstein', 'rtol': 1e-5, 'atol': 1e-5}),
    ('pc', {'predictor': 'reverse_diffusion', 'corrector': 'langevin', 'snr': 0.16, 'n_steps': 1,
            'probability_flow': True}),
])
def test_solver_options_come_from_the_config(solver, expected):
  from score_sde.generate import solver_kwargs
  c = get_default_config()
  c.sampling.grid, c.sampling.multistep, c.sampling.rho, c.sampling.s_churn = 'karras', False, 5.0, 10.0
  c.sampling.variance, c.sampling.sde_method, c.sampling.probability_flow = 'large', 'milstein', True
  got = solver_kwargs(c, solver)
  assert {k: got[k] for k in expected} == expected

