"""Exceptions a user can cause, each carrying one sentence fit to print as it is."""


class GazetteError(Exception):
    """An operation failed for a reason the user can act on (bad input, bad state).

    The message is one sentence naming the offending value; entry points print it
    without a traceback and exit with status 1.
    """


class ConfigError(GazetteError):
    """A setting is missing or malformed; entry points exit with status 2."""


class InvalidChoiceError(GazetteError):
    """A value a reader or operator chose is not one on offer (a form field, an option)."""
