"""The GPU benchmark scripts run end to end (their CPU smoke mode), so a GPU session only has
to run them."""
from __future__ import annotations

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'benchmarks', name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow  # ~1 min on 2 cores
def test_train_throughput_quick_prints_a_table(capsys):
  _load('train_throughput').main(['--quick', '--configs', 'vp_cifar', '--variants', 'fp32', 'bf16+cl'])
  rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| vp_cifar')]
  assert len(rows) == 2 and all(float(r.split('|')[3]) > 0 for r in rows)


@pytest.mark.slow
def test_sampling_throughput_quick_reports_ms_per_evaluation(capsys):
  _load('sampling_throughput').main(['--quick', '--solvers', 'dpm++ 3M 20', 'pc 1000 (rd+langevin)'])
  out = capsys.readouterr().out
  assert '| dpm++ 3M 20 | fp32 | 21 |' in out and '| dpm++ 3M 20 | bf16+graphs | 21 |' in out
  assert '| pc 1000 (rd+langevin) | fp32 | 2000 |' in out   # timed over 3 steps, counted for 1000
  assert 'ms/evaluation' in out and '| fp16 |' in out
