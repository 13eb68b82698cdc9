"""Training objectives built on the variational bound (Nichol & Dhariwal 2021, "Improved
DDPM", Sec. 3.1-3.3), on the full discrete chain of the SDE:

  - 'hybrid': L_hybrid = L_simple + lambda L_vlb (their Eq. 16, lambda = 0.001), where the L_vlb
    term sees the mean with a stop-gradient, so it trains only the learned variance;
  - 'vlb':    L_vlb alone (mean and variance), with t importance-sampled with p_t proportional
    to sqrt(E[L_t^2]) from a history of the last 10 values of every L_t, uniform until each t
    has 10 (their Eq. 18; `TimestepResampler`).

Per sample, L_vlb is estimated by N L_t at the drawn t (in bits, summed over the data
dimensions, or averaged with training.reduce_mean, like the L_simple term it is added to).
"""
from __future__ import annotations

import math

import torch

from score_sde.maths import conventions as cv
from score_sde.maths.chain_posterior import ChainTable
from score_sde.training.losses import LossOutput, draw_noise, uniform_index
from score_sde.maths.sdes import SDE
from score_sde.maths.utils import noisy
from score_sde.maths.vlb import step_nats

VLB_LOSSES = ('hybrid', 'vlb')


class TimestepResampler:
  """IDDPM's loss-second-moment sampler of the chain position t in 0..n-1.

  `draw(u)` maps u `[B]` ~ U(0, 1) to t (long `[B]`) and the weight 1 / (n p_t) that keeps
  the estimate unbiased; `update(t, losses)` records the L_t values of a step (all ranks');
  the history is part of the training state (`state_dict`), so a resumed run draws the same t.
  """

  def __init__(self, n: int, history: int = 10, uniform_prob: float = 1e-3):
    self.n, self.history, self.uniform_prob = n, history, uniform_prob
    self.values = torch.zeros(n, history, dtype=torch.float64)
    self.counts = torch.zeros(n, dtype=torch.long)

  def probabilities(self) -> torch.Tensor:
    """`[n]` float64: uniform until every t has `history` values, then sqrt(E[L_t^2])-weighted."""
    if (self.counts < self.history).any():
      return torch.full((self.n,), 1.0 / self.n, dtype=torch.float64)
    w = torch.sqrt((self.values ** 2).mean(1))
    w = w / w.sum()
    return w * (1 - self.uniform_prob) + self.uniform_prob / self.n

  def draw(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = self.probabilities().to(u.device)   # a host-to-device copy, no sync
    cdf = torch.cumsum(p, 0)
    t = torch.searchsorted(cdf, u.detach().double().clamp(0, 1 - 1e-12) * cdf[-1]).clamp(max=self.n - 1)
    return t, (1.0 / (self.n * p[t])).float()

  def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
    for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist()):
      if self.counts[ti] == self.history:
        self.values[ti] = torch.roll(self.values[ti], -1)
        self.values[ti, -1] = li
      else:
        self.values[ti, self.counts[ti]] = li
        self.counts[ti] += 1

  def state_dict(self) -> dict:
    return {'values': self.values.clone(), 'counts': self.counts.clone()}

  def load_state_dict(self, state: dict) -> None:
    self.values = state['values'].to(torch.float64).clone()
    self.counts = state['counts'].to(torch.long).clone()


class VLBLoss:
  """IDDPM's objectives on the SDE's discrete chain (Nichol & Dhariwal 2021, Sec. 3.1):
  `loss(model, x0, y=None, generator=None, noise=None) -> LossOutput` for `kind` in VLB_LOSSES.

  `model(x, t, y, with_variance=True) -> (score, v)` (a `ScoreModel`, possibly in DDP) when
  `learn_sigma`, else `model(x, t[, y]) -> score` with the fixed 'small' variance.
  `noise = (u [B], z [B, ...])` as in `score_sde.training.losses`. For 'vlb', t is importance
  sampled by `self.resampler` (a `TimestepResampler`, whose history a checkpoint keeps), fed
  with the output's `.t_index` and `.vlb_terms` (`[B]`, bits); it is None for 'hybrid'.
  """

  def __init__(self, sde: SDE, kind: str, *, learn_sigma: bool, vlb_weight: float = 1e-3,
               reduce_mean: bool = False, data_range=(-1.0, 1.0)):
    if kind not in VLB_LOSSES:
      raise ValueError(f"unknown VLB loss '{kind}'; choose one of: {', '.join(VLB_LOSSES)}")
    if kind == 'hybrid' and not learn_sigma:
      raise ValueError("training.loss='hybrid' trains the learned variance: set model.learn_sigma=True")
    self.kind, self.learn_sigma, self.vlb_weight = kind, learn_sigma, vlb_weight
    self.reduce_mean, self.data_range = reduce_mean, data_range
    self.sde, self.table = sde, ChainTable(sde)
    self.resampler = TimestepResampler(self.table.K) if kind == 'vlb' else None
    self.variance = 'learned' if learn_sigma else 'small'

  def __call__(self, model, x0, y=None, generator=None, noise=None) -> LossOutput:
    sde, table, kind, variance = self.sde, self.table, self.kind, self.variance
    b = x0.shape[0]
    u, z = noise if noise is not None else draw_noise(x0, generator)
    u = u.to(x0.device, torch.float32)
    if self.resampler is not None:
      k, weight = self.resampler.draw(u)
    else:
      k, weight = uniform_index(u, table.K), torch.ones_like(u)
    t = sde.time_of_index(table.on('tau_index', k)[k]).float()
    alpha, sigma = table.kernel(k, x0)
    z = z.to(x0)
    xt = noisy(alpha, sigma, x0, z)
    if self.learn_sigma:
      score, v = model(xt, t, y, with_variance=True)
    else:
      score, v = (model(xt, t) if y is None else model(xt, t, y)), None
    x0_hat = cv.x0_from_score(xt, score, alpha, sigma)
    reduce = (lambda e: e.reshape(b, -1).mean(1)) if self.reduce_mean else (lambda e: e.reshape(b, -1).sum(1))
    dims = x0[0].numel() if self.reduce_mean else 1
    nats = step_nats(table, k, x0, xt, x0_hat.detach() if kind == 'hybrid' else x0_hat,
                     variance, v, self.data_range)
    bits = nats / (dims * math.log(2.0))
    if kind == 'hybrid':
      mse = reduce(torch.square(cv.eps_residual(score, sigma, z)))   # L_simple: ||eps - eps_theta||^2
      per_sample = mse + self.vlb_weight * table.K * bits
    else:
      per_sample = table.K * bits * weight
    return LossOutput(per_sample.mean(), per_sample, t, t_index=k,
                      vlb_terms=bits.detach() if kind == 'vlb' else None)


def get_vlb_loss_fn(sde: SDE, kind: str, **options) -> VLBLoss:
  """`VLBLoss(sde, kind, **options)`."""
  return VLBLoss(sde, kind, **options)


__all__ = ['VLBLoss', 'get_vlb_loss_fn', 'TimestepResampler', 'VLB_LOSSES']
