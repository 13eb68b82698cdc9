"""Command line: `python main.py --mode train|sample|likelihood --config CFG --workdir DIR`.

Only parses flags and dispatches to run_lib; errors in the user's input are printed as one
line (no traceback) with a non-zero exit status.
"""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

import run_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Work directory (checkpoints, logs, samples).')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'likelihood'], 'What to run.')
flags.DEFINE_string('solver', None, 'Sampler for --mode sample (default: config.sampling.method).')
flags.DEFINE_string('checkpoint', '', 'Checkpoint file for sample/likelihood (default: newest).')
flags.mark_flags_as_required(['config', 'workdir'])

MODES = {
    'train': lambda cfg, wd: run_lib.train(cfg, wd),
    'sample': lambda cfg, wd: run_lib.sample(cfg, wd, FLAGS.solver, FLAGS.checkpoint),
    'likelihood': lambda cfg, wd: run_lib.likelihood(cfg, wd, FLAGS.checkpoint),
}


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  try:
    MODES[FLAGS.mode](FLAGS.config, FLAGS.workdir)
  except run_lib.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


def run():
  """Entry point that turns config-file/flag errors into one-line messages."""
  try:
    app.run(main)
  except (AttributeError, KeyError, TypeError, ValueError, FileNotFoundError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'error: {first}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  run()
