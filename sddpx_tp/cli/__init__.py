"""The ``sddpx-tp`` command line: one click verb per module; each parses, calls the library, prints.

Every user error (click's usage errors and the library's :class:`UserError`) becomes
one line on stderr and exit code 2, with the library's setting names shown as this
command line's flags; an interrupt exits with 130 and says how to resume.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import click

from sddpx_tp import __version__
from sddpx_tp.cli.flags import flag
from sddpx_tp.errors import Interrupted, SettingError, UserError
from sddpx_tp.files import file_system_problem

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> str:
    return f"sddpx-tp: warning: {message}\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # the path Ctrl-C takes: checkpoints kept, workers stopped, one line, exit 130


def _stop_on_termination() -> dict[int, Any]:
    """SIGTERM (timeout, a CI runner, systemd) and SIGHUP (a closed terminal) end a command as Ctrl-C does, so
    that a sweep's worker processes stop with it and every run can be resumed; and Ctrl-C itself does so even
    when the parent started us with SIGINT ignored (a background job of a script, whose children Python then
    leaves deaf to it). Returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return {}
    replaced = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    numbers = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    return {**replaced, **{number: signal.signal(number, _interrupt) for number in numbers}}


class _OneLineErrors(click.Group):
    def main(  # type: ignore[override]
        self, args: Any = None, prog_name: Any = None, complete_var: Any = None, **kwargs: Any
    ) -> Any:
        warnings.formatwarning = _one_line_warning
        replaced = _stop_on_termination()
        kwargs["standalone_mode"] = False  # errors come back here, to be printed as one line
        try:
            try:
                result = super().main(args, prog_name, complete_var, **kwargs)
            finally:  # the caller's own handlers again (a test runner, a program that calls main)
                for number, handler in replaced.items():
                    signal.signal(number, handler)
        except click.exceptions.Exit as done:
            sys.exit(done.exit_code)
        except click.exceptions.NoArgsIsHelpError as bare:  # `sddpx-tp` alone: the help, not an "error: Usage"
            click.echo(bare.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as error:
            click.echo(f"sddpx-tp: error: {error.format_message()}", err=True)
            # Usage errors are 2; a command's own exceptions may carry a documented code (export: 3).
            sys.exit(EXIT_USAGE if error.exit_code == 1 else error.exit_code)
        except UserError as error:
            message = error.render(flag) if isinstance(error, SettingError) else str(error)
            click.echo(f"sddpx-tp: error: {message}", err=True)
            sys.exit(EXIT_USAGE)
        except Interrupted as stop:
            from sddpx_tp.run.folder import RunDirectory  # torch: imported only when a run stopped

            where = (
                f"stopped; {stop.hint}"
                if stop.hint
                else "stopped after its last accepted step; continue it with --resume"
                if RunDirectory(Path(str(stop.run))).has_checkpoint()
                else "stopped before its first accepted step; --resume starts it over"
            )
            click.echo(f"sddpx-tp: interrupted: the run in {stop.run} {where}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (OSError, RuntimeError) as error:
            problem = file_system_problem(error)
            if problem is None:
                raise
            click.echo(f"sddpx-tp: error: {problem}", err=True)
            sys.exit(EXIT_USAGE)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("sddpx-tp: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        if isinstance(result, int) and result != 0:  # an Exit code returned in non-standalone mode
            sys.exit(result)
        return result


# Each verb: its module, its command and its one-line help (a test holds them equal to the command's
# own). The modules are imported only when their verb runs, so that `sddpx-tp --help` does not load
# torch, zennit and onnxruntime (about 10 s on a busy 2-core machine).
_VERBS = {
    "bench": ("sddpx_tp.cli.bench", "bench_command",
              "Latency, throughput and size of an ONNX model (or a RUN's exports) against a baseline."),
    "demo": ("sddpx_tp.cli.demo", "demo_command",
             "Prune a model for two Fashion-MNIST classes, export it and measure it: all offline."),
    "export": ("sddpx_tp.cli.export", "export_command",
               "Export a pruned run (or a registry model) to ONNX, checked against torch."),
    "prune": ("sddpx_tp.cli.prune", "prune_command",
              "Prune a pretrained model for the classes of a reference folder (without fine-tuning unless --train)."),
    "report": ("sddpx_tp.cli.report", "report_command",
               "Rebuild RUN/report.md from the run, its export and benchmark files."),
    "sweep": ("sddpx_tp.cli.sweep", "sweep_command",
              "Run every cell of a sweep config (models x class subsets x grid values) into one folder, and "
              "tabulate them."),
}  # fmt: skip


class _LazyVerbs(_OneLineErrors):
    """A group whose verbs' modules are imported on use; its help lists them from :data:`_VERBS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _VERBS:
            return None
        module, attribute, _ = _VERBS[cmd_name]
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_line) for name, (_, _, help_line) in sorted(_VERBS.items())])


@click.group(cls=_LazyVerbs, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="sddpx-tp")
def main() -> None:
    """LRP-guided filter pruning (PX, DPX, SD-DPX) for few-class transfer."""
