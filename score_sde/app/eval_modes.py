"""The evaluation modes of the command line: --mode likelihood and --mode eval (orchestration
only; the loops are in score_sde.app.eval_loop, the metrics in score_sde.evaluation)."""
from __future__ import annotations

import os

import numpy as np

from score_sde.app import eval_loop as loop
from score_sde.app import eval_preflight as preflight
from score_sde.app import eval_settings
from score_sde.app.build import is_vector_data
from score_sde.app.eval_loop import likelihood_batches, summary
from score_sde.app.eval_model import load_eval_model
from score_sde.app.generate import generate, class_labels_for
from score_sde.app.loading import load_guidance_classifier
from score_sde.data import datasets
from score_sde.data.loader import mix_seed
from score_sde.evaluation import manifest
from score_sde.evaluation.export import export_samples
from score_sde.files import checkpoint as ckpt
from score_sde.files.workdir import ckpt_dir, ensure_writable, grid_cache_in, write_output
from score_sde.runtime import distributed
from score_sde.runtime.device import get_device


BPD_METHODS = ('ode', 'vlb', 'both')


def bpd_methods(config) -> tuple[str, ...]:
  """The likelihood estimates config.eval.bpd_method asks for: ('ode',), ('vlb',) or both."""
  m = config.eval.bpd_method.lower()
  return ('ode', 'vlb') if m == 'both' else (m,)


def likelihood(config, workdir: str, checkpoint: str = '') -> dict:
  """Mean bits/dim (nats/dim for 2-D toys) of eval.bpd_dataset (the test split by default),
  with its standard error, by the PF-ODE and / or the variational bound (eval.bpd_method);
  `mean` / `stderr` are the first method's, `<method>_mean` / `<method>_stderr` each one's,
  `vlb_breakdown` the bound's terms. A non-finite mean is reported as null with a warning (a
  single example's stderr is null too: JSON has no NaN). Batch i's noise is seeded by
  seed + i; under torchrun batch i runs on rank i % world_size and rank 0 writes the report."""
  ensure_writable(workdir, 'likelihood.json')
  datasets.load_split(config.data, config.eval.bpd_dataset)  # a missing dataset: before the model
  toy = is_vector_data(config)
  unit, split = ('nats/dim' if toy else 'bits/dim'), config.eval.bpd_dataset
  with distributed.ranks(get_device(config.runtime)) as dist:
    model, path = load_eval_model(config, workdir, checkpoint)
    report = {'checkpoint': path, 'checkpoint_sha256': manifest.checkpoint_sha256(path), 'unit': unit,
              'bpd_dataset': split}
    for method in bpd_methods(config):
      v, terms = _likelihood_over_ranks(config, model, toy, method, dist)
      if dist.is_main:
        _likelihood_summary(report, method, v, terms, f'{unit} ({method})',
                            f'{split} examples ({os.path.basename(path)})')
  if dist.is_main:
    write_output(os.path.join(workdir, 'likelihood.json'), lambda p: ckpt.save_json(p, report))
  return report


def _likelihood_over_ranks(config, model, toy: bool, method: str, dist):
  """(values [N] in batch order, VLB terms per batch) of `likelihood`, batches split over the
  ranks; (None, None) off rank 0."""
  terms = {}
  mine = distributed.agree(dist, lambda: likelihood_batches(
      config, model, toy, method=method, terms=terms, dist=dist),
      f'computing the likelihood ({method})')
  parts = distributed.gather_objects((mine, terms), dist)
  if not dist.is_main:
    return None, None
  values = {i: v for got, _ in parts for i, v in got.items()}
  all_terms = {i: t for _, got in parts for i, t in got.items()}
  return (np.concatenate([values[i] for i in sorted(values)]),
          [all_terms[i] for i in sorted(all_terms)])


def _likelihood_summary(report: dict, method: str, v, terms: list, what: str, where: str) -> None:
  """Add method's mean, stderr and (VLB) breakdown to `report`, and print them."""
  mean, se = summary(v)
  report.update({f'{method}_mean': mean, f'{method}_stderr': se, 'num_examples': len(v)})
  report.setdefault('mean', mean)
  report.setdefault('stderr', se)
  if terms and mean is not None:
    t = sum(terms) / len(v)   # per term, bits/dim: prior, L_{K-1} ... L_1, decoder
    report['vlb_breakdown'] = {'prior': float(t[0]), 'kl_terms': float(t[1:-1].sum()),
                               'decoder': float(t[-1]), 'terms': [float(x) for x in t]}
  shown = 'null (not finite)' if mean is None else f'{mean:.4f}'
  shown += f' +- {se:.4f}' if se is not None else ''
  print(f'{what}: {shown} over {len(v)} {where}')


def evaluate(config, workdir: str, solver: str | None = None, checkpoint: str = '') -> list[dict]:
  """--mode eval: for each checkpoint in [eval.begin_ckpt, eval.end_ckpt] (or `checkpoint`),
  exactly eval.num_samples samples (in resumable shards under <workdir>/eval/<stem>/, <stem>
  the checkpoint file's name without extension, '-<sha256 prefix>' added for a checkpoint from
  outside this workdir) scored by FID / IS / KID / precision-recall against the reference
  statistics (sliced W2 for 2-D toys), and the test-split bits/dim when eval.enable_bpd; a JSON
  report per checkpoint (<stem>.json, holding the folder's manifest: shards made with other
  settings are discarded and redrawn, see score_sde.evaluation.manifest), TensorBoard scalars
  under eval/ and, with eval.export, the samples for external evaluators.

  Everything the run needs is checked before the first sample (score_sde.app.eval_preflight).
  Under torchrun, shard i (samples or bits/dim batch) is computed on rank i % world_size; its
  content depends only on i and the seeds, so any number of ranks writes the same shards and
  report, and a killed run resumes on any number of ranks. Rank 0 alone reconciles the folder,
  scores and writes reports (the others wait)."""
  from torch.utils.tensorboard import SummaryWriter
  grid_cache_in(config.sampling, workdir)
  e = config.eval
  solver = (solver or e.solver or config.sampling.method).lower()
  out_root = ensure_writable(os.path.join(workdir, 'eval'), 'evaluation results')
  targets = ([(ckpt.step_of(checkpoint) or 0, checkpoint)] if checkpoint
             else loop.eval_checkpoints(config, ckpt_dir(workdir)))
  flat, cache, reports = is_vector_data(config), {}, []
  with distributed.ranks(get_device(config.runtime)) as dist:
    distributed.agree(dist, lambda: preflight.check_eval(
        config, workdir, solver, cache, dist.device, flat, dist.is_main), 'checking the inputs')
    writer = SummaryWriter(os.path.join(workdir, 'tensorboard', 'eval')) if dist.is_main else None
    for step, path in targets:
      name, report = _evaluate_checkpoint(config, workdir, out_root, solver, step, path, cache,
                                          dist)
      if writer is None:
        continue
      for k, v in report.items():
        if isinstance(v, float):
          writer.add_scalar(f'eval/{k}', v, step)
      print(f'{name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in report.items() if isinstance(v, float)))
      reports.append(report)
    if writer is not None:
      writer.close()
  return reports


def _evaluate_checkpoint(config, workdir: str, out_root: str, solver: str, step: int, path: str,
                         cache: dict, dist=None) -> tuple[str, dict]:
  """One checkpoint of `evaluate`: (folder name, report; {} off rank 0). The report, with the
  folder's manifest, is written before the first shard ('complete': false) and after the last."""
  dist = dist or distributed.Dist()
  e, flat = config.eval, is_vector_data(config)
  model, _ = load_eval_model(config, workdir, path)
  device = next(model.parameters()).device
  sha = manifest.checkpoint_sha256(path)
  name = manifest.folder_name(path, sha, ckpt_dir(workdir))
  out_dir = ensure_writable(os.path.join(out_root, name), 'evaluation shards')
  report_path = os.path.join(out_root, name + '.json')
  classifier = load_guidance_classifier(config, workdir, device) if e.enable_sampling else None
  sections = {}
  if e.enable_sampling:
    sections['samples'] = eval_settings.sample_settings(
        config, solver, sha, eval_settings.classifier_sha256(config, workdir), flat)
  for method in bpd_methods(config) if e.enable_bpd else ():
    kind = 'bpd' if method == 'ode' else 'vlb'
    sections[kind] = eval_settings.likelihood_settings(config, method, sha, flat)
  report = {'checkpoint': path, 'checkpoint_sha256': sha, 'step': step, 'solver': solver}
  save = lambda r: write_output(report_path, lambda p: ckpt.save_json(p, r))

  def start() -> dict:  # rank 0, before any rank touches a shard
    folder = manifest.reconcile(out_dir, report_path, sections)
    save({**report, 'complete': False, 'manifest': folder})
    return folder
  folder = distributed.agree(dist, start, 'opening the evaluation folder', main_only=True)
  shard = None
  if e.enable_sampling:
    all_labels = class_labels_for(config, e.num_samples, device)
    shard = lambda i, begin, n: generate(
        config, model, n, solver, classifier=classifier, seed=mix_seed(config.sampling.seed, i),
        class_labels=None if all_labels is None else all_labels[begin:begin + n])
    count = -(-e.num_samples // config.sampling.batch_size)
    distributed.agree(dist, lambda: loop.eval_samples(config, shard, out_dir,
                                                      distributed.my_shards(count, dist)),
                      'drawing the evaluation samples')
  for method in bpd_methods(config) if e.enable_bpd else ():
    distributed.agree(dist, lambda: loop.likelihood_batches(
        config, model, flat, out_dir, method=method, dist=dist),
        f'computing bits/dim ({method})')
  finish = lambda: _score_checkpoint(config, workdir, report, flat, model, shard, out_dir,
                                     cache, name)
  report = distributed.agree(dist, finish, 'scoring', main_only=True)
  if dist.is_main:
    report = {**manifest.finite_or_none(report), 'complete': True, 'manifest': folder}
    save(report)
  return name, report or {}


def _score_checkpoint(config, workdir: str, report: dict, flat: bool, model, shard, out_dir: str,
                      cache: dict, name: str) -> dict:
  """Rank 0 of `_evaluate_checkpoint`, every shard on disk: the sample quality, bits/dim and
  the export (eval.export) of the samples. Returns the report's values."""
  e, device, report = config.eval, next(model.parameters()).device, dict(report)
  if e.enable_sampling:
    files, nfe = loop.eval_samples(config, shard, out_dir)  # all there: read back and checked
    report.update(num_samples=e.num_samples, nfe_per_batch=nfe,
                  **loop.sample_quality(config, workdir, files, flat, cache, device))
    export_samples(files, os.path.dirname(out_dir), name, e.export.lower(), flat)
  for method in bpd_methods(config) if e.enable_bpd else ():
    values = loop.likelihood_values(config, model, flat, out_dir, method=method)
    mean, se = loop.summary(values)
    unit = ('nats_per_dim' if flat else 'bits_per_dim') if method == 'ode' else 'vlb_bits_per_dim'
    report.update({unit: mean, f'{unit}_stderr': se, 'bpd_num_examples': len(values),
                   'bpd_dataset': e.bpd_dataset})
  return report
