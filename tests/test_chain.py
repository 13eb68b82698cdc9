"""`sde.chain`, the SDE's discrete chain as an object (`score_sde.maths.chain`): DDPM's table for
VP, SMLD's geometric sigmas for VE, none for sub-VP, and the same numbers through the older
names (`discrete_kernel`, `chain_step`)."""
from __future__ import annotations

import numpy as np
import torch

from score_sde.maths.chain import DiscreteChain
from score_sde.sdes import SubVPSDE, VESDE, VPSDE


def test_sub_vp_has_no_chain():
  assert SubVPSDE().chain is None and not SubVPSDE().has_discrete_chain


def test_ddpm_chain_is_the_alphas_cumprod_table():
  sde = VPSDE(N=50)
  chain = sde.chain
  assert isinstance(chain, DiscreteChain) and chain.name == 'ddpm' and chain.N == 50
  betas = np.linspace(0.1 / 50, 20.0 / 50, 50)  # DDPM: beta_i = beta_min/N + i/(N-1) (beta_max - beta_min)/N
  abar = np.cumprod(1 - betas)
  alpha, sigma = chain.kernel(torch.arange(-1, 50))
  np.testing.assert_allclose(alpha.numpy(), np.sqrt(np.r_[1.0, abar]), rtol=1e-12)
  np.testing.assert_allclose(sigma.numpy(), np.sqrt(1 - np.r_[1.0, abar]), rtol=1e-12, atol=1e-15)


def test_smld_chain_is_the_geometric_sigmas():
  sde = VESDE(sigma_min=0.01, sigma_max=50.0, N=40)
  alpha, sigma = sde.chain.kernel(torch.arange(-1, 40))
  want = np.exp(np.linspace(np.log(0.01), np.log(50.0), 40))
  assert sde.chain.name == 'smld' and torch.equal(alpha, torch.ones(41, dtype=torch.float64))
  np.testing.assert_allclose(sigma.numpy(), np.r_[0.0, want], rtol=1e-12)
  # on the chain's own times the geometric sigmas are the continuous sigma(t)
  t = sde.time_of_index(torch.arange(40, dtype=torch.float64))
  np.testing.assert_allclose(sde.marginal_std(t).numpy(), want, rtol=1e-12)


def test_chain_step_is_the_ratio_of_consecutive_kernels():
  for sde in (VPSDE(N=30), VESDE(N=30)):
    i = torch.arange(30)
    a, g2, r = sde.chain.step(i)
    (a_t, s_t), (a_s, s_s) = sde.chain.kernel(i), sde.chain.kernel(i - 1)
    torch.testing.assert_close(a, a_t / a_s, rtol=1e-14, atol=0)
    torch.testing.assert_close(g2, s_t ** 2 - (a_t / a_s) ** 2 * s_s ** 2, rtol=1e-12, atol=1e-15)
    assert r[0] == 0 and torch.all(r[1:] < 1)
    old = sde.chain_step(sde.time_of_index(i.double()))
    for new, same in zip((a, g2, r), old):
      assert torch.equal(new, same)
    assert torch.equal(sde.discrete_kernel(i)[1], sde.chain.kernel(i)[1])
