"""The errors crackseg raises for what a user can fix: each message names the file or the flag and the problem.
The command lines print them as one line (exit code 2) instead of a traceback."""


class DatasetError(ValueError):
    """The data on disk is not in the expected layout, cannot be read or cannot be paired."""


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, unreadable or not what the caller needs."""


class ConfigError(ValueError):
    """A flag's value cannot work; said before any data is read or any epoch is trained."""
