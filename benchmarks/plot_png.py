"""Log-log line plots with Pillow only (the fallback when matplotlib is not installed), and a
re-plot of a `benchmarks/samplers.py` results table:

  python benchmarks/plot_png.py benchmarks/results/samplers_optimized.md   # writes the .png beside it
"""
from __future__ import annotations

import math
import sys

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _ticks(lo: float, hi: float) -> list[float]:
  return [10.0 ** k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]


def panel(draw: ImageDraw.ImageDraw, box, series: dict, title: str, ylabel: str, hline=None,
          legend: str = 'top') -> None:
  """One log-log panel in `box` (x0, y0, x1, y1): series name -> [(x, y)], optional dashed
  hline, the legend at the top or bottom left."""
  x0, y0, x1, y1 = box
  pts = [p for s in series.values() for p in s if p[1] > 0] + ([(1.0, hline)] if hline else [])
  xs, ys = [p[0] for p in pts if p[0] > 1], [p[1] for p in pts]
  lx, hx = math.log10(min(xs)) - 0.05, math.log10(max(xs)) + 0.05
  ly, hy = math.log10(min(ys)) - 0.2, math.log10(max(ys)) + 0.2
  px = lambda x: x0 + (math.log10(x) - lx) / (hx - lx) * (x1 - x0)
  py = lambda y: y1 - (math.log10(y) - ly) / (hy - ly) * (y1 - y0)
  draw.rectangle(box, outline=(0, 0, 0))
  for t in _ticks(10 ** ly, 10 ** hy):
    if ly <= math.log10(t) <= hy:
      draw.line([(x0, py(t)), (x1, py(t))], fill=(225, 225, 225))
      draw.text((x0 - 42, py(t) - 6), f'1e{round(math.log10(t))}', fill=(0, 0, 0))
  for t in sorted({p[0] for p in pts if p[0] > 1}):
    draw.text((px(t) - 8, y1 + 4), f'{t:g}', fill=(0, 0, 0))
  if hline:
    for xa in range(int(x0), int(x1), 12):
      draw.line([(xa, py(hline)), (min(xa + 6, x1), py(hline))], fill=(0, 0, 0))
  for k, (name, s) in enumerate(series.items()):
    color, s = COLORS[k % len(COLORS)], sorted(p for p in s if p[1] > 0)
    draw.line([(px(x), py(y)) for x, y in s], fill=color, width=2)
    for x, y in s:
      draw.ellipse([px(x) - 3, py(y) - 3, px(x) + 3, py(y) + 3], fill=color)
    top = y0 + 6 if legend == 'top' else y1 - 8 - 13 * len(series)
    draw.text((x0 + 8, top + 13 * k), name, fill=color)
  draw.text(((x0 + x1) / 2 - 40, y0 - 18), title, fill=(0, 0, 0))
  draw.text(((x0 + x1) / 2 - 10, y1 + 20), 'NFE', fill=(0, 0, 0))
  draw.text((x0 - 42, y0 - 18), ylabel, fill=(0, 0, 0))


def save_panels(panels: list[dict], path: str) -> None:
  """panels: dicts with series, title, ylabel and optional hline, drawn side by side."""
  w, h = 560, 420
  img = Image.new('RGB', (w * len(panels), h), 'white')
  draw = ImageDraw.Draw(img)
  for i, p in enumerate(panels):
    panel(draw, (i * w + 60, 40, (i + 1) * w - 20, h - 50), p['series'], p['title'], p['ylabel'],
          p.get('hline'), p.get('legend', 'top'))
  img.save(path)


def read_table(md_path: str):
  """(rows, floor) from a samplers.py markdown table: rows with solver, nfe, sw2_ratio, median."""
  rows, floor = [], None
  for line in open(md_path):
    if 'SW2 floor' in line:
      floor = float(line.rsplit('=', 1)[1])
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) >= 10 and cells[0].isdigit():
      median = float(cells[8]) if cells[8] != '-' else 0.0
      rows.append({'solver': cells[1], 'nfe': int(cells[2]), 'sw2_ratio': float(cells[4]), 'median': median})
  return rows, floor


def main(md_path: str) -> str:
  rows, _ = read_table(md_path)
  names = list(dict.fromkeys(r['solver'] for r in rows))
  sw2 = {n: [(r['nfe'], r['sw2_ratio']) for r in rows if r['solver'] == n] for n in names}
  med = {n: [(r['nfe'], r['median']) for r in rows if r['solver'] == n] for n in names}
  path = md_path[:-3] + '.png'
  save_panels([{'series': sw2, 'title': 'sliced W2 / floor', 'ylabel': 'SW2/floor', 'hline': 1.05},
               {'series': med, 'title': 'median error to the exact PF-ODE', 'ylabel': 'L2 error',
                'legend': 'bottom'}], path)
  print(f'wrote {path}')
  return path


if __name__ == '__main__':
  main(sys.argv[1])
