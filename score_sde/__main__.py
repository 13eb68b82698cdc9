"""`python -m score_sde ...`: the command line of score_sde.cli (the same as `score-sde`)."""
from score_sde.cli import run

if __name__ == '__main__':
  run()
