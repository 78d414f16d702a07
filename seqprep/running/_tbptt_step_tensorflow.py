"""TBPTT's window steps on the TensorFlow backend: ``tf.function`` + ``tf.GradientTape``.

One of three files, one per backend (``_tbptt_step_jax``, ``_tbptt_step_torch``), as Keras keeps
each backend's train step in ``keras/src/backend/<backend>/trainer.py``. Each offers the same
``forward`` / ``train`` / ``test`` over the backend-neutral window math of a runner
(:class:`seqprep.running._tbptt_runner._Runner`); only compiling that math and taking its
gradient differ. :func:`seqprep.running._tbptt_runner._steps_for` picks the file by
``keras.backend.backend()``, so the loop never branches on the backend.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["_TFSteps"]


class _TFSteps:
    """``tf.function`` steps; gradients with ``tf.GradientTape``."""

    def __init__(self, runner: Any) -> None:  # a _tbptt_runner._Runner
        self.runner = runner
        self._compiled: dict[tuple[str, bool], Any] = {}

    def _tensors(self, *arrays: Any) -> list[Any]:
        # numpy arguments would make tf.function retrace for every new value
        return tf.nest.map_structure(tf.convert_to_tensor, list(arrays))

    def forward(self, feed, training):
        key = ("forward", training)
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                lambda x, mask, reset, idle: self.runner.run_window(x, mask, reset, idle, training)
            )
        return self._compiled[key](*self._tensors(*feed))

    def train(self, feed, y, weight, pick, many_to_one):
        key = ("train", many_to_one)
        if key not in self._compiled:
            runner, model = self.runner, self.runner.model

            def step(feed, y, weight, pick):
                with tf.GradientTape() as tape:
                    loss, scaled, picked, weight = runner.window_loss(
                        feed, y, weight, pick, training=True, many_to_one=many_to_one
                    )
                variables = model.trainable_variables
                gradients = tape.gradient(scaled, variables)
                model.optimizer.apply_gradients(zip(gradients, variables, strict=True))
                return loss, runner.window_metrics(feed[0], y, picked, weight)

            self._compiled[key] = tf.function(step)
        return self._compiled[key](*self._tensors(feed, y, weight, pick))

    def test(self, feed, y, weight, pick, many_to_one):
        key = ("test", many_to_one)
        if key not in self._compiled:
            runner = self.runner

            def step(feed, y, weight, pick):
                loss, _, picked, weight = runner.window_loss(
                    feed, y, weight, pick, training=False, many_to_one=many_to_one
                )
                return loss, runner.window_metrics(feed[0], y, picked, weight)

            self._compiled[key] = tf.function(step)
        return self._compiled[key](*self._tensors(feed, y, weight, pick))
