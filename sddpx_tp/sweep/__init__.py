"""Sweeps: a TOML grid of ordinary runs on a local pool or Ray, and one results table.
Stands on :mod:`sddpx_tp.run`."""
