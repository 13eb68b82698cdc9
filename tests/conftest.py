"""Shared test set-up: CPU threads, the `slow` marker, Monte-Carlo moment checks and the
command-line runner of the end-to-end tests."""
import math
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _main(args) -> dict:
  """Popen / run keywords of `python main.py ARGS` from the repository root on one CPU thread."""
  return dict(args=[sys.executable, os.path.join(ROOT, 'main.py'), *map(str, args)], cwd=ROOT,
              env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1'), text=True)


def start_main(*args) -> subprocess.Popen:
  """`python main.py ARGS` started (stdout/stderr piped)."""
  return subprocess.Popen(stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_main(args))


def run_main(*args, timeout: float = 300) -> subprocess.CompletedProcess:
  """`python main.py ARGS` to completion (a hang fails after `timeout` seconds)."""
  return subprocess.run(capture_output=True, timeout=timeout, **_main(args))


@pytest.fixture(scope='module')
def one_thread():
  """Tiny tensors: one thread avoids contention on the shared CPU (restored afterwards). Use
  with `pytestmark = pytest.mark.usefixtures('one_thread')`."""
  old = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(old)


def pytest_configure(config):
  config.addinivalue_line('markers', 'slow: long-running test (deselect with -m "not slow")')


def assert_moments(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, n_se: float = 4.0,
                   bias: float = 0.0):
  """Sample mean/variance/covariance of x `[n, D]` agree with a diagonal Gaussian's within
  n_se Monte-Carlo standard errors (plus an allowed absolute `bias` for discretisation)."""
  x = x.double()
  n = x.shape[0]
  mean, var = mean.double(), var.double()
  se_mean = torch.sqrt(var / n)
  err_mean = (x.mean(0) - mean).abs()
  assert torch.all(err_mean < n_se * se_mean + bias), f'mean error {err_mean} vs SE {se_mean}'
  se_var = var * math.sqrt(2.0 / (n - 1))
  err_var = (x.var(0) - var).abs()
  assert torch.all(err_var < n_se * se_var + bias), f'variance error {err_var} vs SE {se_var}'
  cov = torch.cov(x.T)
  off = cov - torch.diag(torch.diag(cov))
  se_off = torch.sqrt(torch.outer(var, var) / n)
  assert torch.all(off.abs() < n_se * se_off + bias), f'covariance off-diagonal {off}'
