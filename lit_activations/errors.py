"""``ConfigError``: a user's mistake in the configuration, as opposed to a bug in code.

The command line reports a ``ConfigError`` (and the parser's own errors) in one line, with exit
status 2 and nothing written; any other exception keeps its traceback, so a bug in a user's own
activation, model or data module shows the line at fault. Raise it from your own classes'
``__init__`` to get the one-line treatment for their arguments.
"""


class ConfigError(ValueError):
    """An option has a value that is not accepted: the message names the option, the value and what is accepted.

    >>> str(ConfigError("invalid data.noise -0.5; expected a number >= 0"))
    'invalid data.noise -0.5; expected a number >= 0'
    """
