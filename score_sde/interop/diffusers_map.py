"""Which of our networks are diffusers `UNet2DModel`s, and how their tensors map, without diffusers.

Two families map one to one:
- DDPM (Ho et al. 2020; google/ddpm-*): our `ddpm` network, `DownBlock2D` / `AttnDownBlock2D` /
  `UpBlock2D` / `AttnUpBlock2D`, sinusoidal time embedding (`freq_shift=1`). diffusers has an
  attention after every up-path residual block at an attention resolution (Ho et al.'s layout,
  our `model.attn_every_up_block=True`); score_sde_pytorch's layout (one per level) exports with
  the extra attentions set to the identity (zero output projection), and a folder whose extra
  attentions are all such identities imports back into that layout.
- NCSN++ for VE at 256 px and up (google/ncsnpp-*): our `ncsnpp` with BigGAN blocks, FIR
  resampling, the StyleGAN2 input / output skip pyramids, a Fourier embedding of log sigma and
  the output divided by sigma: `SkipDownBlock2D` / `AttnSkipDownBlock2D` / `SkipUpBlock2D` /
  `AttnSkipUpBlock2D`. `data.centered=False` (our NCSN++ maps [0, 1] to [-1, 1]) is their
  `center_input_sample=True`.
Anything else (DDPM++, the CIFAR-10 NCSN++ with its residual input pyramid, NCSNv2, ...) is not
a `UNet2DModel`: `UnsupportedModelError`, one line naming what does not map.

Our `NIN` (`W [in, out]`, `b`) is their `nn.Linear` (attention) or 1x1 `nn.Conv2d` (shortcut):
the weight transposed, which is exact, so tensors round-trip bit for bit.
"""
from __future__ import annotations

import math

from score_sde.files.checkpoint import CheckpointError

SQRT2 = math.sqrt(2.)
DDPM_BLOCKS = ('DownBlock2D', 'AttnDownBlock2D', 'UpBlock2D', 'AttnUpBlock2D')
NCSNPP_BLOCKS = ('SkipDownBlock2D', 'AttnSkipDownBlock2D', 'SkipUpBlock2D', 'AttnSkipUpBlock2D')
_RESNET = {'GroupNorm_0': 'norm1', 'Conv_0': 'conv1', 'Dense_0': 'time_emb_proj',
           'GroupNorm_1': 'norm2', 'Conv_1': 'conv2', 'Conv_2': 'conv_shortcut',
           'NIN_0': 'conv_shortcut'}
_ATTN = {'GroupNorm_0': 'group_norm', 'NIN_0': 'to_q', 'NIN_1': 'to_k', 'NIN_2': 'to_v',
         'NIN_3': 'to_out.0'}
LEGACY_ATTN = {'query': 'to_q', 'key': 'to_k', 'value': 'to_v', 'proj_attn': 'to_out.0'}


class UnsupportedModelError(CheckpointError):
  """A model that has no counterpart on the other side (one line naming what does not map)."""


def family(config) -> str:
  """'ddpm' or 'ncsnpp' when `config`'s network is a diffusers UNet2DModel; else raise
  UnsupportedModelError naming the first setting that is not expressible."""
  m, d, t = config.model, config.data, config.training
  name = m.name.lower()
  if name == 'ddpm':
    need = {'conditional': True, 'resamp_with_conv': True, 'scale_by_sigma': False,
            'learn_sigma': False, 'class_conditional': False, 'nonlinearity': 'swish'}
    _require(m, need, 'DDPM')
    if t.sde.lower() != 'vpsde' or t.continuous:
      raise UnsupportedModelError(
          f'diffusers: a DDPM exports as DDPMPipeline for the discrete-time VP SDE only '
          f"(training.sde=vpsde, training.continuous=False), not {t.sde} continuous={t.continuous}")
    return 'ddpm'
  if name == 'ncsnpp':
    need = {'resblock_type': 'biggan', 'fir': True, 'progressive': 'output_skip',
            'progressive_input': 'input_skip', 'progressive_combine': 'sum', 'skip_rescale': True,
            'embedding_type': 'fourier', 'fourier_scale': 16.0, 'conditional': True,
            'scale_by_sigma': True, 'learn_sigma': False, 'class_conditional': False,
            'nonlinearity': 'swish'}
    _require(m, need, 'NCSN++ (DDPM++ and the CIFAR-10 NCSN++ variants are not UNet2DModels)')
    if tuple(m.fir_kernel) != (1, 3, 3, 1):
      raise UnsupportedModelError(f'diffusers: NCSN++ with fir_kernel {tuple(m.fir_kernel)} has no '
                                  'UNet2DModel counterpart (only (1, 3, 3, 1))')
    if d.num_channels != 3 or t.sde.lower() != 'vesde':
      raise UnsupportedModelError('diffusers: NCSN++ maps to a UNet2DModel for 3-channel images '
                                  f'on the VE SDE only (got {d.num_channels} channels, {t.sde})')
    for c in attention_channels(config):
      if c // 4 < 32:
        raise UnsupportedModelError(f'diffusers: NCSN++ attention on {c} channels has GroupNorm('
                                    f'{c // 4}) here but GroupNorm(32) in diffusers (needs >= 128)')
    return 'ncsnpp'
  raise UnsupportedModelError(f"diffusers: network '{m.name}' is not a UNet2DModel "
                              '(supported: ddpm, and ncsnpp in its VE 256-px form)')


def _require(m, need: dict, what: str) -> None:
  for key, want in need.items():
    have = m[key].lower() if isinstance(m[key], str) else m[key]
    if have != want:
      raise UnsupportedModelError(f'diffusers: {what} with model.{key}={m[key]!r} has no '
                                  f'UNet2DModel counterpart (needs {want!r})')


def attn_levels(config) -> list[bool]:
  """Per resolution level (top first): whether it has attention."""
  size, levels = config.data.image_size, len(tuple(config.model.ch_mult))
  return [size // 2 ** i in tuple(config.model.attn_resolutions) for i in range(levels)]


def attention_channels(config) -> list[int]:
  m = config.model
  return [m.nf * k for k, a in zip(tuple(m.ch_mult), attn_levels(config)) if a]


def block_types(config, fam: str) -> tuple[list[str], list[str]]:
  """diffusers' down_block_types and up_block_types for `config`."""
  names = DDPM_BLOCKS if fam == 'ddpm' else NCSNPP_BLOCKS
  attn = attn_levels(config)
  down = [names[1] if a else names[0] for a in attn]
  up = [names[3] if a else names[2] for a in reversed(attn)]
  return down, up


def module_pairs(config, fam: str, every_up: bool) -> list[tuple[str, str]]:
  """(their module prefix, kind) for each entry of our `all_modules`, in order. kind: plain
  (same tensor names), resnet, attn, conv0 (our `X.Conv_0` is their `X`), fourier."""
  m = config.model
  levels, nrb, attn = len(tuple(m.ch_mult)), m.num_res_blocks, attn_levels(config)
  pairs = [('time_proj', 'fourier')] if fam == 'ncsnpp' else []
  pairs += [('time_embedding.linear_1', 'plain'), ('time_embedding.linear_2', 'plain'),
            ('conv_in', 'plain')]
  for lvl in range(levels):
    for j in range(nrb):
      pairs.append((f'down_blocks.{lvl}.resnets.{j}', 'resnet'))
      if attn[lvl]:
        pairs.append((f'down_blocks.{lvl}.attentions.{j}', 'attn'))
    if lvl != levels - 1 and fam == 'ddpm':
      pairs.append((f'down_blocks.{lvl}.downsamplers.0.conv', 'conv0'))
    elif lvl != levels - 1:
      pairs += [(f'down_blocks.{lvl}.resnet_down', 'resnet'), (f'down_blocks.{lvl}.skip_conv', 'conv0')]
  pairs += [('mid_block.resnets.0', 'resnet'), ('mid_block.attentions.0', 'attn'),
            ('mid_block.resnets.1', 'resnet')]
  for lvl in reversed(range(levels)):
    up = f'up_blocks.{levels - 1 - lvl}'
    for j in range(nrb + 1):
      pairs.append((f'{up}.resnets.{j}', 'resnet'))
      if attn[lvl] and every_up:
        pairs.append((f'{up}.attentions.{j}', 'attn'))
    if attn[lvl] and not every_up:
      pairs.append((f'{up}.attentions.{nrb if fam == "ddpm" else 0}', 'attn'))
    if fam == 'ddpm':
      if lvl != 0:
        pairs.append((f'{up}.upsamplers.0.conv', 'conv0'))
    elif lvl != 0:
      pairs += [(f'{up}.skip_norm', 'plain'), (f'{up}.skip_conv', 'plain'), (f'{up}.resnet_up', 'resnet')]
    else:
      pairs += [('conv_norm_out', 'plain'), ('conv_out', 'plain')]
  if fam == 'ddpm':
    pairs += [('conv_norm_out', 'plain'), ('conv_out', 'plain')]
  return pairs


def identity_attentions(config) -> list[tuple[str, int]]:
  """(their attention prefix, channels) that diffusers' DDPM has and score_sde_pytorch's layout
  has not: the up-path attentions before each level's last residual block."""
  m, levels = config.model, len(tuple(config.model.ch_mult))
  return [(f'up_blocks.{levels - 1 - lvl}.attentions.{j}', m.nf * tuple(m.ch_mult)[lvl])
          for lvl, a in enumerate(attn_levels(config)) if a for j in range(m.num_res_blocks)]


def key_map(our_keys, pairs) -> dict[str, tuple[str, str]]:
  """our state_dict key -> (their key, transform) with transform same | nin_linear | nin_conv."""
  out = {}
  for key in our_keys:
    if key == 'sigmas':  # recomputed from the config on both sides
      continue
    _, index, rest = key.split('.', 2)
    prefix, kind = pairs[int(index)]
    out[key] = _their_key(prefix, kind, rest)
  return out


def _their_key(prefix: str, kind: str, rest: str) -> tuple[str, str]:
  if kind == 'plain':
    return f'{prefix}.{rest}', 'same'
  if kind == 'fourier':
    return f'{prefix}.weight', 'same'
  module, leaf = rest.split('.')
  if kind == 'conv0':
    return f'{prefix}.{leaf}', 'same'
  names = _RESNET if kind == 'resnet' else _ATTN
  if leaf in ('W', 'b'):
    transform = ('nin_linear' if kind == 'attn' else 'nin_conv') if leaf == 'W' else 'same'
    return f'{prefix}.{names[module]}.{"weight" if leaf == "W" else "bias"}', transform
  return f'{prefix}.{names[module]}.{leaf}', 'same'


def to_theirs(tensor, transform: str):
  """Our tensor as diffusers stores it (contiguous)."""
  if transform == 'nin_linear':
    tensor = tensor.t()
  elif transform == 'nin_conv':
    tensor = tensor.t()[:, :, None, None]
  return tensor.contiguous()


def to_ours(tensor, transform: str):
  """A diffusers tensor as our module stores it."""
  if transform == 'nin_linear':
    tensor = tensor.t()
  elif transform == 'nin_conv':
    if tensor.ndim != 4 or tensor.shape[2:] != (1, 1):
      raise CheckpointError(f'a 1x1 convolution was expected, got shape {tuple(tensor.shape)}')
    tensor = tensor[:, :, 0, 0].t()
  return tensor.contiguous()
