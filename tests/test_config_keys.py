"""Every config key is read by some code (no silent no-ops), and the solver options reach the
solvers from the config.

`test_every_config_key_is_read_by_some_flow` runs small in-process flows (training, every
sampler, likelihood, eval, inverse problems, ...) on recording configs (tests/recording_config.py)
and compares the union of the leaf keys they read with every key of configs/default.py: a key
no flow reads is a dead key, whatever other key shares its leaf name (training.eps is not
sampling.eps). Reads by the config validator, the eval manifest and bulk serialisation (run
records, checkpoints: to_dict / to_json / items) do not count.
"""
from __future__ import annotations

import copy
import importlib
import pickle
from types import SimpleNamespace

import ml_collections
import numpy as np
import pytest
import torch
from absl import flags
from ml_collections import config_flags
from PIL import Image

from configs.default import get_default_config
from recording_config import Recorder, leaf_keys, recording

pytestmark = pytest.mark.usefixtures('one_thread')

# keys that only exist so that score_sde_pytorch's configs translate one-to-one; validated to
# their single supported value by score_sde's config check, read by no other code
FIXED = {'model.attention_type', 'model.conv_size'}
# other keys no flow below reads, each with its one-line reason (keep this empty if possible)
ALLOWED_UNREAD: dict[str, str] = {}


def entry_points() -> SimpleNamespace:
  """The code the tests call: the ONE place to update when score_sde's modules move."""
  import run_lib
  from score_sde.app import config_check
  from score_sde.app.build import solver_kwargs
  from score_sde.data import datasets
  from score_sde.errors import ConfigError
  from score_sde.evaluation import inception, manifest
  from score_sde.app.build import build_sde
  from score_sde.app.build import create_model
  from score_sde.runtime.device import configure_threads
  from score_sde.sampling import SOLVERS
  return SimpleNamespace(
      train=run_lib.train, sample=run_lib.sample, likelihood=run_lib.likelihood,
      evaluate=run_lib.evaluate, inverse_problem=run_lib.inverse_problem,
      interpolate=run_lib.interpolate, validate=run_lib.check_config,
      create_model=create_model, build_sde=build_sde, load_split=datasets.load_split,
      configure_threads=configure_threads, solver_kwargs=solver_kwargs, solvers=tuple(SOLVERS),
      inception=inception, training_error=run_lib.TrainingError, config_error=ConfigError,
      # modules whose reads do not count: the validator looks at every key, and the eval
      # manifest records settings (a key read only there changes no result)
      not_readers=(config_check.__name__, manifest.__name__))


def _packaged(name: str, over: dict):
  """Packaged config `name` with the dotted keys of `over` set."""
  config = importlib.import_module(f'score_sde.configs.{name}').get_config()
  for key, value in over.items():
    *path, last = key.split('.')
    node = config
    for p in path:
      node = node[p]
    node[last] = value
  return config


# tiny versions of the packaged toy_gmm (2-D MLP, unconditional) and digits (8x8 U-Net,
# class-conditional, learned variances, hybrid loss) configs
TOY = {'model.hidden': 16, 'model.depth': 1, 'training.batch_size': 32, 'data.toy_size': 200,
       'training.n_iters': 2, 'training.snapshot_freq': 2, 'training.log_freq': 1,
       'training.snapshot_freq_for_preemption': 2, 'sampling.num_samples': 8,
       'sampling.batch_size': 8, 'sampling.steps': 2, 'sampling.rtol': 1e-2,
       'sampling.atol': 1e-2, 'eval.batch_size': 20, 'eval.bpd_num_batches': 1,
       'eval.num_samples': 16, 'classifier.hidden': 16, 'classifier.depth': 1,
       'classifier.eval_batches': 1}
DIGITS = {'model.nf': 8, 'model.learn_sigma': True, 'model.class_conditional': True,
          'training.p_uncond': 0.2, 'training.continuous': False, 'training.loss': 'hybrid',
          'training.grad_accum': 2, 'training.batch_size': 8, 'training.n_iters': 2,
          'training.snapshot_freq_for_preemption': 2, 'sampling.rtol': 1e-2,
          'sampling.atol': 1e-2, 'sampling.steps': 2, 'sampling.batch_size': 4,
          'sampling.num_samples': 4, 'eval.batch_size': 4, 'eval.bpd_num_batches': 1,
          'eval.num_samples': 8, 'eval.kid_subset_size': 4, 'inverse.num_images': 2,
          'classifier.ch': 8, 'classifier.levels': 2}
# networks the flows only build (what their constructors read), as digits-sized variants
NETWORKS = (('ncsnpp', {'model.fir': True, 'model.progressive': 'output_skip',
                        'model.progressive_input': 'residual', 'model.embedding_type': 'fourier'}),
            ('ddpm', {'model.attn_every_up_block': True}),
            ('ncsnv2_64', {'model.class_conditional': False,
                           'model.normalization': 'InstanceNorm++'}))


def _stand_in_inception(ep):
  """A module with the Inception output protocol on tiny images (4 pooled features, 3 logits),
  so that --mode eval scores images without a weights file."""
  class StandIn(torch.nn.Module):
    def forward(self, x):
      pool3 = torch.nn.functional.adaptive_avg_pool2d(x.float().mean(1, keepdim=True), 2).flatten(1)
      logits = torch.stack([pool3.sum(1), pool3[:, 0] - pool3[:, 3], pool3[:, 1]], 1)
      return ep.inception.InceptionOutput(pool3, logits + 0.1, logits)
  return StandIn()


def _toy_flows(ep, toy, tmp_path) -> None:
  """Training (score model, classifier, a diverging run), every solver, classifier guidance,
  likelihood, eval and the thread setting on the 2-D toy; `toy(**over)`: a recording config."""
  wt = str(tmp_path / 'toy')
  ep.train(toy(**{'training.likelihood_weighting': True, 'training.importance_sampling': True,
                  'training.nan_policy': 'skip'}), wt)
  ep.train(toy(), wt, task='classifier')
  with pytest.raises(ep.training_error, match='non-finite loss'):  # a diverging run
    ep.train(toy(**{'optim.lr': 1e30, 'training.nan_policy': 'skip', 'training.max_nan_skips': 1,
                    'training.n_iters': 4}), str(tmp_path / 'diverged'))
  ep.sample(toy(), wt)  # the solver of sampling.method
  for solver in ep.solvers:
    optimized = {'sampling.grid': 'optimized', 'sampling.grid_pilot_batch': 8,
                 'sampling.grid_max_knots': 2}
    ep.sample(toy(**optimized if solver == 'unipc' else {}), wt, solver)
  ep.sample(toy(**{'sampling.classifier_scale': 1.0}), wt, 'ddim')
  ep.likelihood(toy(), wt)
  ep.evaluate(toy(**{'eval.solver': 'ddim'}), wt)
  threads = torch.get_num_threads()
  ep.configure_threads(toy().runtime)
  torch.set_num_threads(threads)


def _digits_flows(ep, digits, tmp_path, monkeypatch) -> None:
  """Training (score model, conv classifier), both likelihoods, image eval, inpainting,
  interpolation, the other networks and an image-folder dataset on 8x8 images."""
  wd = str(tmp_path / 'digits')
  ep.train(digits(), wd)
  ep.train(digits(), wd, task='classifier')
  ep.likelihood(digits(**{'eval.bpd_method': 'both', 'eval.vlb_steps': 2}), wd)
  monkeypatch.setattr(ep.inception, 'load_inception', lambda *a, **k: _stand_in_inception(ep))
  ep.evaluate(digits(**{'eval.enable_bpd': False, 'eval.export': 'npz'}), wd, 'ddim')
  ep.inverse_problem(digits(**{'inverse.mask': 'random'}), wd, 'inpaint', 'ddim')
  ep.interpolate(digits(), wd)
  for name, over in NETWORKS:
    config = digits(**{'model.name': name, 'model.learn_sigma': False, 'training.continuous': True,
                       'model.nf': 32, 'model.num_res_blocks': 1, **over})
    ep.create_model(config, ep.build_sde(config))
  folder = tmp_path / 'images'
  folder.mkdir()
  for i in range(2):
    Image.fromarray(np.full((8, 8), 80 * i, np.uint8)).save(folder / f'{i}.png')
  folder_data = {'data.dataset': 'image_folder', 'data.root': str(folder), 'data.random_flip': True}
  assert len(ep.load_split(digits(**folder_data).data, 'train')) == 1


def test_every_config_key_is_read_by_some_flow(tmp_path, monkeypatch):
  ep = entry_points()
  recorder = Recorder(skip_modules=ep.not_readers)
  make = lambda name, base: lambda **over: recording(_packaged(name, {**base, **over}), recorder)[0]
  _toy_flows(ep, make('toy_gmm', TOY), tmp_path)
  _digits_flows(ep, make('digits', DIGITS), tmp_path, monkeypatch)
  keys = set(leaf_keys(get_default_config()))
  unread = sorted(keys - recorder.read - FIXED - set(ALLOWED_UNREAD))
  assert unread == [], f'config keys that no flow reads (dead, or a flow is missing): {unread}'
  assert recorder.read <= keys
  exempt = FIXED | set(ALLOWED_UNREAD)
  read_anyway = {k: sorted(recorder.where[k]) for k in recorder.read & exempt}
  assert read_anyway == {}, 'read after all: take them off FIXED / ALLOWED_UNREAD'
  assert set(ALLOWED_UNREAD) <= keys


def test_fixed_keys_are_validated():
  ep = entry_points()
  for key, bad in (('model.attention_type', 'legacy'), ('model.conv_size', 5)):
    config = get_default_config()
    section, name = key.split('.')
    config[section][name] = bad
    with pytest.raises(ep.config_error, match=key):
      ep.validate(config)


def test_recording_config_counts_reads_not_serialisation():
  ep = entry_points()
  everything, rec = recording(get_default_config())
  ep.validate(everything)
  assert rec.read == set(leaf_keys(everything))  # the validator reads every key ...
  validated, rec = recording(get_default_config(), skip_modules=ep.not_readers)
  ep.validate(validated)
  assert rec.read <= {'model.name'}  # ... and only its reads are skipped (it asks network_spec)
  c, rec = recording(get_default_config(), skip_modules=ep.not_readers)
  assert isinstance(c, ml_collections.ConfigDict) and c.is_locked and c == get_default_config()
  c.to_dict(), c.to_json(), repr(c), str(c), list(c.items()), c.sampling.values()
  p = pickle.loads(pickle.dumps(c))
  assert rec.read == set() and p == c
  p.sampling.eps, c['optim']['eps']
  assert rec.read == {'sampling.eps', 'optim.eps'}  # training.eps shares the leaf name: unread
  d = copy.deepcopy(c)
  e = d.copy_and_resolve_references()
  d.training.eps, getattr(e.model, 'nf'), e.get('data').get('root'), e['runtime.amp']
  assert type(e.model).__name__ == 'RecordingConfigDict' and e.is_locked
  assert rec.read == {'sampling.eps', 'optim.eps', 'training.eps', 'model.nf', 'data.root',
                      'runtime.amp'}
  with pytest.raises(AttributeError):
    c.training.bacth_size = 64
  argv = ['prog', '--config.training.n_iters=5', '--config.sampling.snr=0.5']
  fv = flags.FlagValues()
  config_flags.DEFINE_config_dict('config', c, flag_values=fv, lock_config=True, sys_argv=argv)
  fv(argv)
  assert fv.config is c and 'training.n_iters' not in rec.read  # an override is not a read
  assert (c.training.n_iters, c.sampling.snr) == (5, 0.5) and 'training.n_iters' in rec.read


@pytest.mark.parametrize('solver,expected', [
    ('dpm_solver', {'order': 2, 'grid': 'karras', 'multistep': False}),
    ('heun', {'rho': 5.0, 's_churn': 10.0, 's_tmin': 0.0, 's_tmax': 1e30, 's_noise': 1.0}),
    ('ddpm', {'variance': 'large'}),
    ('sde', {'method': 'milstein', 'rtol': 1e-5, 'atol': 1e-5}),
    ('pc', {'predictor': 'reverse_diffusion', 'corrector': 'langevin', 'snr': 0.16, 'n_steps': 1,
            'probability_flow': True}),
])
def test_solver_options_come_from_the_config(solver, expected):
  c = get_default_config()
  c.sampling.grid, c.sampling.multistep, c.sampling.rho, c.sampling.s_churn = 'karras', False, 5.0, 10.0
  c.sampling.variance, c.sampling.sde_method, c.sampling.probability_flow = 'large', 'milstein', True
  got = entry_points().solver_kwargs(c, solver)
  assert {k: got[k] for k in expected} == expected
