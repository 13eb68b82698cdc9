"""`ScoreModel` and `score_sde.maths.conventions`: every parameterization x time label turns a
"network" built from the analytic Gaussian mixture back into `GaussianMixture.score` exactly;
each network declares its defaults; checkpoints record what they hold; and no module outside
`sdes.py` asks an SDE for its class."""
from __future__ import annotations

import itertools
import math
import os
import re

import pytest
import torch

from configs.default import get_default_config
from score_sde.maths import conventions as cv
from score_sde.maths.analytic import GaussianMixture
from score_sde.files.checkpoint import CheckpointError, save_checkpoint
from score_sde.models import NETWORKS, ScoreModel, checkpoint_metadata
from score_sde.app.build import create_model
from score_sde.app.loading import load_checkpoint
from score_sde.sdes import SDES

MIX = GaussianMixture([[1.0, -1.0, 0.5], [-1.0, 0.5, 0.0]], [[0.3, 0.5, 0.2], [0.6, 0.2, 0.4]], [0.4, 0.6])


def time_from_label(kind, sde, label):
  """Invert the label convention: the time the analytic network must assume."""
  if kind == 't999':
    return label / 999.0
  if kind == 'sigma':
    return torch.log(label / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
  if kind == 'index':
    i = label.long() if sde.index_label(torch.zeros(1)).item() == 0 else (sde.N - 1) - label.long()
    return sde.time_of_index(i.double())
  return label


class AnalyticNet(torch.nn.Module):
  """Outputs what a perfect network of (parameterization, time label) would: the mixture's
  score at the time its label encodes, converted with the same kernel `ScoreModel` uses."""

  def __init__(self, sde, param, label):
    super().__init__()
    self.sde, self.param, self.label = sde, param, label

  def forward(self, x, labels):
    t = time_from_label(self.label, self.sde, labels.double()).to(x.dtype)
    alpha, sigma = cv.label_kernel(self.label, self.sde, t)
    return cv.from_score(MIX.score(x, t, self.sde), x, self.param, alpha, sigma)


CASES = [(s, p, l) for s, p, l in itertools.product(['vpsde', 'subvpsde', 'vesde'], cv.PARAMETERIZATIONS, cv.TIME_LABELS)
         if not (l == 'sigma' and s != 'vesde')]  # sigma(t) labels identify t only for VE here


@pytest.mark.parametrize('sde_name,param,label', CASES)
def test_analytic_network_gives_the_exact_score(sde_name, param, label):
  sde = SDES[sde_name](N=50)
  model = ScoreModel(AnalyticNet(sde, param, label), sde, param, label)
  if label == 'index':  # a discrete model is defined on its chain's times
    t = sde.time_of_index(torch.arange(0, 50, 7, dtype=torch.float64))
  else:
    t = torch.linspace(0.02, 1.0, 8, dtype=torch.float64)
  x = torch.randn(len(t), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
  torch.testing.assert_close(model(x, t), MIX.score(x, t, sde), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('sde_name', list(SDES))
def test_index_time_mapping_is_one_to_one(sde_name):
  sde = SDES[sde_name](N=1000)
  i = torch.arange(1000)
  t = sde.time_of_index(i.double()).float()
  assert torch.equal(sde.index_of_time(t), i)
  labels = cv.time_label('index', sde, t)
  assert torch.equal(labels, labels.round())  # integers, never 998.001
  # on the PC grid linspace(T, 1e-3, N) the index is N - 1 - j, as in score_sde_pytorch
  grid = torch.linspace(1.0, 1e-3, 1000)
  assert torch.equal(sde.index_of_time(grid), torch.arange(999, -1, -1))


def test_conversions_round_trip():
  x, s = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
  alpha, sigma = torch.rand(4) + 0.1, torch.rand(4) + 0.1
  for p in cv.PARAMETERIZATIONS:
    torch.testing.assert_close(cv.to_score(cv.from_score(s, x, p, alpha, sigma), x, p, alpha, sigma), s)
  eps = cv.eps_from_score(s, sigma)
  torch.testing.assert_close(cv.x0_from_eps(x, eps, alpha, sigma), cv.x0_from_score(x, s, alpha, sigma))
  torch.testing.assert_close(cv.eps_from_x0(x, cv.x0_from_eps(x, eps, alpha, sigma), alpha, sigma), eps)


def _config(name='mlp', sde='vpsde', continuous=True):
  c = get_default_config()
  c.model.name, c.training.sde, c.training.continuous = name, sde, continuous
  c.data.num_channels, c.model.hidden, c.model.depth = 2, 16, 2
  c.data.image_size, c.model.nf, c.model.ch_mult, c.model.num_res_blocks = 8, 32, (1,), 1
  return c


def test_networks_declare_their_defaults():
  from score_sde.app.build import build_sde
  assert (NETWORKS['mlp'].parameterization, NETWORKS['mlp'].time_label) == ('eps', 't999')
  assert NETWORKS['mlp'].flat and not NETWORKS['ncsnpp'].flat
  for sde, cont, want in [('vpsde', True, ('eps', 't999')), ('vesde', True, ('score', 'sigma')),
                          ('vpsde', False, ('eps', 'index')), ('vesde', False, ('score', 'index')),
                          ('subvpsde', True, ('eps', 't999'))]:
    c = _config('ddpm', sde, cont)
    m = create_model(c, build_sde(c))
    assert (m.parameterization, m.time_label) == want, (sde, cont)
  c = _config('mlp', 'vesde')
  m = create_model(c, build_sde(c))
  assert (m.parameterization, m.time_label) == ('eps', 't999')


def test_checkpoint_records_what_it_holds_and_mismatch_is_one_line(tmp_path):
  from score_sde.app.build import build_sde
  c = _config()
  model = create_model(c, build_sde(c))
  meta = checkpoint_metadata(c.model.name, model)
  assert meta == {'sde': {'name': 'vpsde', 'beta_min': 0.1, 'beta_max': 20.0, 'schedule': 'linear',
                          'N': 1000}, 'network': 'mlp', 'parameterization': 'eps', 'time_label': 't999'}
  path = str(tmp_path / 'checkpoint_1.pth')
  save_checkpoint(path, {'model': model.net.state_dict(), 'meta': meta})
  load_checkpoint(path, c)  # same config: fine
  ve = _config(sde='vesde')
  with pytest.raises(CheckpointError) as e:
    load_checkpoint(path, ve)
  msg = str(e.value)
  assert '\n' not in msg and 'vpsde(' in msg and 'vesde(' in msg and 'checkpoint_1.pth' in msg
  other = _config()
  other.model.parameterization = 'x0'
  with pytest.raises(CheckpointError, match="parameterization 'eps' but the config gives 'x0'"):
    load_checkpoint(path, other)


def test_no_isinstance_on_sde_classes_outside_sdes():
  root = os.path.join(os.path.dirname(__file__), '..', 'score_sde')
  pattern = re.compile(r'isinstance\([^)]*(VPSDE|VESDE|SubVPSDE|\bSDE\b)')
  offenders = []
  for folder, _, files in os.walk(root):
    for f in files:
      if f.endswith('.py') and f != 'sdes.py':
        with open(os.path.join(folder, f)) as fh:
          if pattern.search(fh.read()):
            offenders.append(f)
  assert offenders == []
