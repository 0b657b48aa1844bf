"""argparse for ccexp's flag-style commands (``python -m ccexp.bench``, ``python -m ccexp.compare``,
``benchmarks/*.py``): a bad argument is one line naming it, as every other bad input is, not
argparse's usage block followed by the error."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        # The prefix the command's own errors have ("ccexp.bench: error: ..."), whoever found it.
        self.exit(2, f"{self.prog.removeprefix('python -m ')}: error: {message} (--help for usage)\n")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, so that a count of 0 fails before minutes of work
    instead of dividing by it afterwards."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def user_path(text: str) -> Path:
    """An argparse type (and key=value parsing): a path with ``~`` as the user's home, as the
    config's paths have it. Quoted, or after ``--out=``, or in zsh, the shell leaves ``~`` as it
    is, and results went to a folder named ``~`` in the current one."""
    return Path(text).expanduser()


def writable_file(text: str | Path) -> Path:
    """An argparse type: a file path that can be written, checked before the work whose results go
    there (its folder may not exist yet: it is created then)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory, expected a file to write")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: the file is read-only")
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())  # "." or "/" at the latest
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {folder} is not a folder this user can write to")
    try:  # root passes os.access everywhere, yet /proc takes no file: try one
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot write {path}: {folder} takes no new file ({err.strerror or err})")
    return path


def output_dir(path: Path, error: type[Exception], flag: str, create: bool = False) -> Path:
    """A folder results go to (``flag``: how the command names it, "--out" or "out="), to be
    created if missing (now, with ``create``); a file there, or a folder that cannot be made or
    written (under a file, read-only), raises ``error`` in one line before any work is written."""
    shown = f"{flag}{path}" if flag.endswith("=") else f"{flag} {path}"
    if path.exists() and not path.is_dir():
        raise error(f"{shown}: a file, expected a directory (it is created if missing)")
    folder = next(p for p in (path, *path.parents) if p.exists())  # "." or "/" at the latest
    if not folder.is_dir():
        raise error(f"{shown}: {folder} is a file, so no directory can be made under it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise error(f"{shown}: {folder} is not a folder this user can write to")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # root passes os.access, yet /proc takes no folder
            raise error(f"{shown}: cannot create it ({err.strerror or err})") from None
    return path


def read_json_object(path: Path, error: type[Exception], what: str) -> dict:
    """The JSON object in a file named on the command line. Anything else raises ``error`` with
    one line naming the file and what was expected (``what``, e.g. "a ccexp.bench results file")."""
    if path.is_dir():
        raise error(f"{path} is a directory, expected {what}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))  # a BOM from an editor is harmless
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start}), expected {what}") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except (ValueError, RecursionError) as err:  # a 5,000-digit number; nesting deeper than Python recurses
        raise error(f"{path}: not valid JSON ({err.__class__.__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected {what} (a JSON object), got {type(data).__name__}")
    return data


def yaml_problem(err: Exception) -> str:
    """A YAML parser's error in a few words with where it stopped (1-based, as an editor counts)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
    words = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
    return f"{where}{words}"
