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


SEEDS = (0, 2**32 - 1)  # what NumPy's and scikit-learn's random states take, and so every seed of a run


def check_seed(option: str, seed: object) -> None:
    """Raise for a seed outside ``SEEDS`` (``True``/``False`` are ``seed_everything``'s own switches).

    >>> check_seed("members.seeds", -1)
    Traceback (most recent call last):
    ...
    lit_activations.errors.ConfigError: invalid members.seeds -1; expected an integer from 0 to 4294967295
    """
    if isinstance(seed, int) and not isinstance(seed, bool) and not SEEDS[0] <= seed <= SEEDS[1]:
        raise ConfigError(f"invalid {option} {seed}; expected an integer from {SEEDS[0]} to {SEEDS[1]}")
