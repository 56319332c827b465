"""The ``bnlab`` command: parse arguments, call the library, print with Rich.

User mistakes (``BnlabError``) are printed as one line on stderr with exit status 2, never
as a traceback, with the options they name shown as this command's flags (``cli_option``).
An operating-system error is one line naming the file and what the error means. SIGINT and
SIGTERM stop a run cleanly (exit 130 and 143) with the command that resumes it. Commands the
output suggests are spelled as this command was invoked (``program``), so they paste as they
are.

Each command parses its arguments, calls one function of ``bnlab.api`` and renders what it
returns; nothing here builds models, trainers, data pipelines or exporters.

    session.py   consoles, the stop message, flags and environment variables, the observer
    parser.py    the subcommands and their options
    run.py       bnlab run / seed / sweep / probe
    commands.py  bnlab data / summary / runs / show / report
    deploy.py    bnlab recalibrate / export / predict
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from bnlab.cli.parser import build_parser
from bnlab.cli.session import (
    FLAGS,
    Stopped,
    cli_option,
    error_console,
    escape,
    os_error_text,
    program,
    session,
    stop_advice,
)
from bnlab.errors import BnlabError

__all__ = ["FLAGS", "command", "main", "program"]


def command() -> None:
    """The ``bnlab`` executable: ``main()``, then exit with its status. A command stopped
    by SIGINT or SIGTERM exits at once, its output flushed (``os._exit``): an orderly
    interpreter shutdown would wait for XLA to finish the epoch in flight, which the run
    abandons (it resumes from its last saved epoch, and nothing else is pending: a run's
    files are written atomically and its lock released before this returns)."""
    code = main()
    if code in (130, 143):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    session.argv = list(sys.argv[1:] if argv is None else argv)
    session.run_dir = None
    args = parser.parse_args(session.argv)

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return args.handler(args)
    except BnlabError as err:
        error_console.print(f"[bold red]error:[/] {escape(err.render(cli_option))}",
                            soft_wrap=True)
        return 2
    except OSError as err:
        error_console.print(f"[bold red]error:[/] {escape(os_error_text(err))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt as err:
        name = "SIGTERM" if isinstance(err, Stopped) else "SIGINT"
        error_console.print(f"stopped by {name}; {stop_advice()}", soft_wrap=True,
                            markup=False)
        return 143 if isinstance(err, Stopped) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
