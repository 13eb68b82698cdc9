"""NCSN++ and DDPM++ (Song et al. 2021, ICLR, "Score-Based Generative Modeling through SDEs",
Sec. 4.4 and App. H), one class for both, selected by `config.model`:

- `resblock_type`: `biggan` (resampling inside the residual blocks) or `ddpm`;
- `fir`: StyleGAN2 FIR anti-aliased resampling (Karras et al. 2020) instead of nearest/average;
- `progressive` (output_skip | residual | none) and `progressive_input` (input_skip | residual |
  none): StyleGAN2-style image pyramids on the decoder output and encoder input;
- `skip_rescale`: residual sums divided by sqrt(2);
- `embedding_type`: `fourier` (random Fourier features of log sigma, continuous VE) or
  `positional` (sinusoidal embedding of the label, e.g. 999 t for VP);
- `scale_by_sigma`: divide the output by sigma (the NCSN parameterisation s = -eps / sigma);
- `learn_sigma`: twice the output channels, the second half IDDPM's variance interpolation
  (Nichol & Dhariwal 2021; not in score_sde_pytorch, whose layouts it leaves unchanged when off).

The modules sit in one flat `all_modules` ModuleList in the exact order of score_sde_pytorch, so
its checkpoints load with `strict=True`. The `build_*` / `_encode` / `_decode` methods add and
consume the modules in the same order.
"""
from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch import nn

from score_sde.maths.conventions import output_channels
from score_sde.models import layerspp
from score_sde.maths.sdes import smld_sigmas
from score_sde.models.layers import class_embedding, dense, get_act
from score_sde.models.layers import get_timestep_embedding
from score_sde.models.layerspp import residual_sum, group_norm, conv3x3


class NCSNpp(nn.Module):
  """`net(x [B, C, H, W], time_cond [B], y=None) -> [B, C, H, W]`.

  `time_cond` is sigma for the Fourier embedding (continuous VE), otherwise the label fed to the
  sinusoidal embedding (999 t for continuous VP / sub-VP, the integer index for discrete
  training, also used to look up `sigmas` when `scale_by_sigma`). With
  `model.class_conditional`, `label_emb` (num_classes + 1 rows, the last one the null
  label) is added to the time embedding.
  """

  def __init__(self, m, data):
    """m: the model hyper-parameters (`config.model`); data: `config.data` (image_size,
    num_channels, centered, num_classes)."""
    super().__init__()
    self.act = get_act(m.nonlinearity)
    sigmas = smld_sigmas(m.sigma_min, m.sigma_max, m.num_scales)
    self.register_buffer('sigmas', torch.tensor(sigmas))  # float64, as the reference
    self.nf, self.ch_mult = m.nf, tuple(m.ch_mult)
    self.num_res_blocks, self.attn_resolutions = m.num_res_blocks, tuple(m.attn_resolutions)
    self.num_resolutions = len(self.ch_mult)
    self.all_resolutions = [data.image_size // 2 ** i for i in range(self.num_resolutions)]
    self.attn_at_level = [r in self.attn_resolutions for r in self.all_resolutions]
    self.conditional, self.centered = m.conditional, data.centered
    self.scale_by_sigma, self.skip_rescale = m.scale_by_sigma, m.skip_rescale
    self.resblock_type = m.resblock_type.lower()
    self.progressive, self.progressive_input = m.progressive.lower(), m.progressive_input.lower()
    self.embedding_type, self.combine_method = m.embedding_type.lower(), m.progressive_combine.lower()
    self._check_options()
    mk = self._factories(m)
    if self.progressive == 'output_skip':
      self.pyramid_upsample = layerspp.Upsample(fir=m.fir, fir_kernel=m.fir_kernel, with_conv=False)
    if self.progressive_input == 'input_skip':
      self.pyramid_downsample = layerspp.Downsample(fir=m.fir, fir_kernel=m.fir_kernel,
                                                    with_conv=False)
    channels, modules = data.num_channels, []
    self.build_embedding(modules, m.fourier_scale)
    hs_c = self.build_encoder(modules, mk, channels)
    in_ch = self.build_middle(modules, mk, hs_c[-1])
    self.build_decoder(modules, mk, hs_c, in_ch, output_channels(data.num_channels, m.learn_sigma), m.init_scale)
    self.all_modules = nn.ModuleList(modules)
    self.label_emb = None
    if m.class_conditional:
      self.label_emb = nn.Embedding(data.num_classes + 1, 4 * self.nf)

  def _check_options(self):
    options = {'progressive': ('none', 'output_skip', 'residual'),
               'progressive_input': ('none', 'input_skip', 'residual'),
               'embedding_type': ('fourier', 'positional'),
               'resblock_type': ('ddpm', 'biggan'),
               'combine_method': ('cat', 'sum')}
    for name, allowed in options.items():
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got '{getattr(self, name)}'")

  def _factories(self, m) -> SimpleNamespace:
    """Partially applied block constructors shared by the builders."""
    fir, fk, rescale = m.fir, tuple(m.fir_kernel), self.skip_rescale
    common = dict(act=self.act, dropout=m.dropout, init_scale=m.init_scale,
                  skip_rescale=rescale, temb_dim=4 * self.nf)
    if self.resblock_type == 'ddpm':
      resblock = functools.partial(layerspp.ResnetBlockDDPMpp, **common)
    else:
      resblock = functools.partial(layerspp.ResnetBlockBigGANpp, fir=fir, fir_kernel=fk, **common)
    resample = dict(fir=fir, fir_kernel=fk)
    return SimpleNamespace(
        resblock=resblock,
        attn=functools.partial(layerspp.AttnBlockpp, init_scale=m.init_scale, skip_rescale=rescale),
        upsample=functools.partial(layerspp.Upsample, with_conv=m.resamp_with_conv, **resample),
        downsample=functools.partial(layerspp.Downsample, with_conv=m.resamp_with_conv, **resample),
        pyramid_upsample=functools.partial(layerspp.Upsample, with_conv=True, **resample),
        pyramid_downsample=functools.partial(layerspp.Downsample, with_conv=True, **resample),
        combiner=functools.partial(layerspp.Combine, method=self.combine_method))

  # ----- construction (order = score_sde_pytorch's `all_modules` order) -----
  def build_embedding(self, modules: list, fourier_scale: float):
    """[GaussianFourierProjection], [Dense(embed, 4nf), Dense(4nf, 4nf)]."""
    embed_dim = self.nf
    if self.embedding_type == 'fourier':
      modules.append(layerspp.GaussianFourierProjection(embedding_size=self.nf, scale=fourier_scale))
      embed_dim = 2 * self.nf
    if self.conditional:
      modules += [dense(embed_dim, 4 * self.nf), dense(4 * self.nf, 4 * self.nf)]

  def build_encoder(self, modules: list, mk, channels: int) -> list:
    """Input conv, then per level: res blocks (+ attention), downsampling and the input
    pyramid. Returns the channel counts of the skip connections."""
    nf, in_ch, pyramid_ch = self.nf, self.nf, channels
    modules.append(conv3x3(channels, nf))
    hs_c = [nf]
    for i_level, mult in enumerate(self.ch_mult):
      for _ in range(self.num_res_blocks):
        modules.append(mk.resblock(in_ch=in_ch, out_ch=nf * mult))
        in_ch = nf * mult
        if self.attn_at_level[i_level]:
          modules.append(mk.attn(channels=in_ch))
        hs_c.append(in_ch)
      if i_level == self.num_resolutions - 1:
        continue
      if self.resblock_type == 'ddpm':
        modules.append(mk.downsample(in_ch=in_ch))
      else:
        modules.append(mk.resblock(down=True, in_ch=in_ch))
      if self.progressive_input == 'input_skip':
        modules.append(mk.combiner(dim1=pyramid_ch, dim2=in_ch))
        in_ch = 2 * in_ch if self.combine_method == 'cat' else in_ch
      elif self.progressive_input == 'residual':
        modules.append(mk.pyramid_downsample(in_ch=pyramid_ch, out_ch=in_ch))
        pyramid_ch = in_ch
      hs_c.append(in_ch)
    return hs_c

  def build_middle(self, modules: list, mk, in_ch: int) -> int:
    """ResBlock, attention, ResBlock at the lowest resolution."""
    modules += [mk.resblock(in_ch=in_ch), mk.attn(channels=in_ch), mk.resblock(in_ch=in_ch)]
    return in_ch

  def build_decoder(self, modules: list, mk, hs_c: list, in_ch: int, channels: int,
                    init_scale: float):
    """Per level (top-down): res blocks on [h, skip], attention, output pyramid, upsampling;
    then GroupNorm + output conv (unless the output pyramid is the output)."""
    pyramid_ch = 0
    for i_level in reversed(range(self.num_resolutions)):
      out_ch = self.nf * self.ch_mult[i_level]
      for _ in range(self.num_res_blocks + 1):
        modules.append(mk.resblock(in_ch=in_ch + hs_c.pop(), out_ch=out_ch))
        in_ch = out_ch
      if self.attn_at_level[i_level]:
        modules.append(mk.attn(channels=in_ch))
      if self.progressive != 'none':
        top = i_level == self.num_resolutions - 1
        if self.progressive == 'output_skip':
          modules += [group_norm(in_ch), conv3x3(in_ch, channels, init_scale=init_scale)]
          pyramid_ch = channels
        elif top:
          modules += [group_norm(in_ch), conv3x3(in_ch, in_ch, bias=True)]
          pyramid_ch = in_ch
        else:
          modules.append(mk.pyramid_upsample(in_ch=pyramid_ch, out_ch=in_ch))
          pyramid_ch = in_ch
      if i_level != 0:
        if self.resblock_type == 'ddpm':
          modules.append(mk.upsample(in_ch=in_ch))
        else:
          modules.append(mk.resblock(in_ch=in_ch, up=True))
    assert not hs_c, 'unused skip connections'
    if self.progressive != 'output_skip':
      modules += [group_norm(in_ch), conv3x3(in_ch, channels, init_scale=init_scale)]

  # ----- forward -----
  def forward(self, x: torch.Tensor, time_cond: torch.Tensor,
              y: torch.Tensor | None = None) -> torch.Tensor:
    """`x [B, C, H, W]`, `time_cond [B]`, optional classes `y [B]` -> `[B, C, H, W]`."""
    mods = iter(self.all_modules)
    temb = self._embed(mods, time_cond, y)
    if not self.centered:
      x = 2 * x - 1.  # data in [0, 1] -> [-1, 1]
    hs = self._encode(mods, x, temb)
    h = next(mods)(hs[-1], temb)
    h = next(mods)(h)
    h = next(mods)(h, temb)
    h = self._decode(mods, h, hs, temb)
    assert next(mods, None) is None, 'not every module of all_modules was used'
    if self.scale_by_sigma:
      sigmas = time_cond if self.embedding_type == 'fourier' else self.sigmas[time_cond.long()]
      h = h / sigmas.reshape(-1, *([1] * (h.ndim - 1))).to(h.dtype)
    return h

  def _embed(self, mods, time_cond: torch.Tensor, y: torch.Tensor | None):
    """`[B]` -> time (+ class) embedding `[B, 4 nf]`, or None when unconditional."""
    if self.embedding_type == 'fourier':
      temb = next(mods)(torch.log(time_cond))
    else:
      temb = get_timestep_embedding(time_cond, self.nf)
    if self.conditional:
      temb = next(mods)(temb)
      temb = next(mods)(self.act(temb))
    else:
      temb = None
    if self.label_emb is not None:
      emb = class_embedding(self.label_emb, y, time_cond.shape[0], time_cond.device)
      temb = emb if temb is None else temb + emb
    return temb

  def _encode(self, mods, x: torch.Tensor, temb) -> list:
    input_pyramid = x if self.progressive_input != 'none' else None
    hs = [next(mods)(x)]
    for i_level in range(self.num_resolutions):
      for _ in range(self.num_res_blocks):
        h = next(mods)(hs[-1], temb)
        if self.attn_at_level[i_level]:
          h = next(mods)(h)
        hs.append(h)
      if i_level == self.num_resolutions - 1:
        continue
      down = next(mods)
      h = down(hs[-1]) if self.resblock_type == 'ddpm' else down(hs[-1], temb)
      if self.progressive_input == 'input_skip':
        input_pyramid = self.pyramid_downsample(input_pyramid)
        h = next(mods)(input_pyramid, h)
      elif self.progressive_input == 'residual':
        input_pyramid = residual_sum(next(mods)(input_pyramid), h, self.skip_rescale)
        h = input_pyramid
      hs.append(h)
    return hs

  def _decode(self, mods, h: torch.Tensor, hs: list, temb) -> torch.Tensor:
    pyramid = None
    for i_level in reversed(range(self.num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
      if self.attn_at_level[i_level]:
        h = next(mods)(h)
      if self.progressive != 'none':
        h, pyramid = self._output_pyramid(mods, h, pyramid, i_level == self.num_resolutions - 1)
      if i_level != 0:
        up = next(mods)
        h = up(h) if self.resblock_type == 'ddpm' else up(h, temb)
    assert not hs, 'unused skip connections'
    if self.progressive == 'output_skip':
      return pyramid
    norm, conv = next(mods), next(mods)
    return conv(self.act(norm(h)))

  def _output_pyramid(self, mods, h: torch.Tensor, pyramid, top: bool):
    """One level of the output pyramid (StyleGAN2 'output skip' / 'residual')."""
    if self.progressive == 'residual' and not top:
      pyramid = residual_sum(next(mods)(pyramid), h, self.skip_rescale)
      return pyramid, pyramid
    norm, conv = next(mods), next(mods)
    branch = conv(self.act(norm(h)))
    if top:
      return h, branch
    return h, self.pyramid_upsample(pyramid) + branch
