"""`python -m score_sde.interop COMMAND --config CONFIG --checkpoint FILE --out PATH`:

  export-diffusers     a DDPMPipeline / ScoreSdeVePipeline folder (our DDPM on the discrete VP
                       chain, or NCSN++ VE in its 256-px form)
  export-safetensors   one of our weights-only .safetensors files (config in its metadata)

CONFIG is a config file or a packaged config's name (a score_sde_pytorch config file works too);
the checkpoint's EMA weights are exported unless --no-ema. Errors are one line (exit status 2).
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

from score_sde.errors import UserError, one_line


def load_config(value: str):
  """Our config for `--config` VALUE (FILE[:ARG], a packaged name, or a score_sde_pytorch file)."""
  from score_sde.app.cli import resolve_config
  from score_sde.interop.ssp_config import is_ssp_config, translate_file
  path, _, arg = resolve_config(value).partition(':')
  if is_ssp_config(path):
    return translate_file(path)
  spec = importlib.util.spec_from_file_location('_export_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*([arg] if arg else []))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m score_sde.interop', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('command', choices=('export-diffusers', 'export-safetensors'))
  parser.add_argument('--config', required=True, help='the config the checkpoint was trained with')
  parser.add_argument('--checkpoint', required=True, help='a checkpoint file (ours or score_sde_pytorch)')
  parser.add_argument('--out', required=True, help='the folder (diffusers) or .safetensors file')
  parser.add_argument('--no-ema', action='store_true', help='export the raw weights, not the EMA')
  args = parser.parse_args(argv)
  try:
    from score_sde.app.config_check import validate
    from score_sde.app.loading import load_checkpoint
    config = load_config(args.config)
    validate(config)
    if args.command == 'export-diffusers':
      from score_sde.interop.diffusers_io import export_diffusers
      export_diffusers(args.checkpoint, args.out, config, use_ema=not args.no_ema)
    else:
      from score_sde.interop.safetensors_io import save_safetensors
      save_safetensors(load_checkpoint(args.checkpoint, config, use_ema=not args.no_ema), args.out, config)
  except (UserError, FileNotFoundError) as e:
    print(f'error: {one_line(e)}', file=sys.stderr)
    return getattr(e, 'exit_code', 2)
  print(f'wrote {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
