"""`python -m score_sde ...`: the command line of score_sde.app.cli (the same as `score-sde`)."""
from score_sde.app.cli import run

if __name__ == '__main__':
  run()
