"""User-facing errors and the CLI wrapper that turns them into a clear message and a non-zero exit."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: printed as one message naming the problem and the fix."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with each optional flag's default, once: not for required flags, flags without a default, or help
    texts that already state theirs."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default in (None, argparse.SUPPRESS, False) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Runs a CLI `main`, printing UserError without a traceback and exiting with status 2."""
    try:
        code = main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Creates `path` if needed and checks that files can be written there."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output folder {path} is not writable ({e.strerror}); choose another --out") from e
    return path


def require_run(flag: str, path: str | os.PathLike) -> Path:
    """A training run folder given on the command line, checked before anything heavy loads."""
    path = Path(path)
    if not (path / "config.json").is_file():
        reason = "does not exist" if not path.exists() else "is not a training run folder (no config.json)"
        raise UserError(f"{flag} {path} {reason}; pass the --workdir of `python -m daetalker_jax.train`")
    return path


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling path; renames it to `final` only if the block succeeds.

    Readers therefore never see a half-written file, and an interrupted job leaves only a `.tmp-`
    file that the next run overwrites.
    """
    final = Path(final)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
