"""``python -m lit_activations``: the same as the ``lit-activations`` command."""

from lit_activations.cli import main

if __name__ == "__main__":
    main()
