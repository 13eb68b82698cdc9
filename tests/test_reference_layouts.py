"""Every score_sde_pytorch network config that builds in the reference (22 of them) gives our
network the reference's exact layout: state_dict names and shapes in order, and the order of
the parameters (the reference EMA stores its shadow parameters as a positional list).

`data/ssp_reference_layouts.json.gz` was read off the reference networks: per config file, its
model / data / training settings, `state_dict` `[name, shape]` in order and `parameter_order`.
A reference-format checkpoint (keys prefixed by `module.`, EMA `shadow_params` in parameter
order) built from those layouts alone then loads strictly, EMA included.
"""
from __future__ import annotations

import gzip
import json
import os

import pytest
import torch

from configs.default import get_default_config
from score_sde.app.build import create_network
from score_sde.app.loading import load_checkpoint

LAYOUTS_FILE = os.path.join(os.path.dirname(__file__), 'data', 'ssp_reference_layouts.json.gz')
with gzip.open(LAYOUTS_FILE, 'rt') as _f:
  LAYOUTS = json.load(_f)

# keys of the reference configs that are not network settings of ours
IGNORED = {('data', 'category'), ('model', 'sigma_begin')}


def config_from_reference(ref: dict):
  """Our config with the reference config's model / data / training settings."""
  c = get_default_config()
  for section, key in (('model', 'model_config'), ('data', 'data_config'),
                       ('training', 'training_config')):
    for k, v in ref[key].items():
      if (section, k) in IGNORED:
        continue
      current = getattr(c, section)[k]  # KeyError: a reference key we do not know
      if isinstance(current, tuple):
        v = tuple(v)
      elif isinstance(current, float) and isinstance(v, int):
        v = float(v)
      setattr(getattr(c, section), k, v)
  c.data.dataset = 'digits'  # not read by the network
  return c


def test_all_22_reference_configs_are_covered():
  assert len(LAYOUTS) == 22
  assert {r['model'] for r in LAYOUTS.values()} == {'ncsnpp', 'ddpm'}


@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_layout_matches_reference(name):
  """Names, shapes and order of the state_dict, and the parameter order, all equal."""
  ref = LAYOUTS[name]
  with torch.device('meta'):  # shapes only: no memory, no initialisation cost
    net = create_network(config_from_reference(ref))
  ours = [[k, list(v.shape)] for k, v in net.state_dict().items()]
  assert ours == ref['state_dict']
  assert [k for k, _ in net.named_parameters()] == ref['parameter_order']
  assert sum(p.numel() for p in net.parameters()) == ref['num_parameters']


def reference_checkpoint(ref: dict, generator: torch.Generator) -> tuple[dict, dict]:
  """A score_sde_pytorch-format checkpoint built from the layout alone, and the EMA weights
  by name (what the loaded model must hold)."""
  model = {'module.' + k: torch.randn(s, generator=generator) if k != 'sigmas'
           else torch.rand(s, generator=generator, dtype=torch.float64)
           for k, s in ref['state_dict']}
  shapes = dict((k, s) for k, s in ref['state_dict'])
  trainable = [k for k in ref['parameter_order'] if k not in frozen(ref)]
  shadow = [torch.randn(shapes[k], generator=generator) for k in trainable]
  state = {'model': model, 'ema': {'decay': 0.9999, 'num_updates': 1000, 'shadow_params': shadow},
           'optimizer': {}, 'step': 1000}
  return state, dict(zip(trainable, shadow))


def frozen(ref: dict) -> set:
  """Parameters with requires_grad=False, which the reference EMA leaves out: the random
  Fourier features `all_modules.0.W` of the continuous VE NCSN++."""
  return {'all_modules.0.W'} if ref['model_config'].get('embedding_type') == 'fourier' else set()


FAMILIES = {  # one published config per network family
    'ddpm': 'subvp/cifar10_ddpm_continuous.py',
    'ddpmpp': 'vp/cifar10_ddpmpp_continuous.py',
    'ncsnpp_ve': 've/cifar10_ncsnpp_continuous.py',
    'ncsnpp_deep': 'vp/cifar10_ncsnpp_deep_continuous.py',
    'ncsnpp_hires_64': 've/celebahq_ncsnpp_continuous.py',
    'ncsnpp_hires_256': 've/celebahq_256_ncsnpp_continuous.py',
    'ncsnpp_discrete_ve': 've/cifar10_ncsnpp.py',
}


def _load_family(config_name, tmp_path):
  ref = LAYOUTS[config_name]
  state, ema = reference_checkpoint(ref, torch.Generator().manual_seed(0))
  path = str(tmp_path / 'checkpoint_26.pth')
  torch.save(state, path)
  model = load_checkpoint(path, config_from_reference(ref))
  got = dict(model.net.named_parameters())
  for k, v in ema.items():
    assert torch.equal(got[k].detach(), v), k
  raw = load_checkpoint(path, config_from_reference(ref), use_ema=False)
  k0 = ref['parameter_order'][0]
  assert torch.equal(dict(raw.net.named_parameters())[k0].detach(), state['model']['module.' + k0])


@pytest.mark.parametrize('family', ['ddpm'])
def test_reference_checkpoint_loads_strictly_with_ema(family, tmp_path):
  """A published-format checkpoint loads strictly and its EMA lands on the right parameters."""
  torch.set_num_threads(min(2, torch.get_num_threads()))
  _load_family(FAMILIES[family], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('family', [f for f in FAMILIES if f != 'ddpm'])
def test_reference_checkpoint_of_every_family_loads(family, tmp_path):
  _load_family(FAMILIES[family], tmp_path)
