"""How ``kafka-etl`` ends: one line on stderr for every expected failure, and a truthful exit code.

0 ok; 1 a failure a retry will not fix; 2 a usage mistake (with a hint to ``--help``); 75 a
failure a retry may fix (sysexits' EX_TEMPFAIL); 128 + the signal's number when stopped by
SIGINT (130) or SIGTERM (143). Tracebacks are left for bugs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

import typer

from kafka_etl.errors import KafkaEtlError

if TYPE_CHECKING:
    from pipelines.runner import RunInterrupted

PROG = "kafka-etl"
OK, TERMINAL, USAGE, TRANSIENT = 0, 1, 2, 75


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by a stop signal. A KeyboardInterrupt, so whatever cleans up
    after Ctrl-C (the runner waiting for its writes in flight) does the same for SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _usage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions typer's parsing raises: its bundled click's (typer >= 0.20 vendors click
    as ``typer._click``, all subclasses of ``TyperException``) and, for older typer, click's."""
    kinds: list[type[BaseException]] = []
    bundled = getattr(typer, "TyperException", None)  # typer < 0.20 has none: it uses click's
    if isinstance(bundled, type) and issubclass(bundled, BaseException):
        kinds.append(bundled)
    try:
        import click
    except ImportError:  # pragma: no cover - typer without a separate click
        pass
    else:
        kinds.append(click.ClickException)
    return tuple(kinds)


USAGE_ERRORS = _usage_errors()


def say(line: str) -> None:
    """Write one line to stderr, unwrapped and without markup."""
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def error(message: str) -> None:
    say(f"{PROG}: error: {' '.join(message.split())}")


def exit_code(exc: KafkaEtlError) -> int:
    return TRANSIENT if exc.transient else TERMINAL


def worse(a: int, b: int) -> int:
    """The worse of two exit codes: a terminal failure over a transient one over success."""
    rank = {OK: 0, TRANSIENT: 1, TERMINAL: 2}
    return max(a, b, key=lambda code: rank.get(code, 3))


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``Stopped`` in the main thread, once; a second signal while the
    run winds down (waiting for the batch being written) exits at once: the database rolls
    back whatever transaction was open, as after ``kill -9``."""
    stopping: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if stopping:
            say(f"{PROG}: error: {signal.Signals(signum).name} again; exiting now")
            os._exit(128 + signum)
        stopping.append(signum)
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        if not stopping:  # once stopped, a later signal still means "now", up to the exit
            for s, old in previous.items():
                signal.signal(s, old)


def interrupted(exc: KeyboardInterrupt) -> int:
    """Report an interrupt in one line; the exit code is 128 + the signal's number."""
    run = _run_interrupted(exc)
    cause = run.cause if run is not None else exc
    signum = cause.signum if isinstance(cause, Stopped) else signal.SIGINT
    name = signal.Signals(signum).name
    if run is not None and run.replay:
        error(
            f"pipeline {run.pipeline!r}: backfill interrupted by {name}: {run.rows:,} rows"
            f" replayed in {run.batches:,} batches, the batch in flight was not committed;"
            " the checkpoints did not move, run the same backfill again to finish it"
        )
    elif run is not None:
        error(
            f"pipeline {run.pipeline!r}: interrupted by {name}: {run.rows:,} rows committed in"
            f" {run.batches:,} batches; the batch in flight was not committed and the next run"
            " continues from the checkpoints"
        )
    else:
        error(f"interrupted by {name}")
    return 128 + signum


def _run_interrupted(exc: KeyboardInterrupt) -> RunInterrupted | None:
    """``exc`` as a load's ``RunInterrupted``, if it is one. Only the runner raises those, so
    a command that never imported it (help, a usage mistake) does not import it here either:
    the CLI imports the runner only for the commands that load."""
    if "pipelines.runner" not in sys.modules:
        return None
    from pipelines.runner import RunInterrupted

    return exc if isinstance(exc, RunInterrupted) else None


def usage(exc: Any) -> int:
    """A click/typer usage error: one line, then a hint to the command's ``--help``."""
    code = int(getattr(exc, "exit_code", USAGE))
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `kafka-etl`: help (rich printed it)
        text = exc.format_message()
        if text:
            sys.stdout.write(text + "\n")
        return USAGE
    message = " ".join(str(exc.format_message()).split())
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    path = ctx.command_path if ctx is not None else PROG
    where = path.removeprefix(PROG).strip()
    error(f"{where}: {message}" if where else message)
    if code == USAGE:
        say(f"Try '{path} --help'.")
    return code


# kafka-etl's own loggers whose warnings a user should see (a skipped gap, a wait for a locked
# DuckDB file). Not ``kafka_etl.librdkafka``: librdkafka's lines stay off stderr unless asked for.
_SHOWN_LOGGERS = ("connector", "pipelines", "sinks")


def configure_logging() -> None:
    """Warnings of kafka-etl's own modules as single ``kafka-etl: ...`` lines on stderr. Quiet
    once the root logger is configured (verbose logging), which then shows them itself."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    handler.addFilter(lambda record: not logging.getLogger().handlers)
    handler.setLevel(logging.WARNING)
    for name in _SHOWN_LOGGERS:
        logging.getLogger(name).addHandler(handler)


def run_cli(app: typer.Typer, argv: list[str] | None) -> int:
    """Parse and run one command line; every expected way of ending becomes an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    configure_logging()
    with stop_signals():
        try:
            with command.make_context(PROG, args) as ctx:
                command.invoke(ctx)
        except KafkaEtlError as exc:
            error(str(exc))
            return exit_code(exc)
        except KeyboardInterrupt as exc:
            _end_now(interrupted(exc))
        except typer.Exit as exc:
            return int(exc.exit_code)
        except typer.Abort:
            return TERMINAL
        except BrokenPipeError:  # `kafka-etl status | head`: the reader left, nothing to say
            _silence_stdout()
            return TERMINAL
        except USAGE_ERRORS as exc:
            return usage(exc)
    return OK


def _end_now(code: int) -> NoReturn:
    """End a stopped CLI right after its line. Everything is cleaned up by then (the writes
    waited for, connections closed), and Python's finalization restores the default signal
    actions, so another Ctrl-C during it would kill the process by SIGINT instead of 130."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def confirm(question: str) -> bool:
    """Ask on the terminal; anything but y/yes (or end of input) is no."""
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        return False
    return answer.strip().lower() in {"y", "yes"}
