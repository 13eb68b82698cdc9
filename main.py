"""Command line: `python main.py --mode MODE --config CFG --workdir DIR [--config.a.b=v ...]`.

Modes: train, train_classifier, sample, likelihood, eval, inpaint, colorize. Several GPUs: the same under torchrun.

Only parses flags and dispatches to run_lib. Errors in the user's input (`UserError`,
including a bad config file, an unknown config key or an out-of-range value) are printed as
one line with a non-zero exit status; any other exception is a bug and keeps its traceback.
"""
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

import run_lib
from score_sde.errors import ConfigError, UserError, one_line

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory (checkpoints, logs, samples).')
flags.DEFINE_string('solver', None, 'Sampler for sample/inpaint/colorize (default: config.sampling.method).')
flags.DEFINE_string('checkpoint', '', 'Checkpoint file for sample/likelihood/inpaint/colorize '
                    '(default: newest).')
flags.mark_flags_as_required(['config', 'workdir'])

MODES = {
    'train': lambda cfg, wd: run_lib.train(cfg, wd),
    'train_classifier': lambda cfg, wd: run_lib.train(cfg, wd, task='classifier'),
    'sample': lambda cfg, wd: run_lib.sample(cfg, wd, FLAGS.solver, FLAGS.checkpoint),
    'likelihood': lambda cfg, wd: run_lib.likelihood(cfg, wd, FLAGS.checkpoint),
    'eval': lambda cfg, wd: run_lib.evaluate(cfg, wd, FLAGS.solver, FLAGS.checkpoint),
    'inpaint': lambda cfg, wd: run_lib.inverse_problem(cfg, wd, 'inpaint', FLAGS.solver, FLAGS.checkpoint),
    'colorize': lambda cfg, wd: run_lib.inverse_problem(cfg, wd, 'colorize', FLAGS.solver, FLAGS.checkpoint),
}
flags.DEFINE_enum('mode', 'train', list(MODES), 'What to run.')


def _config_path(argv) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def parse_flags(argv):
  """absl flag parsing with the config file's and the overrides' problems as ConfigErrors."""
  from configs.default import get_default_config
  from score_sde.config_check import check_override_keys
  path = _config_path(argv)
  if path is not None and not os.path.isfile(path.split(':', 1)[0]):
    raise ConfigError(f'config file not found: {path}')
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


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  run_lib.check_config(FLAGS.config)
  MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)


def _fail(e: UserError):
  print(f'error: {one_line(e)}', file=sys.stderr)
  sys.exit(e.exit_code)


def _parse_or_fail(argv):
  try:
    return parse_flags(argv)
  except UserError as e:
    _fail(e)


def run():
  """Entry point: user errors as one line, bugs with their traceback."""
  try:
    app.run(main, flags_parser=_parse_or_fail)
  except UserError as e:
    _fail(e)
  except KeyboardInterrupt:
    print('error: interrupted (Ctrl-C)', file=sys.stderr)
    sys.exit(130)


if __name__ == '__main__':
  run()
