"""score_sde_pytorch's config files as they are: `--config their/file.py` (detected, or forced
with `--config_format ssp`).

Their files do `from configs.default_cifar10_configs import get_default_configs` (or the CelebA
/ LSUN builder), modules we do not ship under that name. `load_ssp_config` executes the file
with a stand-in `configs` package whose `default_{cifar10,celeba,lsun}_configs` builders give
score_sde_pytorch's defaults (any other `configs.X` module is looked up beside their file, in
the `configs/` folder it sits in). `translate` then copies every key that ours has under the
same name, maps the few that differ (dataset names, `ancestral_sampling`, checkpoint indices),
and lists the TF-only / unused ones (`training.eval_freq`, `eval.enable_loss`, `device`,
`data.tfrecords_path`, `data.category`, ...) in one line as ignored.

`COUNTERPARTS` names our packaged config for each of the 22 reference network configs.
"""
from __future__ import annotations

import os
import re
import sys
import types

import ml_collections

from score_sde.errors import ConfigError, one_line

# score_sde_pytorch config (relative to its configs/ folder) -> our packaged config
COUNTERPARTS = {
    'subvp/cifar10_ddpm_continuous.py': 'subvp_cifar_ddpm',
    'subvp/cifar10_ddpmpp_continuous.py': 'subvp_cifar',
    'subvp/cifar10_ddpmpp_deep_continuous.py': 'subvp_cifar_deep',
    'subvp/cifar10_ncsnpp_continuous.py': 'subvp_cifar_ncsnpp',
    'subvp/cifar10_ncsnpp_deep_continuous.py': 'subvp_cifar_ncsnpp_deep',
    've/bedroom_ncsnpp_continuous.py': 've_lsun_bedroom_256',
    've/celeba_ncsnpp.py': 've_celeba_discrete',
    've/celebahq_256_ncsnpp_continuous.py': 've_celebahq_256',
    've/celebahq_ncsnpp_continuous.py': 've_celebahq_1024',
    've/church_ncsnpp_continuous.py': 've_lsun_church_256',
    've/cifar10_ddpm.py': 've_cifar_ddpm_discrete',
    've/cifar10_ncsnpp.py': 've_cifar_discrete',
    've/cifar10_ncsnpp_continuous.py': 've_cifar',
    've/cifar10_ncsnpp_deep_continuous.py': 've_cifar_deep',
    've/ffhq_256_ncsnpp_continuous.py': 've_ffhq_256',
    've/ffhq_ncsnpp_continuous.py': 've_ffhq_1024',
    'vp/cifar10_ddpmpp.py': 'vp_cifar_discrete',
    'vp/cifar10_ddpmpp_continuous.py': 'vp_cifar',
    'vp/cifar10_ddpmpp_deep_continuous.py': 'vp_cifar_deep',
    'vp/cifar10_ncsnpp.py': 'vp_cifar_ncsnpp_discrete',
    'vp/cifar10_ncsnpp_continuous.py': 'vp_cifar_ncsnpp',
    'vp/cifar10_ncsnpp_deep_continuous.py': 'vp_cifar_ncsnpp_deep',
}

# score_sde_pytorch's configs/default_<dataset>_configs.py: the CIFAR-10 defaults, and what the
# CelebA and LSUN builders change
_BASE = {
    'training': dict(batch_size=128, n_iters=1300001, snapshot_freq=50000, log_freq=50,
                     eval_freq=100, snapshot_freq_for_preemption=10000, snapshot_sampling=True,
                     likelihood_weighting=False, continuous=True, reduce_mean=False),
    'sampling': dict(n_steps_each=1, noise_removal=True, probability_flow=False, snr=0.16),
    'eval': dict(begin_ckpt=9, end_ckpt=26, batch_size=1024, enable_sampling=False,
                 num_samples=50000, enable_loss=True, enable_bpd=False, bpd_dataset='test'),
    'data': dict(dataset='CIFAR10', image_size=32, random_flip=True, centered=False,
                 uniform_dequantization=False, num_channels=3),
    'model': dict(sigma_min=0.01, sigma_max=50, num_scales=1000, beta_min=0.1, beta_max=20.,
                  dropout=0.1, embedding_type='fourier'),
    'optim': dict(weight_decay=0, optimizer='Adam', lr=2e-4, beta1=0.9, eps=1e-8, warmup=5000,
                  grad_clip=1.),
}
_DATASET_DEFAULTS = {
    'cifar10': {},
    'celeba': {'sampling.snr': 0.17, 'eval.begin_ckpt': 1, 'eval.enable_sampling': True,
               'data.dataset': 'CELEBA', 'data.image_size': 64, 'model.sigma_max': 90.},
    'lsun': {'training.batch_size': 64, 'training.n_iters': 2400001,
             'training.snapshot_freq_for_preemption': 5000, 'sampling.snr': 0.075,
             'eval.begin_ckpt': 50, 'eval.end_ckpt': 96, 'eval.batch_size': 512,
             'eval.enable_sampling': True, 'data.dataset': 'LSUN', 'data.image_size': 256,
             'model.sigma_max': 378, 'model.num_scales': 2000, 'model.dropout': 0.},
}
_VALUE_MAPS = {'sampling.predictor': {'ancestral_sampling': 'ancestral'}}
_DETECT = re.compile(r'^\s*(from\s+configs\.default_\w+\s+import|import\s+configs\.default_)|'
                     r'get_default_configs\s*\(', re.M)


def ssp_defaults(dataset: str) -> ml_collections.ConfigDict:
  """score_sde_pytorch's `get_default_configs()` of `configs/default_<dataset>_configs.py`."""
  sections = {k: dict(v) for k, v in _BASE.items()}
  for key, value in _DATASET_DEFAULTS[dataset].items():
    section, name = key.split('.')
    sections[section][name] = value
  config = ml_collections.ConfigDict(sections)
  config.seed = 42
  config.device = 'cpu'  # a torch.device there; ignored by the translation
  return config


def is_ssp_config(path: str) -> bool:
  """Whether the config file `path` is in score_sde_pytorch's format (imports its
  `configs.default_*_configs`, or builds its own ConfigDict without importing ours)."""
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError):
    return False
  if re.search(r'^\s*(from|import)\s+score_sde(\.|\s)', text, re.M):  # one of ours
    return False
  return bool(_DETECT.search(text)) or ('ml_collections.ConfigDict()' in text
                                         and re.search(r'config\.model\s*=', text) is not None)


def _stub_configs_package(path: str) -> dict:
  """sys.modules entries of the stand-in `configs` package for executing `path`."""
  root = os.path.dirname(os.path.abspath(path))
  while root and os.path.basename(root) != 'configs' and os.path.dirname(root) != root:
    root = os.path.dirname(root)
  package = types.ModuleType('configs')
  package.__path__ = [root] if os.path.basename(root) == 'configs' else []
  modules = {'configs': package}
  for dataset in _DATASET_DEFAULTS:
    module = types.ModuleType(f'configs.default_{dataset}_configs')
    module.get_default_configs = lambda dataset=dataset: ssp_defaults(dataset)
    setattr(package, f'default_{dataset}_configs', module)
    modules[module.__name__] = module
  return modules


def load_ssp_config(path: str) -> ml_collections.ConfigDict:
  """Execute score_sde_pytorch config file `path` and return its `get_config()` (their keys)."""
  saved = {k: v for k, v in sys.modules.items() if k == 'configs' or k.startswith('configs.')}
  for k in saved:
    del sys.modules[k]
  sys.modules.update(_stub_configs_package(path))
  namespace = {'__name__': '_ssp_config', '__file__': os.path.abspath(path)}
  try:
    with open(path, encoding='utf-8') as f:
      code = compile(f.read(), path, 'exec')
    exec(code, namespace)  # noqa: S102 (the user's own config file, as config_flags would)
    if 'get_config' not in namespace:
      raise ConfigError(f'score_sde_pytorch config {path} has no get_config()')
    return namespace['get_config']()
  except ConfigError:
    raise
  except Exception as e:  # a syntax error, a bad import, a misspelt key of their own file
    raise ConfigError(f'score_sde_pytorch config {path} failed to load: {type(e).__name__}: '
                      f'{one_line(e)}') from None
  finally:
    for k in [k for k in sys.modules if k == 'configs' or k.startswith('configs.')]:
      del sys.modules[k]
    sys.modules.update(saved)


def _flat(config, prefix=''):
  for k, v in config.items():
    if isinstance(v, (ml_collections.ConfigDict, dict)):
      yield from _flat(v, f'{prefix}{k}.')
    else:
      yield f'{prefix}{k}', v


def _coerce(key: str, value, current):
  """`value` of their `key` as our config holds it (type of `current`)."""
  if key == 'data.dataset':
    return str(value).lower()
  if key in _VALUE_MAPS and isinstance(value, str):
    value = _VALUE_MAPS[key].get(value, value)
  if isinstance(current, tuple) and isinstance(value, (list, tuple)):
    return tuple(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def translate(ssp, source: str = 'the config') -> tuple[ml_collections.ConfigDict, list[str]]:
  """Our config for a score_sde_pytorch ConfigDict, and the keys it ignored (sorted)."""
  from score_sde.configs.default import get_default_config
  config, ignored = get_default_config(), []
  flat = dict(_flat(ssp))
  for key, value in flat.items():
    section, _, name = key.rpartition('.')
    node = config[section] if section and section in config else (config if not section else None)
    if node is None or name not in node or isinstance(node[name], ml_collections.ConfigDict):
      ignored.append(key)
      continue
    try:
      node[name] = _coerce(key, value, node[name])
    except (TypeError, ValueError) as e:
      raise ConfigError(f'{source}: {key} = {value!r} cannot be used: {one_line(e)}') from None
  snapshot = flat.get('training.snapshot_freq', config.training.snapshot_freq)
  for key in ('begin_ckpt', 'end_ckpt'):  # their checkpoint_<k> is step k * snapshot_freq
    if f'eval.{key}' in flat and config.eval[key] >= 0:
      config.eval[key] = int(config.eval[key] * snapshot)
  if config.training.sde.lower() == 'vesde':
    config.sampling.eps = 1e-5  # score_sde_pytorch samples VE down to 1e-5 (VP: 1e-3)
  return config, sorted(ignored)


def translate_file(path: str, quiet: bool = False) -> ml_collections.ConfigDict:
  """Our config for score_sde_pytorch config file `path`; the ignored keys are listed in one
  line on stderr (unless `quiet`)."""
  config, ignored = translate(load_ssp_config(path), f'score_sde_pytorch config {path}')
  if ignored and not quiet:
    print(f'note: score_sde_pytorch config {path}: ignored (TF-only or not used here): '
          f"{', '.join(ignored)}", file=sys.stderr)
  return config


_CACHE: dict[str, ml_collections.ConfigDict] = {}


def config_format(argv: list[str]) -> str:
  """The value of `--config_format` in `argv` (auto | ours | ssp; default auto)."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config_format='):
      return arg.split('=', 1)[1]
    if arg == '--config_format' and i + 1 < len(argv):
      return argv[i + 1]
  return 'auto'


def redirect_argv(argv: list[str], path: str | None) -> list[str]:
  """`argv` with a score_sde_pytorch `--config` file (detected, or `--config_format ssp`)
  replaced by our translating entry (`ssp_entry.py:FILE`), translated once here so that its
  problems are one-line ConfigErrors and its ignored keys are listed once."""
  fmt = config_format(argv)
  if fmt not in ('auto', 'ours', 'ssp'):
    raise ConfigError(f'--config_format {fmt}: must be auto, ours or ssp')
  if not path or fmt == 'ours':
    return argv
  name = path.split(':', 1)[0]
  if not (fmt == 'ssp' or (name.endswith('.py') and is_ssp_config(name))):
    return argv
  if not os.path.isfile(name):
    raise ConfigError(f'config file not found: {name}')
  _CACHE[os.path.abspath(name)] = translate_file(name)
  entry = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'ssp_entry.py')
  return [f'--config={entry}:{os.path.abspath(name)}' if _is_config_arg(a) else a
          for a in _join_config_value(argv)]


def cached_translation(path: str) -> ml_collections.ConfigDict:
  """The translation of `path` made by `redirect_argv` (or a fresh one)."""
  path = os.path.abspath(path)
  if path not in _CACHE:
    _CACHE[path] = translate_file(path)
  return _CACHE[path]


def _is_config_arg(arg: str) -> bool:
  return arg.startswith('--config=')


def _join_config_value(argv: list[str]) -> list[str]:
  """argv with `--config VALUE` written as `--config=VALUE`."""
  out, skip = [], False
  for i, arg in enumerate(argv):
    if skip:
      skip = False
      continue
    if arg == '--config' and i + 1 < len(argv):
      out.append('--config=' + argv[i + 1])
      skip = True
    else:
      out.append(arg)
  return out
