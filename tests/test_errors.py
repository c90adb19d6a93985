"""What counts as a user's mistake (one line) and what as a bug (its traceback), decided by exception types."""

import pytest
import torch

from lit_activations.cli import cli_main
from lit_activations.errors import ConfigError
from lit_activations.errors.handling import built_by_torch, refusal_in, refuse_or_raise


class RefusingOptimizer(torch.optim.SGD):
    """A user's own optimizer whose own code raises a ValueError: a bug of theirs, not a typing mistake."""

    def __init__(self, params, lr: float = 0.1) -> None:
        raise ValueError("a bug in my optimizer")


def test_torchs_refusal_of_a_value_is_a_config_error_and_a_users_class_keeps_its_own_error():
    with pytest.raises(ConfigError, match=r"^invalid model.optimizer: Invalid learning rate: -1.0$"):
        built_by_torch("model.optimizer", "torch.optim.SGD", lambda: torch.optim.SGD([torch.zeros(1)], lr=-1.0))
    with pytest.raises(ValueError, match="a bug in my optimizer") as raised:
        built_by_torch("model.optimizer", f"{__name__}.RefusingOptimizer", lambda: RefusingOptimizer([]))
    assert not isinstance(raised.value, ConfigError)
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert isinstance(built_by_torch("model.optimizer", "torch.optim.Adam", lambda: torch.optim.Adam(params)),
                      torch.optim.Adam)  # fmt: skip


def test_a_refusal_anywhere_in_the_chain_is_refused_and_a_wrapped_bug_is_raised_as_itself():
    def wrapped(inner: BaseException) -> RuntimeError:
        try:
            try:
                raise inner
            except BaseException as err:
                raise RuntimeError("Does not validate against any of the types") from err
        except RuntimeError as outer:
            return outer

    refused = []
    with pytest.raises(SystemExit):
        refuse_or_raise(wrapped(ConfigError("invalid data.noise -1")), lambda r: refused.append(r) or exit(2))
    assert [str(r) for r in refused] == ["invalid data.noise -1"]
    assert refusal_in(wrapped(KeyError("x"))) is None
    with pytest.raises(KeyError, match="'x'"):  # the user's bug itself, not jsonargparse's wrapper
        refuse_or_raise(wrapped(KeyError("x")), lambda r: pytest.fail("a bug is not a refusal"))


def test_no_subcommand_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as ended:
        cli_main([])
    assert ended.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        'error: expected "subcommand" to be one of {fit,validate,test,predict}, but it was not provided. (see --help)'
    ]
