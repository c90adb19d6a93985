"""``python -m lit_activations``: the same as the ``lit-activations`` command."""

from lit_activations.cli import cli_main

if __name__ == "__main__":
    cli_main()
