"""The model a sampling or evaluation mode runs: the EMA weights of one of our checkpoints, a
score_sde_pytorch checkpoint, or (`--pretrained`) a diffusers folder or .safetensors file,
refused when its weights are not finite."""
from __future__ import annotations

from score_sde.app.loading import load_checkpoint
from score_sde.errors import UserError
from score_sde.files import checkpoint as ckpt
from score_sde.files.workdir import ckpt_dir, last_good_checkpoint, latest_checkpoint
from score_sde.interop import pretrained
from score_sde.runtime.device import get_device


def load_eval_model(config, workdir: str, checkpoint: str = ''):
  """The EMA model of `checkpoint` (default: the workdir's newest) on the configured device."""
  if not checkpoint:
    found = latest_checkpoint(workdir)
    if found is None:
      raise UserError(f'no checkpoint in {ckpt_dir(workdir)}; train first (--mode train)')
    checkpoint = found[1]
  try:
    if pretrained.is_pretrained(checkpoint):
      model = pretrained.load(checkpoint, config, device=get_device(config.runtime))
    else:
      model = load_checkpoint(checkpoint, config, device=get_device(config.runtime))
  except (ckpt.CheckpointError, FileNotFoundError) as e:
    raise UserError(str(e)) from None
  bad = ckpt.first_non_finite(model.state_dict())
  if bad is not None:  # it would only sample NaN
    good = last_good_checkpoint(workdir)
    other = f'; last good checkpoint: {good} (pass it with --checkpoint)' if good else ''
    raise ckpt.CheckpointError(f"checkpoint {checkpoint} has non-finite EMA weights ('{bad}'), "
                               f'so every sample would be NaN{other}')
  return model, checkpoint
