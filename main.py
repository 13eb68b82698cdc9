"""Command line from a checkout: `python main.py --mode MODE --config CFG --workdir DIR
[--config.a.b=v ...]`, the same as the installed `score-sde` and `python -m score_sde`.

The code is score_sde/app/cli.py (`python main.py --help` lists the modes and flags).
"""
from score_sde.app.cli import FLAGS, MODES, main, parse_flags, run  # noqa: F401 (main.MODES, main.run)

if __name__ == '__main__':
  run()
