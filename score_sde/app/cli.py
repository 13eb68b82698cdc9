"""Command line: `score-sde --mode MODE --config CONFIG [--workdir DIR] [--config.KEY=VALUE ...]`,
the same as `python -m score_sde ...` and, in a checkout, `python main.py ...`. Several GPUs:
the same under torchrun.

Only parses flags and dispatches to score_sde.app.run_lib. Errors in the user's input (`UserError`,
including a bad config file, an unknown config key or an out-of-range value) are printed as
one line with a non-zero exit status; any other exception is a bug and keeps its traceback.
`--help` is written here without importing torch (a fraction of a second).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import textwrap

from absl import app, flags
from ml_collections import config_flags

from score_sde.errors import ConfigError, UserError, one_line

# mode: (one line for --help, the flags it reads besides --config / --workdir, needs --workdir)
MODE_INFO = {
    'train': ('train the score model in WORKDIR, resuming from its newest checkpoint', (), True),
    'train_classifier': ('train the noisy classifier of classifier guidance in WORKDIR/classifier',
                         (), True),
    'sample': ('draw sampling.num_samples: a PNG grid and an .npz in WORKDIR/samples',
               ('solver', 'checkpoint', 'pretrained'), True),
    'likelihood': ('bits/dim of the test split (PF-ODE and / or DDPM bound): WORKDIR/likelihood.json',
                   ('checkpoint',), True),
    'eval': ('FID / IS / KID (2-D toys: sliced W2) and bits/dim of each checkpoint: WORKDIR/eval',
             ('solver', 'checkpoint'), True),
    'inpaint': ('fill the masked pixels of test images (inverse.*): WORKDIR/samples',
                ('solver', 'checkpoint'), True),
    'colorize': ('colour grey versions of test images (inverse.*): WORKDIR/samples',
                 ('solver', 'checkpoint'), True),
    'interpolate': ('decode a latent-space path between two test images (PF-ODE): a PNG row in '
                    'WORKDIR/samples', ('checkpoint',), True),
    'config': ('print the resolved config, one line per key with what it means (* = changed)',
               (), False),
}


def _modes_reading(flag: str) -> str:
  return ', '.join(m for m, (_, used, _) in MODE_INFO.items() if flag in used)


FLAG_HELP = {
    'mode': 'what to run (--help describes each mode).',
    'config': 'a config file (FILE.py, or FILE.py:ARG to call get_config(ARG)), or the name of a '
              'packaged config, e.g. digits, toy_gmm, vp_cifar.',
    'workdir': 'the run\'s folder: checkpoints, logs, samples (every mode but config).',
    'solver': f'sampler for {_modes_reading("solver")} (default: config.sampling.method; '
              'for eval config.eval.solver first).',
    'checkpoint': f'checkpoint file for {_modes_reading("checkpoint")} (default: the newest in '
                  'WORKDIR; eval: those in [eval.begin_ckpt, eval.end_ckpt]).',
    'pretrained': 'weights made elsewhere for sample: a diffusers folder (DDPM, NCSN++ VE), one of '
                  'our .safetensors files, or a checkpoint; it sets the network, SDE and data '
                  'shape (and, without --config, the sampler).',
    'config_format': 'auto (default: score_sde_pytorch config files are detected), ours or ssp '
                     '(a score_sde_pytorch config file, translated; its unused keys are listed).',
}

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, FLAG_HELP['config'], lock_config=True)
flags.DEFINE_string('workdir', None, FLAG_HELP['workdir'])
flags.DEFINE_string('solver', None, FLAG_HELP['solver'])
flags.DEFINE_string('checkpoint', '', FLAG_HELP['checkpoint'])
flags.DEFINE_string('pretrained', '', FLAG_HELP['pretrained'])
flags.DEFINE_enum('config_format', 'auto', ['auto', 'ours', 'ssp'], FLAG_HELP['config_format'])
flags.DEFINE_enum('mode', 'train', list(MODE_INFO), FLAG_HELP['mode'])
flags.mark_flags_as_required(['config'])


def _lib():
  """score_sde.app.run_lib, imported when a mode runs (it pulls in torch; --help does not)."""
  return importlib.import_module('score_sde.app.run_lib')


def _print_config(cfg, wd) -> None:
  del wd  # --mode config needs no workdir
  from score_sde.app import config_doc
  from score_sde.configs.default import get_default_config
  name = FLAGS['config'].config_filename
  print(config_doc.describe(cfg, get_default_config(), title=f'{name} with the --config.* flags '
                            '(* = differs from configs/default.py)'))


MODES = {
    'train': lambda cfg, wd: _lib().train(cfg, wd),
    'train_classifier': lambda cfg, wd: _lib().train(cfg, wd, task='classifier'),
    'sample': lambda cfg, wd: _lib().sample(cfg, wd, FLAGS.solver, FLAGS.checkpoint),
    'likelihood': lambda cfg, wd: _lib().likelihood(cfg, wd, FLAGS.checkpoint),
    'eval': lambda cfg, wd: _lib().evaluate(cfg, wd, FLAGS.solver, FLAGS.checkpoint),
    'inpaint': lambda cfg, wd: _lib().inverse_problem(cfg, wd, 'inpaint', FLAGS.solver, FLAGS.checkpoint),
    'colorize': lambda cfg, wd: _lib().inverse_problem(cfg, wd, 'colorize', FLAGS.solver, FLAGS.checkpoint),
    'interpolate': lambda cfg, wd: _lib().interpolate(cfg, wd, FLAGS.checkpoint),
    'config': _print_config,
}


def configs_dir() -> str:
  """The folder of the packaged configs (configs/ in a checkout, score_sde/configs installed)."""
  import score_sde.configs
  return list(score_sde.configs.__path__)[0]


def packaged_configs() -> list[str]:
  """Names that --config accepts without a path: the config files shipped with the package."""
  return sorted(f[:-3] for f in os.listdir(configs_dir())
                if f.endswith('.py') and not f.startswith('_') and f != 'default.py')


def resolve_config(value: str) -> str:
  """A --config value as config_flags wants it: `FILE[:ARG]` as given when FILE exists, else a
  packaged config's name `NAME[:ARG]` (`vp_cifar`, `vp_cifar.py`) as that file's path."""
  name, sep, arg = value.partition(':')
  if os.path.isfile(name):
    return value
  stem = name[:-3] if name.endswith('.py') else name
  if stem in packaged_configs():
    return os.path.join(configs_dir(), stem + '.py') + sep + arg
  raise ConfigError(f'config file not found: {value} (give a file, or a packaged config: '
                    f"{', '.join(packaged_configs())})")


def _with_config_resolved(argv: list[str]) -> tuple[list[str], str | None]:
  """argv with the --config value resolved (resolve_config), and that value."""
  argv = list(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      path = resolve_config(arg.split('=', 1)[1])
      argv[i] = '--config=' + path
      return argv, path
    if arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = resolve_config(argv[i + 1])
      return argv, argv[i + 1]
  return argv, None


def parse_flags(argv):
  """absl flag parsing with the config file's and the overrides' problems as ConfigErrors."""
  from score_sde.app.config_check import check_override_keys
  from score_sde.configs.default import get_default_config
  from score_sde.interop import pretrained, ssp_config
  argv, path = _with_config_resolved(pretrained.with_default_config(argv))
  argv = ssp_config.redirect_argv(argv, path)
  check_override_keys(argv, get_default_config())
  try:
    return FLAGS(argv)
  except SyntaxError as e:
    raise ConfigError(f'config file {path} has a syntax error at line {e.lineno}: {e.msg}') from None
  except flags.Error as e:
    text = str(e)
    if 'Error whilst parsing config file' in text:  # an exception inside get_config()
      last = [l for l in text.strip().splitlines() if l.strip()][-1]
      raise ConfigError(f'config file {path} failed to load: {one_line(last)}') from None
    raise ConfigError(one_line(text)) from None
  except Exception as e:  # raised by the config file itself (a bad import, a misspelt key, ...)
    if not path or not _raised_in(e, path.split(':', 1)[0]):
      raise
    raise ConfigError(f'config file {path} failed to load: {_config_error_text(e)}') from None


def _raised_in(error: BaseException, path: str) -> bool:
  """Whether `error`'s traceback passes through the file `path`."""
  tb, target = error.__traceback__, os.path.abspath(path)
  while tb is not None:
    if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
      return True
    tb = tb.tb_next
  return False


def _config_error_text(e: Exception) -> str:
  """`Type: message` of an error in a config file, with a hint for the usual ones."""
  text = one_line(e)
  if ' Other fields present' in text:  # a misspelt key of a locked ConfigDict
    text = text.split(' Other fields present')[0].strip('\'"')
  if isinstance(e, ImportError) and (e.name or '').split('.')[0] == 'configs':
    text += ' (import the packaged configs as score_sde.configs.<name>)'
  return f'{type(e).__name__}: {text}'


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  mode = FLAGS.mode
  if MODE_INFO.get(mode, ('', (), True))[2] and not FLAGS.workdir:
    raise UserError(f'--mode {mode} needs --workdir DIR (the folder of its checkpoints, logs and '
                    'samples)')
  if FLAGS.pretrained:  # the file's network / SDE into FLAGS.config; loaded as the checkpoint
    from score_sde.interop import pretrained
    pretrained.configure_flags(FLAGS, mode)
  _lib().check_config(FLAGS.config)
  if mode != 'config':
    from score_sde.runtime.device import configure_threads
    configure_threads(FLAGS.config.runtime)
  MODES[mode](FLAGS.config, FLAGS.workdir)


def _fail(e: UserError):
  print(f'error: {one_line(e)}', file=sys.stderr)
  sys.exit(e.exit_code)


def _parse_or_fail(argv):
  try:
    return parse_flags(argv)
  except UserError as e:
    _fail(e)


def run(argv: list[str] | None = None):
  """Entry point (`score-sde`, `python -m score_sde`, main.py): --help / -h written here; user
  errors as one line, bugs with their traceback."""
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch loads OpenMP (runtime.configure_threads)
  if _wants_help(argv[1:]):
    print(help_text(_prog(argv[0])))
    sys.exit(0)
  try:
    app.run(main, argv=argv, flags_parser=_parse_or_fail)
  except UserError as e:
    _fail(e)
  except KeyboardInterrupt:
    print('error: interrupted (Ctrl-C)', file=sys.stderr)
    sys.exit(130)
  except BrokenPipeError:  # `score-sde --mode config ... | head`: the reader stopped early
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


def _wants_help(args: list[str]) -> bool:
  """-h / --help / --helpshort / -? before any `--` (absl's --helpfull lists every flag)."""
  args = args[:args.index('--')] if '--' in args else args
  return any(a in ('-h', '--help', '-help', '--helpshort', '-?') for a in args)


def _prog(argv0: str) -> str:
  """How this command was started, for the usage line."""
  base = os.path.basename(argv0)
  if base == '__main__.py':
    return 'python -m score_sde'
  return f'python {argv0}' if base.endswith('.py') else (base or 'score-sde')


def help_text(prog: str = 'score-sde') -> str:
  """--help: usage, the modes with one line each, the common flags and examples."""
  pad = max(map(len, MODE_INFO)) + 2
  modes = [f'  {m.ljust(pad)}{line}' for m, (line, _, _) in MODE_INFO.items()]
  opts = [('--mode MODE', 'one of the modes above (default: train)'),
          ('--config CONFIG', FLAG_HELP['config']),
          ('--config.KEY=VALUE', 'override one config key, e.g. --config.training.n_iters=1000 '
                                 '(--mode config lists every key with what it means)'),
          ('--workdir DIR', FLAG_HELP['workdir']), ('--solver NAME', FLAG_HELP['solver']),
          ('--checkpoint FILE', FLAG_HELP['checkpoint']),
          ('--pretrained PATH', FLAG_HELP['pretrained']),
          ('--config_format F', FLAG_HELP['config_format']),
          ('--helpfull', "every flag, absl's logging flags included")]
  width = max(len(o) for o, _ in opts) + 4
  flag_lines = [textwrap.fill(h, 100, initial_indent=f'  {o.ljust(width - 2)}',
                              subsequent_indent=' ' * width) for o, h in opts]
  names = textwrap.fill(', '.join(packaged_configs()), 100, initial_indent='packaged configs: ',
                        subsequent_indent='  ')
  return '\n'.join([
      f'usage: {prog} --mode MODE --config CONFIG [--workdir DIR] [--config.KEY=VALUE ...]', '',
      'Score-based generative models (Song et al. 2021) in plain PyTorch.', '', 'modes:', *modes,
      '', 'flags:', *flag_lines, '', names, '',
      'examples:',
      f'  {prog} --mode train --config digits --workdir runs/digits',
      f'  {prog} --mode sample --config digits --workdir runs/digits --solver dpm_solver '
      '--config.sampling.steps=20',
      f'  {prog} --mode config --config digits --config.training.n_iters=500',
      f'  torchrun --nproc_per_node=4 -m score_sde --mode train --config vp_cifar --workdir runs/vp',
      '', 'User errors end the run with one line "error: ..." and exit status 2.'])
