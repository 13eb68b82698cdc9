"""Bring your own weights and configs, and publish yours.

- score_sde_pytorch config files as they are (`--config their/file.py`): `ssp_config`.
- diffusers folders (DDPM, NCSN++ VE) both ways, without diffusers installed:
  `load_diffusers(folder)` -> ScoreModel, `export_diffusers(model_or_file, folder, config)`.
- safetensors, weights only, for our own models: `save_safetensors(model, path, config)`,
  `load_safetensors(path)` (needs the `safetensors` package).
- `--mode sample --pretrained PATH` on the command line: `pretrained`.

Importing this package imports no torch (the command line parses configs through it).
"""
from __future__ import annotations


def load_diffusers(path, device='cpu', config=None):
  """A ScoreModel from a diffusers pipeline or UNet2DModel folder (see diffusers_io)."""
  from score_sde.interop.diffusers_io import load_diffusers as _load
  return _load(path, device=device, config=config)


def export_diffusers(source, folder, config=None, use_ema=True):
  """Write our DDPM / NCSN++ VE model as a diffusers pipeline folder (see diffusers_io)."""
  from score_sde.interop.diffusers_io import export_diffusers as _export
  return _export(source, folder, config=config, use_ema=use_ema)


def save_safetensors(model, path, config):
  """Write a ScoreModel's weights, config and conventions as safetensors (see safetensors_io)."""
  from score_sde.interop.safetensors_io import save_safetensors as _save
  return _save(model, path, config)


def load_safetensors(path, config=None, device='cpu'):
  """The ScoreModel of one of our safetensors files (see safetensors_io)."""
  from score_sde.interop.safetensors_io import load_safetensors as _load
  return _load(path, config=config, device=device)


def translate_ssp_config(path):
  """Our config for a score_sde_pytorch config file (see ssp_config)."""
  from score_sde.interop.ssp_config import translate_file
  return translate_file(path)


__all__ = ['load_diffusers', 'export_diffusers', 'save_safetensors', 'load_safetensors',
           'translate_ssp_config']
