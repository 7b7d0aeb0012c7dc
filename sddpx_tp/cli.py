"""The ``sddpx-tp`` command line: one click verb per pipeline stage."""

from __future__ import annotations

import click

from sddpx_tp import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sddpx-tp")
def main() -> None:
    """LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer."""
