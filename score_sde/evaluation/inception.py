"""The FID Inception-v3 network (TF 'inception-2015-12-05' graph) in plain PyTorch.

This is the variant used by TTUR's FID (Heusel et al. 2017), pytorch-fid and torch-fidelity,
NOT torchvision's ImageNet Inception-v3. Its parameter names and shapes match theirs, so the
standard weights file `pt_inception-2015-12-05-6726825d.pth` loads with `strict=True`. It
differs from torchvision's net in three places, all inherited from the TF graph:
  - 1008 output classes instead of 1000, and no auxiliary classifier;
  - the 3x3 average pools of Mixed_5b-d, Mixed_6b-e and Mixed_7b exclude the zero padding
    from the mean (`count_include_pad=False`, TF's 'SAME' average pool);
  - Mixed_7c pools its branch with a 3x3 *max* pool instead of an average pool.
Input preprocessing (`resize_mode`): 'torch' (the class default) resizes inputs in [0, 1] to
299x299 with PyTorch's bilinear (align_corners=False) and maps them to [-1, 1], as pytorch-fid
does; 'tf1' does what the TF graph of TTUR / TF-GAN does (and torch-fidelity reimplements):
pixel values in [0, 255], TF1's resize_bilinear (score_sde.evaluation.resize), then
(x - 128) / 128. The two give slightly different features and FIDs; published FIDs (score_sde,
DDPM, ADM, ...) come from the TF graph, so `--mode eval` uses 'tf1' (eval.inception_resize).
uint8 inputs `[0, 255]` are taken as they are (exact pixel values for 'tf1').
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from score_sde.evaluation.resize import resize_bilinear_tf1

FID_WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
                   'pt_inception-2015-12-05-6726825d.pth')
NUM_CLASSES = 1008
POOL3_DIM = 2048
RESIZE_MODES = ('tf1', 'torch')


class InceptionOutput(NamedTuple):
  """Outputs of one forward pass.

  pool3: `[B, 2048]` final average-pool features (FID, KID).
  logits: `[B, 1008]` fc output, `pool3 @ W^T + b`.
  logits_unbiased: `[B, 1008]` `pool3 @ W^T` without the bias, which is what the original
    Inception Score code (Salimans et al. 2016) and torch-fidelity's IS use.
  """
  pool3: torch.Tensor
  logits: torch.Tensor
  logits_unbiased: torch.Tensor


class BasicConv2d(nn.Module):
  """conv (no bias) -> BatchNorm (eps 1e-3, as in TF) -> ReLU."""

  def __init__(self, in_ch: int, out_ch: int, kernel_size, stride=1, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
    self.bn = nn.BatchNorm2d(out_ch, eps=1e-3)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool3x3(x: torch.Tensor) -> torch.Tensor:
  """3x3 stride-1 'SAME' average pool that, like TF, does not count the zero padding."""
  return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
  """35x35 block (Mixed_5b/c/d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 -> 224 + pool_features."""

  def __init__(self, in_ch: int, pool_features: int):
    super().__init__()
    self.branch1x1 = BasicConv2d(in_ch, 64, 1)
    self.branch5x5_1 = BasicConv2d(in_ch, 48, 1)
    self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
    self.branch_pool = BasicConv2d(in_ch, pool_features, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    bp = self.branch_pool(_tf_avg_pool3x3(x))
    return torch.cat([self.branch1x1(x), b5, b3, bp], dim=1)


class InceptionB(nn.Module):
  """Grid reduction 35 -> 17 (Mixed_6a): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> 480 + in_ch."""

  def __init__(self, in_ch: int):
    super().__init__()
    self.branch3x3 = BasicConv2d(in_ch, 384, 3, stride=2)
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 64, 1)
    self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionC(nn.Module):
  """17x17 block with factorised 7x7 convolutions (Mixed_6b-e) -> 768 channels."""

  def __init__(self, in_ch: int, channels_7x7: int):
    super().__init__()
    c7 = channels_7x7
    self.branch1x1 = BasicConv2d(in_ch, 192, 1)
    self.branch7x7_1 = BasicConv2d(in_ch, c7, 1)
    self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1 = BasicConv2d(in_ch, c7, 1)
    self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = BasicConv2d(in_ch, 192, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    b7dbl = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
      b7dbl = layer(b7dbl)
    bp = self.branch_pool(_tf_avg_pool3x3(x))
    return torch.cat([self.branch1x1(x), b7, b7dbl, bp], dim=1)


class InceptionD(nn.Module):
  """Grid reduction 17 -> 8 (Mixed_7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> 512 + in_ch."""

  def __init__(self, in_ch: int):
    super().__init__()
    self.branch3x3_1 = BasicConv2d(in_ch, 192, 1)
    self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
    self.branch7x7x3_1 = BasicConv2d(in_ch, 192, 1)
    self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
    self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1)


class InceptionE(nn.Module):
  """8x8 block with split 1x3/3x1 outputs (Mixed_7b/c) -> 2048 channels.

  `pool='avg'` (Mixed_7b) uses the TF average pool; `pool='max'` (Mixed_7c) a 3x3 max pool,
  a quirk of the FID graph that the weights depend on.
  """

  def __init__(self, in_ch: int, pool: str):
    super().__init__()
    if pool not in ('avg', 'max'):
      raise ValueError(f"InceptionE pool must be 'avg' or 'max', got {pool!r}")
    self.pool = pool
    self.branch1x1 = BasicConv2d(in_ch, 320, 1)
    self.branch3x3_1 = BasicConv2d(in_ch, 384, 1)
    self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1 = BasicConv2d(in_ch, 448, 1)
    self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = BasicConv2d(in_ch, 192, 1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h3 = self.branch3x3_1(x)
    h3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    if self.pool == 'avg':
      pooled = _tf_avg_pool3x3(x)
    else:
      pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return torch.cat([self.branch1x1(x),
                      self.branch3x3_2a(h3), self.branch3x3_2b(h3),
                      self.branch3x3dbl_3a(h3dbl), self.branch3x3dbl_3b(h3dbl),
                      self.branch_pool(pooled)], dim=1)


class FIDInceptionV3(nn.Module):
  """Inception-v3 of the FID reference implementation; `forward` gives pool3 and logits.

  Args:
    resize_input: bilinearly resize inputs to 299x299 first (what FID numbers assume).
    normalize_input: map inputs from [0, 1] to the [-1, 1] range the weights expect.
    resize_mode: 'torch' (pytorch-fid's preprocessing) or 'tf1' (the TF graph's; see the module
      docstring).
  """
  takes_uint8 = True  # compute_activations passes uint8 batches through unconverted

  def __init__(self, resize_input: bool = True, normalize_input: bool = True,
               resize_mode: str = 'torch'):
    super().__init__()
    if resize_mode not in RESIZE_MODES:
      raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    self.resize_input, self.normalize_input = resize_input, normalize_input
    self.resize_mode = resize_mode
    self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
    self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
    self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
    self.Mixed_5b = InceptionA(192, pool_features=32)
    self.Mixed_5c = InceptionA(256, pool_features=64)
    self.Mixed_5d = InceptionA(288, pool_features=64)
    self.Mixed_6a = InceptionB(288)
    self.Mixed_6b = InceptionC(768, channels_7x7=128)
    self.Mixed_6c = InceptionC(768, channels_7x7=160)
    self.Mixed_6d = InceptionC(768, channels_7x7=160)
    self.Mixed_6e = InceptionC(768, channels_7x7=192)
    self.Mixed_7a = InceptionD(768)
    self.Mixed_7b = InceptionE(1280, pool='avg')
    self.Mixed_7c = InceptionE(2048, pool='max')
    self.fc = nn.Linear(POOL3_DIM, NUM_CLASSES)

  def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (or uint8) -> the resized, normalised network input."""
    if self.resize_mode == 'tf1':
      x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0
      if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
      if self.resize_input:
        x = resize_bilinear_tf1(x, (299, 299))
      return ((x - 128.0) / 128.0 if self.normalize_input else x / 255.0).to(self.fc.weight.dtype)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    x = x.to(self.fc.weight.dtype)
    if x.shape[1] == 1:
      x = x.expand(-1, 3, -1, -1)
    if self.resize_input:
      x = F.interpolate(x, size=(299, 299), mode='bilinear', align_corners=False)
    return 2.0 * x - 1.0 if self.normalize_input else x

  def forward(self, images: torch.Tensor) -> InceptionOutput:
    """images `[B, 3 or 1, H, W]` in [0, 1] or uint8 (grey is repeated to RGB) ->
    `InceptionOutput`."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
      raise ValueError(f'expected images [B, 3 or 1, H, W], got {tuple(images.shape)}')
    x = self._preprocess(images)
    # Stem: 299 -> 149 -> 147 -> 147 -> maxpool 73 -> 73 -> 71 -> maxpool 35.
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d,   # 35x35
                  self.Mixed_6a, self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,  # 17x17
                  self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):  # 8x8
      x = block(x)
    pool3 = x.mean(dim=(2, 3))  # global average pool, [B, 2048]
    logits_unbiased = pool3 @ self.fc.weight.T
    return InceptionOutput(pool3, logits_unbiased + self.fc.bias, logits_unbiased)


def _one_line(err: Exception) -> str:
  """The informative line of an exception; for weights_only failures, the unpickler's reason."""
  text = str(err)
  if 'WeightsUnpickler error:' in text:
    text = text.split('WeightsUnpickler error:', 1)[1]
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return f'{type(err).__name__}: {lines[0]}' if lines else type(err).__name__


def _first_mismatch(model: nn.Module, state_dict: dict) -> str:
  """Describe the first missing / unexpected key or shape mismatch between model and file."""
  expected = model.state_dict()
  for key in expected:
    if key not in state_dict and not key.endswith('num_batches_tracked'):
      return f"missing key '{key}'"
  for key in state_dict:
    if key not in expected:
      return f"unexpected key '{key}'"
  for key, value in state_dict.items():
    shape = tuple(getattr(value, 'shape', ()))
    if shape != tuple(expected[key].shape):
      return f"shape mismatch for '{key}': file {shape} vs model {tuple(expected[key].shape)}"
  return 'unknown mismatch'


def load_inception(path: str | os.PathLike | None, device: str | torch.device = 'cpu',
                   resize_mode: str = 'torch') -> FIDInceptionV3:
  """Build `FIDInceptionV3(resize_mode=...)`, load the FID weights from a local `path`
  (strict), eval mode.

  Never downloads. Raises FileNotFoundError (with the download URL) when `path` is empty or
  missing, and a one-line ValueError when the file cannot be read or does not match the net.
  """
  if not path or not os.path.isfile(path):
    raise FileNotFoundError(
        f'FID Inception weights not found at {str(path or "")!r}: download {FID_WEIGHTS_URL} '
        'and set --config.eval.inception_path=/path/to/it')
  try:
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as err:  # unpickling / zip / weights_only errors: report on one line
    raise ValueError(f'cannot read Inception weights {path} with torch.load(weights_only=True): '
                     f'{_one_line(err)}') from None
  if not isinstance(state_dict, dict):
    raise ValueError(f'Inception weights {path} hold a {type(state_dict).__name__}, '
                     'not a state dict')
  model = FIDInceptionV3(resize_mode=resize_mode)
  try:
    model.load_state_dict(state_dict, strict=True)
  except RuntimeError:
    raise ValueError(f'Inception weights {path} do not fit the FID Inception-v3: '
                     f'{_first_mismatch(model, state_dict)}') from None
  model.requires_grad_(False)
  return model.eval().to(device)
