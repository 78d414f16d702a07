"""TBPTT's window steps on the JAX backend: ``jax.jit`` + ``keras.StatelessScope`` +
``jax.value_and_grad``.

The variables (trainable, non-trainable with the RNN states, optimizer, metrics) go into the
compiled step as values and come back as new values, assigned after the call. One of three
files, one per backend; see :mod:`seqprep.running._tbptt_step_tensorflow`.
"""

from __future__ import annotations

from typing import Any

import jax
import keras

__all__ = ["_JAXSteps"]


class _JAXSteps:
    """``jax.jit`` steps over the model's variables as values (``keras.StatelessScope``)."""

    def __init__(self, runner: Any) -> None:  # a _tbptt_runner._Runner
        self.runner = runner
        self._compiled: dict[tuple[str, bool], Any] = {}

    def _groups(self, *names: str) -> list[list[Any]]:
        model = self.runner.model
        found = {
            "trainable": lambda: model.trainable_variables,
            "non_trainable": self._non_trainable,
            "optimizer": lambda: model.optimizer.variables,
            "metrics": lambda: model.metrics_variables,
        }
        return [list(found[name]()) for name in names]

    def _non_trainable(self) -> list[Any]:
        """Non-trainable variables, including the RNN states (Keras does not track those)."""
        found = list(self.runner.model.non_trainable_variables)
        seen = {id(v) for v in found}
        return found + [v for v in self.runner.state_variables if id(v) not in seen]

    @staticmethod
    def _scoped(groups: list[list[Any]], values: list[list[Any]]) -> keras.StatelessScope:
        mapping = [
            (v, value)
            for group, vals in zip(groups, values, strict=True)
            for v, value in zip(group, vals, strict=True)
        ]
        return keras.StatelessScope(state_mapping=mapping, collect_losses=True)

    @staticmethod
    def _after(scope: keras.StatelessScope, group: list[Any], values: list[Any]) -> list[Any]:
        out = []
        for v, old in zip(group, values, strict=True):
            new = scope.get_current_value(v)
            out.append(old if new is None else new)
        return out

    def _run(self, key, names, build, *args):
        args = _placed(args)
        groups = self._groups(*names)
        if key not in self._compiled:
            self._compiled[key] = jax.jit(build(groups))
        values = [[v.value for v in group] for group in groups]
        result, new_values = self._compiled[key](values, *args)
        for group, vals in zip(groups, new_values, strict=True):
            for v, value in zip(group, vals, strict=True):
                v.assign(value)
        return result

    def forward(self, feed, training):
        runner = self.runner

        def build(groups):
            def step(values, feed):
                with self._scoped(groups, values) as scope:
                    y_pred = runner.run_window(*feed, training)
                return y_pred, [values[0], self._after(scope, groups[1], values[1])]

            return step

        names = ("trainable", "non_trainable")
        return self._run(("forward", training), names, build, tuple(feed))

    def train(self, feed, y, weight, pick, many_to_one):
        runner, model = self.runner, self.runner.model

        def build(groups):
            def loss_fn(trainable, values, feed, y, weight, pick):
                with self._scoped(groups, [trainable, *values[1:]]) as scope:
                    loss, scaled, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=True, many_to_one=many_to_one
                    )
                return scaled, (loss, picked, weight, self._after(scope, groups[1], values[1]))

            def step(values, feed, y, weight, pick):
                grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
                (_, (loss, picked, weight, non_trainable)), grads = grad_fn(
                    values[0], values, feed, y, weight, pick
                )
                trainable, optimizer = model.optimizer.stateless_apply(
                    values[2], grads, values[0]
                )
                with self._scoped(groups, [trainable, non_trainable, optimizer, values[3]]) as s:
                    logs = runner.window_metrics(feed[0], y, picked, weight)
                metrics = self._after(s, groups[3], values[3])
                return (loss, logs), [trainable, non_trainable, optimizer, metrics]

            return step

        names = ("trainable", "non_trainable", "optimizer", "metrics")
        return self._run(
            ("train", many_to_one), names, build, tuple(feed), y, weight, pick
        )

    def test(self, feed, y, weight, pick, many_to_one):
        runner = self.runner

        def build(groups):
            def step(values, feed, y, weight, pick):
                with self._scoped(groups, values) as scope:
                    loss, _, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=False, many_to_one=many_to_one
                    )
                    logs = runner.window_metrics(feed[0], y, picked, weight)
                new = [self._after(scope, g, v) for g, v in zip(groups, values, strict=True)]
                return (loss, logs), new

            return step

        names = ("trainable", "non_trainable", "metrics")
        return self._run(("test", many_to_one), names, build, tuple(feed), y, weight, pick)


def _placed(args: Any) -> Any:
    """The window's arrays (every one has the rows on its first axis) split along the batch
    axis over the devices of the Keras distribution, when one is set: data parallelism, with
    the rows a multiple of the device count (fill lanes, see ``_tbptt_data._FilledWindows``)."""
    dist = keras.distribution.distribution()
    if dist is None:
        return args
    return keras.tree.map_structure(
        lambda a: keras.distribution.distribute_tensor(a, dist.get_data_layout(a.shape)), args)
