"""Images: reference and evaluation folders, their fingerprints, and Fashion-MNIST offline.
Stands on :mod:`sddpx_tp.models` (how a class folder maps to a model's outputs)."""
