"""Running the `rewind` command: the entry point, and exit codes from errors.

`rewind backup ...` runs the backup command group under a root with the settings of the full CLI
(`rewind.cli.app`) without importing the rest of it: undo planning, the CLI's other commands and
the Typer conversion of all their parameters are start-up time that every `rewind backup create`
would pay for nothing. tests/test_cli_entry.py checks that both roots give the backup commands the
same options, help and exit codes.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import typer

# The settings of the `rewind` root command (rewind.cli.app's), for backup_root();
# tests/test_cli_entry.py checks that the two agree.
ROOT_SETTINGS: dict[str, Any] = {"add_completion": False, "no_args_is_help": True,
                                 "pretty_exceptions_enable": False}


def backup_root() -> typer.Typer:
    """A `rewind` root command that knows only `rewind backup ...`."""
    import typer

    from rewind.backup_cli import backup_app

    root = typer.Typer(**ROOT_SETTINGS)
    root.add_typer(backup_app, name="backup")
    return root


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    """Run a Typer app and return its exit code: 0 done, 1 refused, 2 bad input."""
    import typer

    from journal.errors import RewindError
    from rewind import output

    json_mode = "--json" in (args if args is not None else sys.argv[1:])
    try:
        # Without standalone mode, click returns an Exit's code instead of raising it.
        code = app(args=args, standalone_mode=False)
    except RewindError as exc:
        if json_mode and exc.payload is not None:
            output.emit_json(exc.payload)
        output.err.print(f"rewind: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:  # end of input at a prompt, or Ctrl-C anywhere (click turns both into Abort)
        output.err.print("rewind: aborted (end of input or Ctrl-C)", markup=False, highlight=False)
        return 1
    except typer.TyperException as exc:  # usage errors: unknown option, missing or bad value
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "rewind"
        hint = f" (see {where} --help)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())  # one line, as every other error
        output.err.print(f"{where}: {message}{hint}", markup=False, highlight=False, soft_wrap=True)
        return 2
    return code if isinstance(code, int) else 0


def exit_with(code: int) -> NoReturn:
    # The process ends here: moving every object out of the collector's reach spares the final
    # collections over all imported modules at shutdown, about 40 ms of every command.
    gc.freeze()
    sys.exit(code)


def main() -> NoReturn:
    """The `rewind` command (console script and `python -m rewind`)."""
    # Imports allocate many objects and leave next to no garbage: the collector would spend about
    # 10 ms walking them while they load. Collect nothing until they are loaded, then freeze
    # them, so that later collections (the command itself may run for days) skip them too.
    gc.disable()
    try:
        if sys.argv[1:2] == ["backup"]:
            app = backup_root()
        else:
            from rewind.cli import app
    finally:
        gc.freeze()
        gc.enable()
    exit_with(run(app))
