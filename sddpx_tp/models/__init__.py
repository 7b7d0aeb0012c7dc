"""Models: the registry of models by name, model and weights files, classifier plumbing and the
safe checkpoint format. Stands on :mod:`sddpx_tp.lrp` (which families relevance supports)."""
