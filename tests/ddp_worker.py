"""Worker for tests/test_distributed.py: train a tiny toy model for a few steps and save each
rank's weights. Run directly (one process) or under `torchrun --standalone --nproc_per_node=K`.

  python tests/ddp_worker.py OUT_DIR STEPS GRAD_ACCUM
"""
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(1)

from configs.toy_gmm import get_config  # noqa: E402
from score_sde.app.build_train import build_trainer  # noqa: E402


def main(out_dir: str, steps: int, grad_accum: int) -> None:
  os.makedirs(out_dir, exist_ok=True)
  config = get_config()
  config.model.hidden, config.model.depth = 32, 2
  config.model.dropout = 0.0
  config.data.toy_size = 512
  config.training.batch_size = 64
  config.training.grad_accum = grad_accum
  config.optim.warmup = 0
  config.optim.lr = 1e-3
  config.runtime.device = 'cpu'
  trainer = build_trainer(config, os.path.join(out_dir, 'workdir'))
  init = [p.detach().clone() for p in trainer.params]
  losses = [float(trainer.train_step()['loss']) for _ in range(steps)]
  state = {'params': [p.detach().clone() for p in trainer.params],
           'ema': [p.clone() for p in trainer.ema.shadow_params], 'losses': torch.tensor(losses),
           'init': init}
  torch.save(state, os.path.join(out_dir, f'rank{trainer.dist.rank}_of{trainer.dist.world_size}.pt'))
  trainer.close()


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
