"""TBPTT's window steps on the PyTorch backend: eager calls + ``torch.autograd.grad``.

One of three files, one per backend; see :mod:`seqprep.running._tbptt_step_tensorflow`.
"""

from __future__ import annotations

from typing import Any

import keras
import torch
from keras import ops

__all__ = ["_TorchSteps"]


class _TorchSteps:
    """Eager steps; gradients with ``torch.autograd.grad``."""

    def __init__(self, runner: Any) -> None:  # a _tbptt_runner._Runner
        self.runner = runner

    @staticmethod
    def _tensors(*arrays: Any) -> list[Any]:
        return [keras.tree.map_structure(ops.convert_to_tensor, a) for a in arrays]

    def forward(self, feed, training):
        with torch.no_grad():
            return self.runner.run_window(*self._tensors(*feed), training)

    def train(self, feed, y, weight, pick, many_to_one):
        model = self.runner.model
        feed = tuple(self._tensors(*feed))
        y, weight, pick = self._tensors(y, weight, pick)
        loss, scaled, picked, weight = self.runner.window_loss(
            feed, y, weight, pick, training=True, many_to_one=many_to_one
        )
        variables = model.trainable_variables
        gradients = torch.autograd.grad(
            scaled, [v.value for v in variables], allow_unused=True
        )
        gradients = [
            torch.zeros_like(v.value) if g is None else g
            for g, v in zip(gradients, variables, strict=True)
        ]
        with torch.no_grad():
            model.optimizer.apply(gradients, variables)
            logs = self.runner.window_metrics(feed[0], y, picked.detach(), weight)
        return loss.detach(), logs

    def test(self, feed, y, weight, pick, many_to_one):
        feed = tuple(self._tensors(*feed))
        y, weight, pick = self._tensors(y, weight, pick)
        with torch.no_grad():
            loss, _, picked, weight = self.runner.window_loss(
                feed, y, weight, pick, training=False, many_to_one=many_to_one
            )
            return loss, self.runner.window_metrics(feed[0], y, picked, weight)
