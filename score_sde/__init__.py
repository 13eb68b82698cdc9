"""Score-based generative modelling through SDEs (Song et al. 2021) in plain PyTorch.

`score_sde.load(path)` gives a `Pipeline` (sample, save_grid, log_likelihood, encode, decode,
interpolate) for a workdir or a checkpoint file; see score_sde.app.pipeline. Importing the package
imports no torch: `load` pulls it in when called.
"""


def load(path, config=None, device=None):
  """`score_sde.app.pipeline.load`: a `Pipeline` for a workdir (its newest checkpoint) or a
  checkpoint file, with the config the checkpoint records (or `config`)."""
  from score_sde.app.pipeline import load as _load
  return _load(path, config=config, device=device)


__all__ = ['load']
