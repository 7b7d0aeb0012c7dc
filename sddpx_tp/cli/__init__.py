"""The ``sddpx-tp`` command line: one click verb per module; each parses, calls the library, prints.

Every user error (click's usage errors and the library's :class:`UserError`) becomes
one line on stderr and exit code 2, with the library's setting names shown as this
command line's flags; an interrupt exits with 130 and says how to resume.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from sddpx_tp import __version__
from sddpx_tp.cli.flags import flag
from sddpx_tp.errors import Interrupted, SettingError, UserError
from sddpx_tp.run_directory import RunDirectory

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"sddpx-tp: warning: {message}\n"


class _OneLineErrors(click.Group):
    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: Any = None, complete_var: Any = None, **kwargs: Any
    ) -> Any:
        warnings.formatwarning = _one_line_warning
        kwargs["standalone_mode"] = False  # errors come back here, to be printed as one line
        try:
            result = super().main(args, prog_name, complete_var, **kwargs)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.ClickException as error:
            click.echo(f"sddpx-tp: error: {error.format_message()}", err=True)
            # Usage errors are 2; a command's own exceptions may carry a documented code (export: 3).
            sys.exit(EXIT_USAGE if error.exit_code == 1 else error.exit_code)
        except UserError as error:
            message = error.render(flag) if isinstance(error, SettingError) else str(error)
            click.echo(f"sddpx-tp: error: {message}", err=True)
            sys.exit(EXIT_USAGE)
        except Interrupted as stop:
            where = (
                f"stopped; {stop.hint}"
                if stop.hint
                else "stopped after its last accepted step; continue it with --resume"
                if RunDirectory(Path(str(stop.run))).has_checkpoint()
                else "stopped before its first accepted step; --resume starts it over"
            )
            click.echo(f"sddpx-tp: interrupted: the run in {stop.run} {where}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("sddpx-tp: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if isinstance(result, int) and result != 0:  # an Exit code returned in non-standalone mode
            sys.exit(result)
        return result


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="sddpx-tp")
def main() -> None:
    """LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer."""


def _register() -> None:
    # Verbs live in their own modules, which import only the library (never this module).
    from sddpx_tp.cli.bench import bench_command
    from sddpx_tp.cli.demo import demo_command
    from sddpx_tp.cli.export import export_command
    from sddpx_tp.cli.prune import prune_command
    from sddpx_tp.cli.report import report_command
    from sddpx_tp.cli.sweep import sweep_command

    for command in (demo_command, prune_command, export_command, bench_command, report_command, sweep_command):
        main.add_command(command)


_register()
