"""``python -m lit_activations`` and ``lit-activations``: ``compare`` runs the study, ``theory`` predicts a
configuration, the rest (fit, validate, test, predict) is LightningCLI."""

import sys


def main() -> None:
    if sys.argv[1:2] == ["compare"]:
        # The study's own process does not import Lightning (5 s here): its fits do, in processes of their own.
        from lit_activations.study.command import compare_main

        sys.exit(compare_main(sys.argv[2:]))
    if sys.argv[1:2] == ["theory"]:
        from lit_activations.theory_command import theory_main

        sys.exit(theory_main(sys.argv[2:]))
    from lit_activations.cli import cli_main

    cli_main()


if __name__ == "__main__":
    main()
