"""User-facing errors: one sentence naming the file or field and what was expected.

The CLIs catch :class:`VadError`, print its message without a traceback and exit with code 2.
Anything else escaping is a bug and keeps its traceback.
"""


class VadError(Exception):
    """An error the user can fix (bad data, bad config, missing files)."""


class ConfigError(VadError):
    """A config file or override names an unknown field, a wrong type or a value out of range."""


class DataError(VadError):
    """A benchmark file is missing, unreadable or disagrees with its labels."""


class ShardError(DataError):
    """A shard is corrupted, truncated or disagrees with its manifest."""
