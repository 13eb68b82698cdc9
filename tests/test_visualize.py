"""PNG grids place each image where expected and enlarge small ones by whole pixels."""
import numpy as np
import torch

from score_sde.files.visualize import image_grid, points_image, save_samples_png


def test_image_grid_layout_and_enlargement():
  x = torch.zeros(2, 1, 2, 2)
  x[1, 0, 0, 1] = 1.0
  g = image_grid(x, nrow=2, padding=1, min_size=4)[..., 0]
  assert g.shape == (1 + 4 + 1, 1 + 2 * (4 + 1))
  assert (g[1:5, 1:5] == 0).all()                      # first image: black
  assert (g[1:3, 8:10] == 255).all() and (g[3:5, 6:10] == 0).all()  # second: one white pixel, 2x2
  assert (g[0] == 255).all()                           # padding is white


def test_save_samples_png(tmp_path):
  from PIL import Image
  save_samples_png(torch.rand(9, 3, 8, 8), str(tmp_path / 'a.png'))
  assert Image.open(tmp_path / 'a.png').size == (3 * 34 + 2, 3 * 34 + 2)
  pts = points_image(torch.randn(1000, 2), size=64)
  assert pts.shape == (64, 64, 3) and pts.dtype == np.uint8 and pts.min() < 255
