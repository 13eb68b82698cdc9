"""Checkpoints: atomic checksummed writes, both formats, one-line errors for bad files."""
import os

import pytest
import torch

from configs.toy import get_config
from score_sde.files import checkpoint as ckpt
from score_sde.models import ExponentialMovingAverage
from score_sde.app.build import create_model
from score_sde.app.loading import load_checkpoint
from score_sde.app.build import build_sde


def _model():
  config = get_config()
  config.model.hidden, config.model.depth = 16, 1
  torch.manual_seed(0)
  return config, create_model(config, build_sde(config))


def test_round_trip_ours_with_ema(tmp_path):
  config, model = _model()
  ema = ExponentialMovingAverage(model.net.parameters(), decay=0.5)
  with torch.no_grad():
    for p in model.net.parameters():
      p.add_(1.0)
  ema.update(model.net.parameters())
  path = str(tmp_path / 'checkpoint_3.pth')
  ckpt.save_checkpoint(path, {'model': model.net.state_dict(), 'ema': ema.state_dict(), 'step': 3})
  assert os.path.exists(path + '.sha256') and not [f for f in os.listdir(tmp_path) if '.tmp' in f]
  loaded = load_checkpoint(path, config)  # EMA weights by default
  for a, b in zip(loaded.net.parameters(), ema.shadow_params):
    assert torch.equal(a, b)
  raw = load_checkpoint(path, config, use_ema=False)
  for a, b in zip(raw.net.parameters(), model.net.parameters()):
    assert torch.equal(a, b)


def test_reads_score_sde_pytorch_format(tmp_path):
  """{'model','ema','optimizer','step'} with DataParallel's `module.` prefix, no checksum file."""
  config, model = _model()
  ema = ExponentialMovingAverage(model.net.parameters(), decay=0.9999)
  state = {'optimizer': {}, 'model': {'module.' + k: v for k, v in model.net.state_dict().items()},
           'ema': ema.state_dict(), 'step': 7}
  path = str(tmp_path / 'checkpoint_26.pth')
  torch.save(state, path)
  loaded = load_checkpoint(path, config)
  x, t = torch.randn(5, 2), torch.rand(5)
  assert torch.allclose(loaded(x, t), model.eval()(x, t))
  assert ckpt.read_checkpoint(path)['step'] == 7


def test_bad_files_give_one_line_errors(tmp_path):
  config, model = _model()
  path = str(tmp_path / 'checkpoint_1.pth')
  ckpt.save_checkpoint(path, {'model': model.net.state_dict(), 'step': 1})
  with open(path, 'r+b') as f:  # flip a byte: the checksum catches it
    f.seek(100)
    b = f.read(1)
    f.seek(100)
    f.write(bytes([b[0] ^ 0xFF]))
  with pytest.raises(ckpt.CheckpointError, match='SHA-256 does not match'):
    ckpt.read_checkpoint(path)
  junk = str(tmp_path / 'junk.pth')
  with open(junk, 'wb') as f:
    f.write(b'not a checkpoint at all')
  with pytest.raises(ckpt.CheckpointError, match='corrupt or unsafe checkpoint') as e:
    ckpt.read_checkpoint(junk)
  assert '\n' not in str(e.value)
  renamed = dict(model.net.state_dict())
  renamed['bogus.weight'] = renamed.pop('inp.weight')
  other = str(tmp_path / 'checkpoint_2.pth')
  ckpt.save_checkpoint(other, {'model': renamed})
  with pytest.raises(ckpt.CheckpointError, match="missing key 'inp.weight'"):
    load_checkpoint(other, config)
  bad_shape = dict(model.net.state_dict())
  bad_shape['inp.weight'] = torch.zeros(3, 3)
  ckpt.save_checkpoint(other, {'model': bad_shape})
  with pytest.raises(ckpt.CheckpointError, match="'inp.weight' has shape"):
    load_checkpoint(other, config)


class _Evil:
  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_pickled_code_is_refused(tmp_path):
  path = str(tmp_path / 'evil.pth')
  torch.save({'model': {}, 'payload': _Evil()}, path)
  with pytest.raises(ckpt.CheckpointError, match='unsafe'):
    ckpt.read_checkpoint(path)


def test_prune_keeps_newest_and_protected(tmp_path):
  for step in (1, 2, 3, 4, 5):
    ckpt.save_checkpoint(str(tmp_path / f'checkpoint_{step}.pth'), {'model': {}, 'step': step})
  ckpt.prune_checkpoints(str(tmp_path), keep=2, protect=lambda s: s == 2)
  assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [2, 4, 5]
