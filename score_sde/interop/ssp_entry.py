"""The config file that `--config` is pointed at for a score_sde_pytorch config file
(`ssp_entry.py:THEIR_FILE`, see `score_sde.interop.ssp_config.redirect_argv`): our config,
translated from theirs, with the `--config.KEY=VALUE` overrides applied on top as usual."""
from __future__ import annotations

import copy

from score_sde.interop.ssp_config import cached_translation


def get_config(path: str):
  config = copy.deepcopy(cached_translation(path))
  config.lock()
  return config
