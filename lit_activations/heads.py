"""The output heads of ``ActivationMLP`` (``--model.output``) as one table, ``HEADS``: name -> ``OutputHead``.

A head says what the network's last layer means: how many outputs it has, what ``forward`` returns,
the loss, the probabilities and the predicted classes. The model looks its head up once; a new head
is one entry here (and its name in ``ActivationMLP``'s ``output`` choices).

Shapes: K members, B samples, C classes. ``forward``'s output is (K, B) for a head of one output
(two classes), (K, B, C) for a head of one output per class. Labels ``y`` are (B,) class indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class OutputHead:
    """One value of ``--model.output``.

    Attributes:
        name: the value of ``--model.output``.
        per_class: one output per class (any number of classes); otherwise one output for two classes,
            whose probability is that of class 1.
        output: the network's last layer (K, B, 1 or C) -> ``forward``'s output.
        losses: (``forward``'s output, labels) -> each member's mean loss over the batch, (K,).
        probabilities: ``forward``'s output -> P(class 1) (K, B), or each class's probability (K, B, C).
        classes: ``forward``'s output -> the class each member predicts for each sample, (K, B) integers.
    """

    name: str
    per_class: bool
    output: Callable[[Tensor], Tensor]
    losses: Callable[[Tensor, Tensor], Tensor]
    probabilities: Callable[[Tensor], Tensor]
    classes: Callable[[Tensor], Tensor]

    def out_features(self, num_classes: int) -> int:
        """Width of the network's last layer for data of ``num_classes`` classes."""
        return num_classes if self.per_class else 1

    def each_class(self, probabilities: Tensor) -> Tensor:
        """Each class's probability, (K, B, C), from what ``probabilities`` gives: with one output,
        P(class 0) = 1 - P(class 1) goes beside P(class 1)."""
        return probabilities if self.per_class else torch.stack([1 - probabilities, probabilities], dim=-1)


# Module-level functions rather than lambdas: a model holding its head stays picklable.


def _one_output(out: Tensor) -> Tensor:
    return out.squeeze(-1)


def _one_probability(out: Tensor) -> Tensor:
    return torch.sigmoid(out.squeeze(-1))


def _identity(out: Tensor) -> Tensor:
    return out


def _bce_with_logits(out: Tensor, y: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(out, y.expand_as(out), reduction="none").mean(-1)


def _bce(out: Tensor, y: Tensor) -> Tensor:
    return F.binary_cross_entropy(out, y.expand_as(out), reduction="none").mean(-1)


def _cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    k, b, classes = out.shape
    losses = F.cross_entropy(out.reshape(k * b, classes), y.long().repeat(k), reduction="none")
    return losses.view(k, b).mean(-1)


def _softmax(out: Tensor) -> Tensor:
    return out.softmax(-1)


def _logit_classes(out: Tensor) -> Tensor:
    return (torch.sigmoid(out) > 0.5).long()


def _probability_classes(out: Tensor) -> Tensor:
    return (out > 0.5).long()


def _argmax(out: Tensor) -> Tensor:
    return out.argmax(-1)


HEADS: dict[str, OutputHead] = {
    # one raw output trained with BCEWithLogitsLoss: numerically stable
    "logit": OutputHead("logit", False, _one_output, _bce_with_logits, torch.sigmoid, _logit_classes),
    # the output through a sigmoid, trained with BCELoss, as the tutorial does
    "sigmoid": OutputHead("sigmoid", False, _one_probability, _bce, _identity, _probability_classes),
    # one logit per class trained with CrossEntropyLoss, which applies log-softmax itself (no nn.Softmax layer)
    "softmax": OutputHead("softmax", True, _identity, _cross_entropy, _softmax, _argmax),
}
