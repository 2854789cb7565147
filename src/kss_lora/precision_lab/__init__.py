"""The precision study, above the runner: it trains runs and judges them.

- :mod:`.probe`: :func:`probe_run` (statistics per layer and tensor over real training steps, the gamma
  sweep of the LoRA update, :func:`merge_loss`); :mod:`.report` writes its tables and plot; ``kss precision``
  (:mod:`.cli`) puts both behind the command line.
- :mod:`.experiment` / :mod:`.verdict`: the shipped precision experiment (precision conditions x methods x
  seeds) and its report.

The numerics it uses (formats, scaling, emulation, the torchao runtime) are in :mod:`kss_lora.precision`.
"""
