"""Configs both ways: our config <-> a diffusers `UNet2DModel` config.json and its scheduler's
scheduler_config.json (`DDPMScheduler` / `DDIMScheduler` for the discrete VP chain,
`ScoreSdeVeScheduler` for the VE SDE). No diffusers needed.

DDPM scheduler: `num_train_timesteps` N, linear betas from `beta_start` to `beta_end` are our
discrete VP chain with beta_min = N beta_start, beta_max = N beta_end (index time label, eps or
x0 prediction); its sampler keys clip_sample / thresholding (dynamic_thresholding_ratio,
sample_max_value), timestep_spacing, steps_offset and DDIM's set_alpha_to_one are our ddpm / ddim
options of the same meaning (config.sampling.clip_x0, threshold, threshold_max, ...). ScoreSdeVe: our continuous VE SDE (sigma_min, sigma_max, N scales), the score
network labelled by sigma, predictor-corrector sampling with its snr / correct_steps /
sampling_eps.
"""
from __future__ import annotations

from score_sde.interop.diffusers_map import (SQRT2, UnsupportedModelError, DDPM_BLOCKS,
                                             NCSNPP_BLOCKS, block_types, family)

VERSION = '0.30.0'  # the diffusers version our files are written for (config layout)
PIPELINES = {'ddpm': ('DDPMPipeline', 'DDPMScheduler'), 'ncsnpp': ('ScoreSdeVePipeline', 'ScoreSdeVeScheduler')}


def unet_config(config) -> dict:
  """diffusers UNet2DModel config.json for our `config` (raises UnsupportedModelError)."""
  fam = family(config)
  m, d = config.model, config.data
  down, up = block_types(config, fam)
  cfg = {'_class_name': 'UNet2DModel', '_diffusers_version': VERSION,
         'sample_size': d.image_size, 'in_channels': d.num_channels, 'out_channels': d.num_channels,
         'center_input_sample': not d.centered, 'down_block_types': down, 'up_block_types': up,
         'block_out_channels': [m.nf * k for k in tuple(m.ch_mult)],
         'layers_per_block': m.num_res_blocks, 'act_fn': 'silu', 'attention_head_dim': None,
         'norm_eps': 1e-6, 'dropout': float(m.dropout), 'mid_block_type': 'UNetMidBlock2D',
         'resnet_time_scale_shift': 'default', 'add_attention': True}
  if fam == 'ddpm':
    cfg.update(time_embedding_type='positional', flip_sin_to_cos=False, freq_shift=1,
               mid_block_scale_factor=1, downsample_padding=0, norm_num_groups=32)
  else:
    cfg.update(time_embedding_type='fourier', flip_sin_to_cos=True, freq_shift=0,
               mid_block_scale_factor=SQRT2, downsample_padding=1, norm_num_groups=None)
  return cfg


def scheduler_config(config) -> dict:
  """diffusers scheduler_config.json for our `config`'s SDE."""
  m, s = config.model, config.sampling
  if family(config) == 'ddpm':
    n = m.num_scales
    if m.schedule.lower() != 'linear':
      raise UnsupportedModelError(f'diffusers: VP schedule {m.schedule} has no DDPMScheduler '
                                  'counterpart here (linear only)')
    variance = {'large': 'fixed_large'}.get(s.variance.lower(), 'fixed_small')
    prediction = {'x0': 'sample'}.get(m.parameterization, 'epsilon')
    return {'_class_name': 'DDPMScheduler', '_diffusers_version': VERSION, 'num_train_timesteps': n,
            'beta_start': m.beta_min / n, 'beta_end': m.beta_max / n, 'beta_schedule': 'linear',
            'trained_betas': None, 'variance_type': variance, 'prediction_type': prediction,
            **_sampler_options(config)}
  return {'_class_name': 'ScoreSdeVeScheduler', '_diffusers_version': VERSION,
          'num_train_timesteps': m.num_scales, 'snr': s.snr, 'sigma_min': m.sigma_min,
          'sigma_max': m.sigma_max, 'sampling_eps': s.eps, 'correct_steps': s.n_steps_each}


NO_CAP = 1e30  # diffusers' sample_max_value for our threshold_max = 0 (no cap)


def _sampler_options(config) -> dict:
  """diffusers' DDPMScheduler sampler keys for config.sampling's clip_x0 / threshold /
  threshold_max / timestep_spacing / steps_offset (their defaults where the keys are absent)."""
  s = config.sampling
  clip, thr, cap = bool(s.get('clip_x0', False)), float(s.get('threshold', 0.0)), float(s.get('threshold_max', 0.0))
  if (clip or thr > 0) and not config.data.centered:
    raise UnsupportedModelError('diffusers: x0 clipping / thresholding of data in [0, 1] (data.centered=False) '
                                'has no DDPMScheduler counterpart (its clip range is [-r, r]); turn off '
                                'sampling.clip_x0 and sampling.threshold to export')
  return {'clip_sample': clip, 'clip_sample_range': 1.0, 'thresholding': thr > 0,
          'dynamic_thresholding_ratio': thr if thr > 0 else 0.995, 'sample_max_value': cap or NO_CAP,
          'timestep_spacing': s.get('timestep_spacing', 'leading'), 'steps_offset': int(s.get('steps_offset', 0))}


def _apply_sampler_options(config, sched: dict, ddim: bool, where: str) -> None:
  """config.sampling's x0 clipping / thresholding, timestep spacing, steps offset and (DDIM)
  set_alpha_to_one from a DDPMScheduler / DDIMScheduler config (diffusers' defaults where a
  key is absent: clip_sample=True, leading, offset 0, set_alpha_to_one=True)."""
  from score_sde.sampling.ddim import SPACINGS
  s = config.sampling
  clip, thr = bool(_get(sched, 'clip_sample', True)), bool(_get(sched, 'thresholding', False))
  if (clip or thr) and not config.data.centered:
    raise _unsupported(where, 'clip_sample / thresholding', True, 'False with center_input_sample=True')
  if clip and not thr and float(_get(sched, 'clip_sample_range', 1.0)) != 1.0:
    raise _unsupported(where, 'clip_sample_range', sched['clip_sample_range'], 1.0)
  spacing = _get(sched, 'timestep_spacing', 'leading')
  if spacing not in SPACINGS:
    raise _unsupported(where, 'timestep_spacing', spacing, ' or '.join(SPACINGS))
  s.clip_x0, s.timestep_spacing, s.steps_offset = clip and not thr, spacing, int(_get(sched, 'steps_offset', 0))
  s.threshold = float(_get(sched, 'dynamic_thresholding_ratio', 0.995)) if thr else 0.0
  cap = float(_get(sched, 'sample_max_value', 1.0)) if thr else 0.0
  s.threshold_max = 0.0 if cap >= NO_CAP else cap
  s.set_alpha_to_one = bool(_get(sched, 'set_alpha_to_one', True)) if ddim else True
  s.clipped_eps = False  # DDIMScheduler.step's use_clipped_model_output=False (pipelines' default)


def _get(cfg: dict, key: str, default=None):
  """`cfg[key]`, or diffusers' default when the key is absent (a null is None, as there)."""
  return cfg[key] if key in cfg else default


def _unsupported(where: str, key: str, value, want) -> UnsupportedModelError:
  return UnsupportedModelError(
      f'diffusers model {where}: {key}={value!r} is not supported (needs {want!r}); supported: '
      'DDPM (DownBlock2D/AttnDownBlock2D UNet2DModel) and NCSN++ VE (SkipDownBlock2D/'
      'AttnSkipDownBlock2D UNet2DModel with a Fourier embedding)')


def _check(cfg: dict, where: str, want: dict) -> None:
  for key, (value, default) in want.items():
    have = _get(cfg, key, default)
    ok = abs(have - value) < 1e-6 if isinstance(value, float) and isinstance(have, (int, float)) else have == value
    if not ok:
      raise _unsupported(where, key, have, value)


def unet_family(cfg: dict, where: str) -> str:
  """'ddpm' or 'ncsnpp' for a UNet2DModel config.json (else UnsupportedModelError)."""
  if cfg.get('_class_name', 'UNet2DModel') != 'UNet2DModel':
    raise UnsupportedModelError(f"diffusers model {where}: {cfg.get('_class_name')} is not supported "
                                '(only UNet2DModel: DDPM and NCSN++ VE)')
  blocks = set(cfg.get('down_block_types', ())) | set(cfg.get('up_block_types', ()))
  for fam, names in (('ddpm', DDPM_BLOCKS), ('ncsnpp', NCSNPP_BLOCKS)):
    if blocks and blocks <= set(names):
      return fam
  raise UnsupportedModelError(f'diffusers model {where}: blocks {sorted(blocks)} are not supported '
                              f'(DDPM: {", ".join(DDPM_BLOCKS)}; NCSN++: {", ".join(NCSNPP_BLOCKS)})')


def apply_unet_config(config, cfg: dict, where: str) -> str:
  """Set `config`'s network and data shape from UNet2DModel config.json `cfg`; returns the
  family. Everything that our network cannot reproduce raises UnsupportedModelError."""
  fam = unet_family(cfg, where)
  bo = list(cfg.get('block_out_channels') or ())
  size = cfg.get('sample_size')
  size = size[0] if isinstance(size, (list, tuple)) and len(set(size)) == 1 else size
  if not bo or not isinstance(size, int) or any(b % bo[0] for b in bo):
    raise _unsupported(where, 'block_out_channels / sample_size', (bo, size), 'multiples of the first; square')
  nf, levels = bo[0], len(bo)
  down, up = list(cfg['down_block_types']), list(cfg['up_block_types'])
  attn = [t.startswith('Attn') for t in down]
  if len(down) != levels or [t.startswith('Attn') for t in reversed(up)] != attn:
    raise _unsupported(where, 'up_block_types', up, 'the mirror of down_block_types')
  common = {'in_channels': (cfg.get('out_channels', 3), 3), 'act_fn': ('silu', 'silu'),
            'norm_eps': (1e-6, 1e-5), 'resnet_time_scale_shift': ('default', 'default'),
            'class_embed_type': (None, None), 'num_class_embeds': (None, None),
            'add_attention': (True, True), 'mid_block_type': ('UNetMidBlock2D', 'UNetMidBlock2D'),
            'attn_norm_num_groups': (None, None)}
  if (cfg.get('time_embedding_dim') or 4 * nf) != 4 * nf:
    raise _unsupported(where, 'time_embedding_dim', cfg['time_embedding_dim'], 4 * nf)
  if fam == 'ddpm':
    common.update(time_embedding_type=('positional', 'positional'), flip_sin_to_cos=(False, True),
                  freq_shift=(1, 0), mid_block_scale_factor=(1.0, 1.0), downsample_padding=(0, 1),
                  norm_num_groups=(32, 32), downsample_type=('conv', 'conv'), upsample_type=('conv', 'conv'))
  else:
    common.update(time_embedding_type=('fourier', 'positional'), mid_block_scale_factor=(SQRT2, 1.0),
                  in_channels=(3, 3), norm_num_groups=(None, 32))
  _check(cfg, where, common)
  head_dim = cfg.get('attention_head_dim', 8)  # diffusers' default: heads of 8 channels
  if head_dim is not None and any(head_dim != b for b, a in zip(bo + [bo[-1]], attn + [True]) if a):
    raise _unsupported(where, 'attention_head_dim', head_dim, None)  # ours: one head
  m, d = config.model, config.data
  d.image_size, d.num_channels = size, int(cfg.get('in_channels', 3))
  d.centered = not cfg.get('center_input_sample', False)
  m.nf, m.ch_mult, m.num_res_blocks = nf, tuple(b // nf for b in bo), int(cfg.get('layers_per_block', 2))
  m.attn_resolutions = tuple(size // 2 ** i for i, a in enumerate(attn) if a)
  m.dropout, m.conditional, m.nonlinearity = float(cfg.get('dropout') or 0.), True, 'swish'
  m.normalization, m.resamp_with_conv, m.learn_sigma, m.class_conditional = 'GroupNorm', True, False, False
  if fam == 'ddpm':
    m.name, m.scale_by_sigma, m.attn_every_up_block = 'ddpm', False, True
  else:
    m.name, m.scale_by_sigma, m.fir, m.fir_kernel = 'ncsnpp', True, True, (1, 3, 3, 1)
    m.resblock_type, m.progressive, m.progressive_input = 'biggan', 'output_skip', 'input_skip'
    m.progressive_combine, m.skip_rescale, m.embedding_type = 'sum', True, 'fourier'
    m.fourier_scale, m.init_scale, m.attention_type = 16., 0., 'ddpm'
  return fam


def apply_scheduler_config(config, sched: dict, fam: str, where: str) -> None:
  """Set `config`'s SDE, conventions and sampler from scheduler_config.json `sched`."""
  name = sched.get('_class_name', '')
  m, s, t = config.model, config.sampling, config.training
  if fam == 'ddpm' and name in ('DDPMScheduler', 'DDIMScheduler'):
    _check(sched, where, {'beta_schedule': ('linear', 'linear'), 'trained_betas': (None, None)})
    prediction = _get(sched, 'prediction_type', 'epsilon')
    if prediction not in ('epsilon', 'sample'):
      raise _unsupported(where, 'prediction_type', prediction, 'epsilon or sample')
    n = int(_get(sched, 'num_train_timesteps', 1000))
    t.sde, t.continuous, m.num_scales, m.schedule = 'vpsde', False, n, 'linear'
    m.beta_min = round(float(_get(sched, 'beta_start', 1e-4)) * n, 12)
    m.beta_max = round(float(_get(sched, 'beta_end', 0.02)) * n, 12)
    m.parameterization, m.time_label = ('eps' if prediction == 'epsilon' else 'x0'), 'index'
    variance = _get(sched, 'variance_type', 'fixed_small')
    if variance not in ('fixed_small', 'fixed_large'):
      raise _unsupported(where, 'variance_type', variance, 'fixed_small or fixed_large')
    s.method = 'ddim' if name == 'DDIMScheduler' else 'ddpm'
    s.variance = 'large' if variance == 'fixed_large' else 'small'
    _apply_sampler_options(config, sched, name == 'DDIMScheduler', where)
  elif fam == 'ncsnpp' and name == 'ScoreSdeVeScheduler':
    t.sde, t.continuous = 'vesde', True
    m.num_scales = int(_get(sched, 'num_train_timesteps', 2000))
    m.sigma_min = float(_get(sched, 'sigma_min', 0.01))
    m.sigma_max = float(_get(sched, 'sigma_max', 1348.0))
    m.parameterization, m.time_label = 'score', 'sigma'
    s.method, s.predictor, s.corrector = 'pc', 'reverse_diffusion', 'langevin'
    s.snr, s.n_steps_each = float(_get(sched, 'snr', 0.15)), int(_get(sched, 'correct_steps', 1))
    s.eps = float(_get(sched, 'sampling_eps', 1e-5))
  else:
    want = 'DDPMScheduler or DDIMScheduler' if fam == 'ddpm' else 'ScoreSdeVeScheduler'
    raise UnsupportedModelError(f'diffusers scheduler {where}: {name or "(no _class_name)"} is not '
                                f'supported for a {"DDPM" if fam == "ddpm" else "NCSN++"} UNet '
                                f'(needs {want})')
