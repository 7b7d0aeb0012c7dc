"""The prune-into-a-folder workflow: settings, the run folder, rebuilding a run's models, export,
quantization, the report and the demo. Stands on everything below it; the CLI and sweeps stand on it."""
