"""NCSNv2 (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models"):
a RefineNet encoder/decoder with InstanceNorm++ and ELU, *unconditional* on the noise level
(Technique 3: the output is divided by sigma, s(x, sigma) = net(x) / sigma).

Three sizes as in score_sde_pytorch: `NCSNv2` (images < 96 px; registered as `ncsnv2_64`),
`NCSNv2_128` (96-128 px) and `NCSNv2_256` (128-256 px). Attribute names (`begin_conv`,
`normalizer`, `end_conv`, `res1`..., `refine1`...) and registration order match the reference.

Deviations from score_sde_pytorch, which cannot build or run this network as published: its
`ncsn_conv3x3` fails on `bias=False` (RefineNet convs) and pads dilated convs by 1 (issue #48);
here bias-free convs work and dilated convs are padded by their dilation, as in
ermongroup/ncsnv2. Parameter names and shapes are unaffected.
"""
from __future__ import annotations

import torch
from torch import nn

from score_sde.maths.sdes import smld_sigmas
from score_sde.models.layers import get_act
from score_sde.models.normalization import get_normalization
from score_sde.models.refinenet import RefineBlock, ResidualBlock


class NCSNv2(nn.Module):
  """`net(x [B, C, H, W], time_cond [B] int, y=None) -> [B, C, H, W] = refinenet(x) / sigma`.

  `time_cond` is the index into `sigmas` (sigma_max ... sigma_min). There is no time embedding,
  so `model.class_conditional` is not supported.

  `STAGES`: (name, in_mult, out_mult, dilation); each stage is two residual blocks, the first
  one downsampling (except `res1`). `REFINES` (registration order): (name, stage it reads,
  in_mult, out_mult); they run from the deepest stage up.
  """
  STAGES = (('res1', 1, 1, 1), ('res2', 1, 2, 1), ('res3', 2, 2, 2), ('res4', 2, 2, 4))
  REFINES = (('refine1', 'res4', 2, 2), ('refine2', 'res3', 2, 2), ('refine3', 'res2', 2, 1),
             ('refine4', 'res1', 1, 1))

  def __init__(self, m, data):
    """m: the model hyper-parameters (`config.model`); data: `config.data`."""
    super().__init__()
    if m.class_conditional:
      raise ValueError(f'{type(self).__name__} has no time embedding to add a class embedding to; '
                       'class_conditional is not supported')
    self.centered = data.centered
    norm = get_normalization(m.normalization)
    self.nf = nf = m.nf
    self.act = act = get_act(m.nonlinearity)
    sigmas = smld_sigmas(m.sigma_min, m.sigma_max, m.num_scales)
    self.register_buffer('sigmas', torch.tensor(sigmas))  # float64, as the reference
    channels = data.num_channels
    self.begin_conv = nn.Conv2d(channels, nf, 3, stride=1, padding=1)
    self.normalizer = norm(nf)
    self.end_conv = nn.Conv2d(nf, channels, 3, stride=1, padding=1)
    for name, in_mult, out_mult, dilation in self.STAGES:
      down = 'down' if name != 'res1' else None
      adjust = data.image_size == 28 and name == 'res4'  # only used without dilation
      setattr(self, name, nn.ModuleList([
          ResidualBlock(in_mult * nf, out_mult * nf, resample=down, act=act, normalization=norm,
                        adjust_padding=adjust, dilation=dilation),
          ResidualBlock(out_mult * nf, out_mult * nf, resample=None, act=act, normalization=norm,
                        dilation=dilation)]))
    deepest = self.STAGES[-1][0]
    for name, stage, in_mult, out_mult in self.REFINES:
      in_planes = [in_mult * nf] if stage == deepest else [in_mult * nf] * 2
      setattr(self, name, RefineBlock(in_planes, out_mult * nf, act=act, start=stage == deepest,
                                      end=stage == 'res1'))
    self._refine_of = {stage: name for name, stage, _, _ in self.REFINES}

  def forward(self, x: torch.Tensor, time_cond: torch.Tensor,
              y: torch.Tensor | None = None) -> torch.Tensor:
    """`x [B, C, H, W]`, noise indices `time_cond [B]` -> `[B, C, H, W]`."""
    if y is not None:
      raise ValueError(f'{type(self).__name__} is not class conditional')
    h = x if self.centered else 2 * x - 1.  # data in [0, 1] -> [-1, 1]
    h = self.begin_conv(h)
    layers = []
    for name, *_ in self.STAGES:
      for block in getattr(self, name):
        h = block(h)
      layers.append((name, h))
    ref = None
    for name, layer in reversed(layers):
      inputs = [layer] if ref is None else [layer, ref]
      ref = getattr(self, self._refine_of[name])(inputs, layer.shape[2:])
    h = self.end_conv(self.act(self.normalizer(ref)))
    sigmas = self.sigmas[time_cond.long()]
    return h / sigmas.reshape(-1, *([1] * (h.ndim - 1))).to(h.dtype)


class NCSNv2_128(NCSNv2):  # pylint: disable=invalid-name
  """NCSNv2 for 96-128 px images: five stages, widths up to 4 nf."""
  STAGES = (('res1', 1, 1, 1), ('res2', 1, 2, 1), ('res3', 2, 2, 1), ('res4', 2, 4, 2),
            ('res5', 4, 4, 4))
  REFINES = (('refine1', 'res5', 4, 4), ('refine2', 'res4', 4, 2), ('refine3', 'res3', 2, 2),
             ('refine4', 'res2', 2, 1), ('refine5', 'res1', 1, 1))


class NCSNv2_256(NCSNv2):  # pylint: disable=invalid-name
  """NCSNv2 for 128-256 px images: six stages (an extra `res31` / `refine31` pair)."""
  STAGES = (('res1', 1, 1, 1), ('res2', 1, 2, 1), ('res3', 2, 2, 1), ('res31', 2, 2, 1),
            ('res4', 2, 4, 2), ('res5', 4, 4, 4))
  REFINES = (('refine1', 'res5', 4, 4), ('refine2', 'res4', 4, 2), ('refine3', 'res3', 2, 2),
             ('refine31', 'res31', 2, 2), ('refine4', 'res2', 2, 1), ('refine5', 'res1', 1, 1))
