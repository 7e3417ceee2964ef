"""The one exception type that reaches users as a single line and exit code 2."""


class CnncError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The CLI prints ``error: <message>`` and exits with code 2; no traceback
    unless ``--debug`` is given. Raise it wherever a user mistake is detected.
    """


class ConfigError(CnncError):
    """A config field is missing, unknown, mistyped or impossible."""
