"""The DDPM U-Net (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", App. B), as in
score_sde_pytorch's `models/ddpm.py` (itself a port of diffusion_tf/models/unet.py).

A PixelCNN++-style U-Net: `num_res_blocks` DDPM residual blocks per resolution, self-attention
at `attn_resolutions`, GroupNorm(32) everywhere, and the sinusoidal time embedding through a
two-layer MLP. Modules sit in one flat `all_modules` ModuleList in the reference's order.

On the up path at an attention resolution, score_sde_pytorch's port has one attention block per
level (after the level's last residual block). Ho et al.'s network (diffusion_tf, and diffusers'
`AttnUpBlock2D`, e.g. google/ddpm-cifar10-32) has one after every residual block there:
`model.attn_every_up_block=True` builds that layout (two more attention blocks at
CIFAR-10's settings); off, the layout is score_sde_pytorch's, unchanged.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from score_sde.maths.conventions import output_channels
from score_sde.maths.sdes import smld_sigmas
from score_sde.models.layers import (AttnBlock, Downsample, ResnetBlockDDPM, Upsample,
                                     class_embedding, ddpm_conv3x3, dense, get_act, get_timestep_embedding)


class DDPM(nn.Module):
  """`net(x [B, C, H, W], labels [B], y=None) -> [B, C, H, W]` (the eps prediction for the DDPM
  loss; divided by `sigmas[labels]` when `scale_by_sigma`).

  `labels` is the time label of the sinusoidal embedding (the integer step for discrete
  training, 999 t for continuous VP). With `model.class_conditional`, `label_emb`
  (num_classes + 1 rows, the last one the null label) is added to the time embedding.
  """

  def __init__(self, m, data):
    """m: the model hyper-parameters (`config.model`); data: `config.data` (image_size,
    num_channels, centered, num_classes)."""
    super().__init__()
    self.act = act = get_act(m.nonlinearity)
    sigmas = smld_sigmas(m.sigma_min, m.sigma_max, m.num_scales)
    self.register_buffer('sigmas', torch.tensor(sigmas))  # float64, as the reference
    self.nf, self.ch_mult = nf, ch_mult = m.nf, tuple(m.ch_mult)
    self.num_res_blocks, self.attn_resolutions = m.num_res_blocks, tuple(m.attn_resolutions)
    self.num_resolutions = len(ch_mult)
    self.all_resolutions = [data.image_size // 2 ** i for i in range(self.num_resolutions)]
    self.attn_at_level = [r in self.attn_resolutions for r in self.all_resolutions]
    self.conditional, self.centered = m.conditional, data.centered
    self.scale_by_sigma = m.scale_by_sigma
    self.attn_every_up_block = bool(m.get('attn_every_up_block', False))
    resblock = functools.partial(ResnetBlockDDPM, act=act, temb_dim=4 * nf, dropout=m.dropout)
    channels = data.num_channels

    modules = [dense(nf, 4 * nf), dense(4 * nf, 4 * nf)] if self.conditional else []
    modules.append(ddpm_conv3x3(channels, nf))
    hs_c, in_ch = [nf], nf
    for i_level, mult in enumerate(ch_mult):  # downsampling path
      for _ in range(self.num_res_blocks):
        modules.append(resblock(in_ch=in_ch, out_ch=nf * mult))
        in_ch = nf * mult
        if self.attn_at_level[i_level]:
          modules.append(AttnBlock(channels=in_ch))
        hs_c.append(in_ch)
      if i_level != self.num_resolutions - 1:
        modules.append(Downsample(channels=in_ch, with_conv=m.resamp_with_conv))
        hs_c.append(in_ch)
    modules += [resblock(in_ch=in_ch), AttnBlock(channels=in_ch), resblock(in_ch=in_ch)]
    for i_level in reversed(range(self.num_resolutions)):  # upsampling path
      for _ in range(self.num_res_blocks + 1):
        modules.append(resblock(in_ch=in_ch + hs_c.pop(), out_ch=nf * ch_mult[i_level]))
        in_ch = nf * ch_mult[i_level]
        if self.attn_at_level[i_level] and self.attn_every_up_block:
          modules.append(AttnBlock(channels=in_ch))
      if self.attn_at_level[i_level] and not self.attn_every_up_block:
        modules.append(AttnBlock(channels=in_ch))
      if i_level != 0:
        modules.append(Upsample(channels=in_ch, with_conv=m.resamp_with_conv))
    assert not hs_c, 'unused skip connections'
    modules.append(nn.GroupNorm(num_channels=in_ch, num_groups=32, eps=1e-6))
    modules.append(ddpm_conv3x3(in_ch, output_channels(data.num_channels, m.learn_sigma), init_scale=0.))
    self.all_modules = nn.ModuleList(modules)
    self.label_emb = None
    if m.class_conditional:
      self.label_emb = nn.Embedding(data.num_classes + 1, 4 * nf)

  def forward(self, x: torch.Tensor, labels: torch.Tensor,
              y: torch.Tensor | None = None) -> torch.Tensor:
    """`x [B, C, H, W]`, `labels [B]`, optional classes `y [B]` -> `[B, C, H, W]`."""
    mods = iter(self.all_modules)
    temb = self._embed(mods, labels, y)
    h = x if self.centered else 2 * x - 1.  # data in [0, 1] -> [-1, 1]
    hs = [next(mods)(h)]
    for i_level in range(self.num_resolutions):
      for _ in range(self.num_res_blocks):
        h = next(mods)(hs[-1], temb)
        if self.attn_at_level[i_level]:
          h = next(mods)(h)
        hs.append(h)
      if i_level != self.num_resolutions - 1:
        hs.append(next(mods)(hs[-1]))
    h = next(mods)(hs[-1], temb)
    h = next(mods)(h)
    h = next(mods)(h, temb)
    for i_level in reversed(range(self.num_resolutions)):
      for _ in range(self.num_res_blocks + 1):
        h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
        if self.attn_at_level[i_level] and self.attn_every_up_block:
          h = next(mods)(h)
      if self.attn_at_level[i_level] and not self.attn_every_up_block:
        h = next(mods)(h)
      if i_level != 0:
        h = next(mods)(h)
    assert not hs, 'unused skip connections'
    norm, conv = next(mods), next(mods)
    h = conv(self.act(norm(h)))
    assert next(mods, None) is None, 'not every module of all_modules was used'
    if self.scale_by_sigma:  # NCSN loss; the DDPM loss scales by sigma itself
      h = h / self.sigmas[labels.long()].reshape(-1, 1, 1, 1).to(h.dtype)
    return h

  def _embed(self, mods, labels: torch.Tensor, y: torch.Tensor | None):
    """`[B]` -> time (+ class) embedding `[B, 4 nf]`, or None when unconditional."""
    temb = None
    if self.conditional:
      temb = next(mods)(get_timestep_embedding(labels, self.nf))
      temb = next(mods)(self.act(temb))
    if self.label_emb is not None:
      emb = class_embedding(self.label_emb, y, labels.shape[0], labels.device)
      temb = emb if temb is None else temb + emb
    return temb
