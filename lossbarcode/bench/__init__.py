"""Benchmarks: ``python -m lossbarcode bench <name>``, one module each.

* :mod:`~lossbarcode.bench.topology`: H0 barcodes of grids and kNN graphs against ripser;
* :mod:`~lossbarcode.bench.experiment`: the default experiment, cold and re-opened;
* :mod:`~lossbarcode.bench.convergence`: fixed NEB step budgets against the converging default;
* :mod:`~lossbarcode.bench.minima`: certified minima of the new and the old default training,
  and the full-batch L-BFGS against gradient descent and ``torch.optim.LBFGS``;
* :mod:`~lossbarcode.bench.engine`: the batched engine against per-network loops;
* :mod:`~lossbarcode.bench.estimate`: the cost model's predictions against measured runs;
* :mod:`~lossbarcode.bench.app`: dashboard start and page switches in headless Chromium;
* :mod:`~lossbarcode.bench.toy`: the Toy landscapes animation per frame in headless Chromium.

:mod:`~lossbarcode.bench.browser` serves the dashboard and drives Chromium for the last two (and
for the browser tests). Nothing here is imported by the library; the command line imports a
benchmark's module when it is run.
"""
