"""User-facing errors: one sentence naming the file or field and what was expected.

The CLIs run their subcommands through `guarded`: a :class:`VadError` prints its message without a traceback and
exits with code 2. Anything else escaping is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys


class VadError(Exception):
    """An error the user can fix (bad data, bad config, missing files)."""


class ConfigError(VadError):
    """A config file or override names an unknown field, a wrong type or a value out of range."""


class DataError(VadError):
    """A benchmark file is missing, unreadable or disagrees with its labels."""


class ShardError(DataError):
    """A shard is corrupted, truncated or disagrees with its manifest."""


def guarded(func, args, interrupted: str = "interrupted") -> int:
    """Run a subcommand: a VadError is one red paragraph and exit code 2, Ctrl-C exit code 130."""
    try:
        return func(args)
    except VadError as e:
        from rich.console import Console
        from rich.text import Text

        message = Text.assemble(("error:", "bold red"), " ", str(e))  # Text, not markup: "[a:b]" stays literal
        Console(stderr=True).print(message, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
