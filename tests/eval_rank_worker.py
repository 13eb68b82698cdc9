"""`python tests/eval_rank_worker.py MAIN_ARGS...` (under torchrun): main.py, with its sample
batches instrumented. With RECORD_DIR set, each rank appends the seed of every batch it draws
to RECORD_DIR/rank<RANK>.txt (which rank drew which shard); with KILL_RANK / KILL_AFTER set,
that rank SIGKILLs itself right after drawing its KILL_AFTER-th batch (before writing it), as
a pre-empted or crashed GPU worker dies mid-evaluation."""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from score_sde.app import eval_modes
from score_sde.app import sample_modes  # noqa: E402
from score_sde.app.cli import run  # noqa: E402

_generate, _drawn = eval_modes.generate, [0]


def _instrumented_generate(*args, **kwargs):
  out = _generate(*args, **kwargs)
  _drawn[0] += 1
  rank = os.environ.get('RANK', '0')
  if os.environ.get('RECORD_DIR'):
    with open(os.path.join(os.environ['RECORD_DIR'], f'rank{rank}.txt'), 'a') as f:
      f.write(f"{kwargs.get('seed')}\n")
  if rank == os.environ.get('KILL_RANK') and _drawn[0] == int(os.environ['KILL_AFTER']):
    os.kill(os.getpid(), signal.SIGKILL)
  return out


eval_modes.generate = sample_modes.generate = _instrumented_generate

if __name__ == '__main__':
  run()
