"""PC and PF-ODE samplers driven by the exact score of Gaussian data reproduce its moments
(Song et al. 2021, Alg. 1-3 and Sec. 4.3)."""
import pytest
import torch

from conftest import assert_moments
from score_sde.maths.analytic import gaussian
from score_sde.sampling import sample
from score_sde.sdes import SubVPSDE, VESDE, VPSDE

DATA = gaussian([1.0, -0.5], [0.25, 1.0])
MEAN, COV = DATA.moments()
SDES = {'vp': VPSDE(), 'subvp': SubVPSDE(), 've': VESDE()}
N_SAMPLES = 3000
CORRECTOR_ONLY_STEPS = {'langevin': 5, 'ald': 20}


def _pairs():
  for sde in SDES:
    for predictor in ('euler_maruyama', 'reverse_diffusion', 'ancestral', 'none'):
      for corrector in ('langevin', 'ald', 'none'):
        if predictor == 'ancestral' and sde == 'subvp':
          continue  # sub-VP has no discrete chain; rejected with a clear error (below)
        if predictor == 'none' and corrector == 'none':
          continue
        if (sde, predictor, corrector) == ('subvp', 'none', 'ald'):
          continue  # ALD alone steps by sub-VP's small std (1 - alpha^2): needs >> 20 steps/level
        yield sde, predictor, corrector


def _run(sde_name, predictor, corrector, steps, seed=0, **kw):
  sde = SDES[sde_name]
  snr = 0.16 if sde_name == 've' else 0.01
  if predictor == 'none':  # corrector-only sampling needs more, larger Langevin steps
    kw.setdefault('n_steps', CORRECTOR_ONLY_STEPS[corrector])
    snr = 0.16 if corrector == 'langevin' else 0.3
  gen = torch.Generator().manual_seed(seed)
  return sample(sde, DATA.score_fn(sde), (N_SAMPLES, 2), 'pc', steps=steps, generator=gen,
                predictor=predictor, corrector=corrector, snr=snr, **kw)


@pytest.mark.parametrize('sde_name,predictor,corrector', list(_pairs()))
def test_pc_reproduces_gaussian_moments(sde_name, predictor, corrector):
  res = _run(sde_name, predictor, corrector, steps=200)
  assert_moments(res.x, MEAN, torch.diag(COV), bias=0.02)
  n_corr = 0 if corrector == 'none' else (CORRECTOR_ONLY_STEPS[corrector] if predictor == 'none' else 1)
  assert res.nfe == 200 * ((predictor != 'none') + n_corr)


@pytest.mark.parametrize('sde_name', list(SDES))
@pytest.mark.parametrize('method', ['dopri5', 'rk45', 'rk4'])
def test_ode_reproduces_gaussian_moments(sde_name, method):
  sde = SDES[sde_name]
  gen = torch.Generator().manual_seed(1)
  res = sample(sde, DATA.score_fn(sde), (N_SAMPLES, 2), 'ode', generator=gen, method=method,
               steps=100, rtol=1e-5, atol=1e-5)
  assert_moments(res.x, MEAN, torch.diag(COV), bias=0.01)
  assert 0 < res.nfe < 2000


def test_ode_is_the_exact_transport_of_the_prior():
  """For Gaussian data the PF-ODE map is affine: x_eps = alpha m + sqrt(alpha^2 s^2 + v) z_T / sd_T."""
  sde = VPSDE()
  x_T = sde.prior_sampling((8, 2), torch.Generator().manual_seed(3)).double()
  res = sample(sde, DATA.score_fn(sde), x_T.shape, 'ode', x_init=x_T, eps=1e-3, denoise=False,
               rtol=1e-9, atol=1e-9)
  t = lambda v: torch.full((8,), v, dtype=torch.float64)
  from score_sde.maths.analytic import kernel
  a_T, v_T = kernel(sde, t(1.0))
  a_e, v_e = kernel(sde, t(1e-3))
  m, s2 = DATA.means[0], DATA.variances[0]
  sd_T, sd_e = torch.sqrt(a_T[:, None] ** 2 * s2 + v_T[:, None]), torch.sqrt(a_e[:, None] ** 2 * s2 + v_e[:, None])
  expected = a_e[:, None] * m + sd_e * (x_T - a_T[:, None] * m) / sd_T
  assert torch.allclose(res.x, expected, atol=1e-6)


def test_images_and_rank_agnostic():
  """The same Gaussian laid out as [B, 1, 1, 2] images gives the same samples."""
  sde = VPSDE()
  x_T = sde.prior_sampling((16, 2), torch.Generator().manual_seed(0))
  flat = sample(sde, DATA.score_fn(sde), x_T.shape, 'pc', steps=50, x_init=x_T,
                generator=torch.Generator().manual_seed(1))
  img = sample(sde, DATA.score_fn(sde), (16, 1, 1, 2), 'pc', steps=50, x_init=x_T.reshape(16, 1, 1, 2),
               generator=torch.Generator().manual_seed(1))
  assert torch.allclose(flat.x, img.x.reshape(16, 2), atol=1e-6)


def test_same_seed_same_samples():
  a = _run('vp', 'reverse_diffusion', 'langevin', steps=20, seed=5).x
  b = _run('vp', 'reverse_diffusion', 'langevin', steps=20, seed=5).x
  c = _run('vp', 'reverse_diffusion', 'langevin', steps=20, seed=6).x
  assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_names_are_one_line_errors():
  sde = VPSDE()
  with pytest.raises(ValueError, match="unknown predictor 'bogus'"):
    sample(sde, DATA.score_fn(sde), (2, 2), 'pc', predictor='bogus')
  with pytest.raises(ValueError, match="unknown corrector 'bogus'"):
    sample(sde, DATA.score_fn(sde), (2, 2), 'pc', corrector='bogus')
  with pytest.raises(ValueError, match="unknown solver 'bogus'"):
    sample(sde, DATA.score_fn(sde), (2, 2), 'bogus')
  with pytest.raises(ValueError, match='unknown option'):
    sample(sde, DATA.score_fn(sde), (2, 2), 'pc', tolerance=3)
  with pytest.raises(ValueError, match='SubVPSDE has none'):
    sample(SubVPSDE(), DATA.score_fn(SubVPSDE()), (2, 2), 'pc', predictor='ancestral')


@pytest.mark.slow
@pytest.mark.parametrize('sde_name,predictor,corrector', list(_pairs()))
def test_pc_full_1000_steps(sde_name, predictor, corrector):
  res = _run(sde_name, predictor, corrector, steps=1000)
  assert_moments(res.x, MEAN, torch.diag(COV))


# PC samples at steps = N, recorded before the discrete chain moved into the SDE
# (VPSDE/SubVPSDE/VESDE with N = 50, N(mu, diag(s^2)) data, 64 samples, seed 3, snr 0.1).
GOLDEN = {
    ('vp', 'reverse_diffusion', 'langevin'): [1.55632746, -0.28116253, -0.51004601, -0.94374388, 1.12932861, -1.20891488],
    ('vp', 'ancestral', 'ald'): [1.43056798, -0.57976073, -0.37819219, -1.29006112, 1.04694986, -1.53040755],
    ('vp', 'euler_maruyama', 'langevin'): [1.56083071, -0.29279560, -0.49676278, -0.94433767, 1.11846864, -1.20657051],
    ('vp', 'reverse_diffusion', 'none'): [1.39964259, 1.12934136, 1.20952022, 1.05028105, 0.65945697, -0.67361909],
    ('subvp', 'reverse_diffusion', 'none'): [1.03742337, 1.35823190, 1.10074973, 0.86037982, 0.85427719, -0.77161348],
    ('ve', 'reverse_diffusion', 'langevin'): [1.15030169, 0.34961021, -0.53596222, -0.52101576, 1.46572471, -0.61132550],
    ('ve', 'ancestral', 'ald'): [0.98797345, 0.07817490, 0.46328893, -0.39048156, 1.07221508, -0.59710532],
    ('ve', 'euler_maruyama', 'langevin'): [1.15229702, 0.12727822, -0.57406747, -0.84029877, 1.51054525, -0.59395081],
}


@pytest.mark.parametrize('key', list(GOLDEN))
def test_pc_at_steps_equal_n_is_unchanged(key):
  """At steps = N the PC sampler runs on the SDE's own chain exactly as before (and as score_sde)."""
  name, predictor, corrector = key
  sde = {'vp': VPSDE, 'subvp': SubVPSDE, 've': VESDE}[name](N=50)
  data = gaussian(mean=[1.0, -0.5], variance=[0.25, 1.0])
  res = sample(sde, data.score_fn(sde), (64, 2), 'pc', predictor=predictor, corrector=corrector,
               snr=0.1, generator=torch.Generator().manual_seed(3))
  torch.testing.assert_close(res.x[:3].flatten(), torch.tensor(GOLDEN[key]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('predictor,corrector', [('reverse_diffusion', 'langevin'), ('ancestral', 'none')])
def test_pc_with_few_steps_on_vp_is_finite_and_converges(predictor, corrector):
  """An N-step DDPM table with N < beta_max has beta_i > 1 (it gave NaN below 20 steps); with
  fewer steps than the SDE's N, PC takes the exact Gaussian step over each grid interval:
  finite at 5 and 10 steps, and first-order convergent (variance error 10 steps > 50 steps)."""
  sde = VPSDE()
  data = gaussian(mean=[1.0, -0.5], variance=[0.25, 1.0])
  err = {}
  for steps in (5, 10, 50):
    res = sample(sde, data.score_fn(sde), (4000, 2), 'pc', steps=steps, predictor=predictor,
                 corrector=corrector, snr=0.01, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(res.x).all()
    err[steps] = ((res.x.var(0) / torch.tensor([0.25, 1.0])) - 1).abs().max().item()
    if steps == 50:
      assert (res.x.mean(0) - torch.tensor([1.0, -0.5])).abs().max() < 0.05
  assert err[50] < 0.15 < err[10] < err[5]
