"""Truncated backpropagation through time (TBPTT) over long variable-length sequences.

Long sequences are cut into windows of ``window`` steps and fed, window after window, to a
*stateful* Keras RNN whose state carries over from one window to the next; gradients flow back at
most ``window`` steps. :func:`plan_tbptt` (numpy only) decides the layout: sequences are packed one
after another into ``batch_size`` rows, every sequence starts at a window boundary. The executors
here run that plan:

* before each window, the state of exactly the rows that start a new sequence is zeroed
  (``keras.ops.where`` on the RNN layers' state variables; ``layer.reset_state()`` would zero
  all rows);
* a row that is all padding in a window (it has run out of sequences) keeps its state unchanged;
* the model is called as ``model(x, mask=mask)`` with the padding mask, so recurrent layers hold
  their state over padded steps: after each window, every row's state is the state at its last
  real step. Padding only ever follows a sequence's last real step, and the row is reset before
  its next sequence, so even a layer that drops the mask cannot leak padding into a real output
  of a causal model. Losses and metrics are weighted so that padding counts for nothing.

Dense plans (``dense=True``) run one call per window on the model's dense twin
(:mod:`seqprep.running._tbptt_twin`), which resets each row's state at the steps where its sequences
start, inside the call; see :func:`fit_tbptt`.

The window math is ``keras.ops`` and variable assignments, so it runs on TensorFlow, JAX and
PyTorch; only compiling a window step and taking its gradient is done per backend
(``tf.function`` + ``GradientTape``; ``jax.jit`` + ``keras.StatelessScope`` +
``jax.value_and_grad``; eager PyTorch + ``torch.autograd.grad``).

How the model must be built:
    One input of batch shape ``(batch_size, window, *step_shape)`` (or ``None`` for the time
    axis; or one named input per field of a dict ``x`` whose fields share their lengths), one
    output **per time step** (the last recurrent layer has
    ``return_sequences=True``) or, for many-to-one targets, a plain classifier whose last
    recurrent layer has ``return_sequences=False`` (its output for a window is the one at the
    row's last real step), every recurrent layer ``stateful=True`` and running forward in
    time (no ``Bidirectional``, no ``go_backwards``). The model must be causal: the output at
    step ``t`` may depend on steps up to ``t`` only (recurrent, dense and ``TimeDistributed``
    layers are; attention over the window or a centred ``Conv1D`` are not). Compile it with an
    optimizer and a loss as usual; for example::

        inputs = keras.Input(batch_shape=(batch_size, window, d))
        h = keras.layers.LSTM(32, stateful=True, return_sequences=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        model.compile(optimizer="adam", loss="mse")

Targets:
    Many-to-one: ``y`` of shape ``(n, ...)``; the loss of sequence ``i`` uses the output at its
    last real step and is computed in the window where that step falls (so with ``window`` smaller
    than a sequence, the gradient reaches only its last ``window`` steps; earlier steps still act
    through the carried state). Many-to-many: ``y`` a list of ``(T_i, ...)`` arrays, one target
    per step; the loss averages over real steps.

Loss:
    ``model.compute_loss`` (the loss given to ``compile``, plus regularisation losses) with
    sample weights scaled so that each window's loss is the mean over the targets it holds
    (sequences ending in it, or real steps), whatever the batch size and padding. The optimizer
    is ``model.optimizer``. One optimizer step per window that holds a target.

Inputs and dtypes:
    ``x`` and ``y`` are read by the one input stage (:func:`seqprep.inputs._stage.prepare`), as
    in every other executor: floating steps and targets wider than Keras's ``floatx`` become
    it (checked: a value that would overflow raises), but never narrower than float32 (under
    ``float16``/``bfloat16`` float64 data become float32 and float32 data stay float32); every
    other dtype (integer ids, booleans) is kept. NaN/inf are refused in ``x`` unless
    ``allow_nonfinite``, always in ``y``; the targets rule is :func:`seqprep.resolve_targets`;
    padded steps hold 0 and weigh 0.

Files:
    this module is the public loop (:func:`fit_tbptt`, :func:`evaluate_tbptt`,
    :func:`predict_tbptt`); :mod:`~seqprep.running._tbptt_data` reads the data and lays out the
    windows; :mod:`~seqprep.running._tbptt_runner` checks the model and holds the window math;
    ``_tbptt_step_tensorflow`` / ``_jax`` / ``_torch`` compile a window and take its gradient,
    one file per backend (as Keras's ``keras/src/backend/<backend>/trainer.py``).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from seqprep._core.checks import check_bool, check_choice, check_int
from seqprep._core.options import Options, options_for, takes_options
from seqprep.inputs._targets import Targets
from seqprep.planning._windows import (
    ORDERS,
    DenseTBPTTPlan,
    TBPTTPlan,
    WindowOrder,
    plan_tbptt,
)
from seqprep.running._callbacks import refuse_backup_in
from seqprep.running._data_parallel import resolve_data_parallel
from seqprep.running._tbptt_data import (
    _DenseWindows,
    _prepare_data,
    _scatter_windowed,
    _validation_windows,
    _Windows,
    _windows_of,
)
from seqprep.running._tbptt_runner import _TARGETS, _Runner, _runner_and_plans, _runner_for

__all__ = [
    "fit_tbptt", "predict_tbptt", "evaluate_tbptt"
]


def _check_sizes(window: int, batch_size: int) -> tuple[int, int]:
    window = check_int(
        "window",
        window,
        minimum=1,
        fix="If you want no truncation, set `window` to the longest sequence length.",
    )
    return window, check_int("batch_size", batch_size, minimum=1)


def _verbosity(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if isinstance(verbose, str) or not isinstance(verbose, int):
        raise ValueError(
            f"Argument `verbose` must be 'auto', 0, 1 or 2. Received: verbose={verbose!r}"
        )
    return check_choice("verbose", int(verbose), (0, 1, 2))


def _numpy_logs(logs: dict[str, Any]) -> dict[str, float]:
    return {k: float(ops.convert_to_numpy(v)) for k, v in logs.items()}


def _run_epoch(
    runner: _Runner,
    windows: _Windows,
    *,
    training: bool,
    loss_mean: keras.metrics.Mean,
    callbacks: keras.callbacks.CallbackList | None = None,
    progbar: keras.utils.Progbar | None = None,
) -> dict[str, float]:
    """One pass over a plan; returns the epoch logs (loss = mean over all targets)."""
    model = runner.model
    model.reset_metrics()
    loss_mean.reset_state()
    runner.reset_all()
    logs: dict[str, float] = {}
    for w in range(windows.plan.n_windows):
        if callbacks is not None:
            callbacks.on_train_batch_begin(w) if training else callbacks.on_test_batch_begin(w)
        feed = windows.inputs(w)
        n_targets = windows.n_targets(w)
        if n_targets == 0:
            runner.forward(feed, training=training)  # advance the state only
        else:
            y, weight = windows.targets_of(w)
            step = runner.train if training else runner.test
            loss, step_logs = step(
                feed, y, weight, windows.pick(w), many_to_one=windows.many_to_one
            )
            logs = _numpy_logs(step_logs)
            # The targets the loss averaged over: fewer than n_targets where a masking layer
            # masked steps inside a sequence.
            counted = logs.pop(_TARGETS)
            if counted > 0:
                loss_mean.update_state(loss, sample_weight=counted)
        logs["loss"] = float(loss_mean.result())
        if callbacks is not None:
            if training:
                callbacks.on_train_batch_end(w, logs)
            else:
                callbacks.on_test_batch_end(w, logs)
        if progbar is not None:
            progbar.update(w + 1, list(logs.items()))
    return dict(logs)


def _first_call(runner: _Runner, windows: _Windows) -> None:
    """Build loss and metrics eagerly (no variable may be created in a compiled step).

    Once per runner and kind of target: later calls reuse what the first one built.
    """
    runner.check_targets(windows.many_to_one)
    if windows.many_to_one in runner.prepared:
        return
    x, mask, _, _ = keras.tree.map_structure(ops.convert_to_tensor, windows.inputs(0))
    y_pred = runner._call(x, mask, training=False)
    runner.check_output(y_pred)
    y, weight = (ops.convert_to_tensor(a) for a in windows.targets_of(0))
    picked = runner.select(y_pred, ops.convert_to_tensor(windows.pick(0)), windows.many_to_one)
    runner.model.compute_loss(x, y, picked, ops.zeros_like(weight), training=False)
    runner.window_metrics(x, y, picked, ops.zeros_like(weight))
    runner.model.reset_metrics()
    runner.reset_all()
    runner.prepared.add(windows.many_to_one)


#: The arguments of Keras's ``model.fit`` that ``fit_tbptt`` takes through ``**fit_kwargs``,
#: with their defaults.
_FIT_KWARGS: dict[str, Any] = {"validation_data": None, "callbacks": None, "verbose": "auto"}


def _fit_arguments(fit_kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``(validation_data, callbacks, verbose)`` from ``fit_tbptt``'s ``**fit_kwargs``.

    Example:
        >>> _fit_arguments({"verbose": 0})
        (None, None, 0)
        >>> _fit_arguments({"allow_nonfinite": True})
        Traceback (most recent call last):
        ...
        TypeError: `fit_tbptt` takes no argument ['allow_nonfinite'].
        - Pass `options=seqprep.Options(allow_nonfinite=True)` instead of `allow_nonfinite=True`.
    """
    unknown = sorted(set(fit_kwargs) - set(_FIT_KWARGS))
    if unknown:
        if unknown == ["allow_nonfinite"]:
            fix = (f"Pass `options=seqprep.Options(allow_nonfinite="
                   f"{fit_kwargs['allow_nonfinite']!r})` instead of `allow_nonfinite="
                   f"{fit_kwargs['allow_nonfinite']!r}`.")
        else:
            fix = (f"Of Keras fit's arguments `fit_tbptt` takes {', '.join(_FIT_KWARGS)}; "
                   "drop the others (TBPTT plans its own windows and epochs, see "
                   "`seqprep.plan_tbptt`). Rarely set options go in "
                   "`options=seqprep.Options(...)`.")
        raise TypeError(f"`fit_tbptt` takes no argument {unknown}.\n- {fix}")
    given = {**_FIT_KWARGS, **fit_kwargs}
    return given["validation_data"], given["callbacks"], given["verbose"]


def fit_tbptt(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    window: int,
    batch_size: int,
    epochs: int = 1,
    order: WindowOrder = "longest_first",
    seed: int = 0,
    return_sequences: bool | None = None,
    dense: bool = False,
    targets: Targets = "auto",
    options: Options | None = None,
    **fit_kwargs: Any,
) -> keras.callbacks.History:
    """Train a stateful RNN with truncated backpropagation through time.

    Sequences are laid out by :func:`plan_tbptt` (packed into ``batch_size`` rows, cut into
    windows of ``window`` steps, every sequence starting at a window boundary). Each window is one
    compiled step: the state of the rows that start a new sequence is zeroed (the other rows carry
    their state over), the model runs on the window, the loss of the targets that fall in the
    window is minimised with ``model.optimizer``, and rows that were all padding keep their state.
    See the module docstring for how the model must be built.

    Callbacks see one batch per window (``on_train_batch_begin/end(w)``, ``w`` counting windows in
    the epoch) and one epoch per pass; ``logs["loss"]`` is the running mean over targets
    (sequences for many-to-one, real steps for many-to-many), plus the compiled metrics.

    Args:
        model: A compiled stateful Keras model built for ``batch_size``, with per-step outputs
            or (many-to-one only) a last recurrent layer with ``return_sequences=False``.
        x: Sequence collection of ``n`` sequences of shape ``(T_i, *step_shape)``, ``T_i >= 1``;
            or a dict of such collections with equal lengths (fields of one time axis), one
            per model input, named after it (a tuple: by position). Windows cut every field at
            the same steps.
        y: Many-to-one: array of shape ``(n, ...)``. Many-to-many: collection of ``(T_i, ...)``
            arrays.
        window: Steps per window, the truncation length of backpropagation, at least 1.
        batch_size: Rows per window; must be the batch size the model was built for.
        epochs: Passes over the data.
        order: Packing order, see :func:`plan_tbptt`; ``"shuffle"`` draws a new order each
            epoch.
        seed: Seed for ``order="shuffle"``.
        return_sequences: True for many-to-many targets, False for many-to-one (the same as
            ``targets="step"`` / ``"sequence"``). ``None`` leaves it to ``targets``.
        targets: ``"auto"`` (default), ``"sequence"`` (many-to-one) or ``"step"``
            (many-to-many). ``"auto"`` follows :func:`seqprep.resolve_targets`: a numpy array
            is many-to-one, a list of arrays with the lengths of ``x`` (not all equal) is
            many-to-many, and a ``y`` that fits both raises ``ValueError``.
        dense: Lay each row's sequences back to back (``plan_tbptt(..., dense=True)``): a
            sequence starts right after the previous one of its row, inside a window, so no
            window pads a sequence's tail. Each window is then one model call on the model's
            *dense twin*: the model rebuilt with ``keras.models.clone_model`` with every
            stateful recurrent layer replaced by a scan over the same cell that zeroes a
            row's state at each step where a sequence starts (all other layers and all
            weights are the model's own, so training the twin trains the model). The twin
            needs SimpleRNN/GRU/LSTM cells (or ``keras.layers.RNN`` of one) without
            ``return_state``, and, after a last recurrent layer with
            ``return_sequences=False``, only layers that act per step (``Dense``,
            ``Dropout``, activations, ``LayerNormalization``...). Otherwise (a subclassed
            model, another cell, e.g. a ``BatchNormalization`` after the recurrent layer) it
            warns and falls back to several model calls per window, split where any row
            starts a sequence (:meth:`DenseTBPTTPlan.as_calls`; each call one optimizer step,
            backpropagation also truncated there): exact, but slower than the windowed plan.
            Cell ``dropout``/``recurrent_dropout`` is refused with ``dense=True``.
        options: :class:`seqprep.Options`; ``fit_tbptt`` reads ``allow_nonfinite`` (accept
            NaN/inf in ``x``; refused by default; NaN/inf in ``y`` are always refused) and
            ``data_parallel`` (``"auto"``: the ``keras.distribution`` layout; an int ``k``;
            None): with ``k`` devices along the batch axis every window has ``batch_size``
            rounded up to a multiple of ``k`` rows (the model's batch size), the extra rows
            fill lanes of weight 0, and the windows are split over the devices. Any other
            option set is an error.
        **fit_kwargs: The arguments of Keras's ``model.fit`` that ``fit_tbptt`` also takes,
            meaning what they mean there; any other key is a ``TypeError`` naming it.

            * ``validation_data``: ``(x_val, y_val)``, evaluated as by :func:`evaluate_tbptt`
              after every epoch; logged as ``val_loss`` and ``val_<metric>``.
            * ``callbacks``: a list of Keras callbacks.
            * ``verbose``: ``"auto"`` (the default, = 1) or 1 for a progress bar, 2 for one
              line per epoch, 0 for silence.

    Returns:
        The Keras ``History`` of the run.

    Raises:
        ValueError: If ``window`` or ``batch_size`` is below 1, the model is not stateful, is
            bidirectional, was built for another batch size or window, does not return per-step
            outputs (or one output per row, for a plain classifier) or is not compiled, or
            ``y`` does not match ``x`` (per-step targets need per-step outputs), or
            ``dense=True`` with cell dropout.
        TypeError: If ``model`` is not a Keras model, an argument has the wrong type, or
            ``fit_kwargs`` holds a key other than ``validation_data``, ``callbacks`` and
            ``verbose``.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 4, 1))
        >>> h = keras.layers.SimpleRNN(3, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = [np.ones((n, 1), "float32") for n in (9, 3, 5)]
        >>> history = fit_tbptt(model, x, np.array([1.0, 0.0, 1.0]), window=4, batch_size=2,
        ...                     epochs=2, verbose=0)
        >>> len(history.history["loss"])
        2
    """
    opts = options_for(options, "fit_tbptt", reads=("allow_nonfinite", "data_parallel"))
    allow_nonfinite = opts.allow_nonfinite
    validation_data, callbacks, verbose = _fit_arguments(fit_kwargs)
    window, batch_size = _check_sizes(window, batch_size)
    epochs = check_int("epochs", epochs, minimum=1)
    check_choice("order", order, ORDERS)
    seed = check_int("seed", seed)
    verbose = _verbosity(verbose)
    refuse_backup_in(callbacks, "fit_tbptt")  # no exact resume of windows and states yet
    data, targets, many_to_one = _prepare_data(
        x, y, return_sequences=return_sequences, need_y=True, targets=targets,
        allow_nonfinite=allow_nonfinite,
    )
    rows = _rows(model, batch_size, opts.data_parallel, "fit_tbptt")
    runner = _runner_for(model, window=window, batch_size=rows, data=data)
    validation = None
    if validation_data is not None:
        validation = _validation_windows(validation_data, runner, many_to_one, allow_nonfinite,
                                         batch_size)
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError(
            "Argument `model` must be compiled before training: "
            "`model.compile(optimizer=..., loss=...)`."
        )
    dense = check_bool("dense", dense)
    plans = [
        _plan(
            data.lengths, window, batch_size, dense, order=order, seed=seed,
            epoch=epoch if order == "shuffle" else 0,
        )
        for epoch in range(epochs if order == "shuffle" else 1)
    ]
    run, plans = _runner_and_plans(runner, plans)
    steps = {plan.n_windows for plan in plans}
    _first_call(run, _windows_of(plans[0], data, targets, many_to_one, rows))
    if validation is not None:
        _first_call(runner, validation)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=epochs,
        steps=steps.pop() if len(steps) == 1 else None,
    )
    loss_mean = keras.metrics.Mean(name="loss")
    model.stop_training = False
    callback_list.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(epochs):
        windows = _windows_of(plans[epoch % len(plans)], data, targets, many_to_one, rows)
        callback_list.on_epoch_begin(epoch)
        logs = _run_epoch(
            run, windows, training=True, loss_mean=loss_mean, callbacks=callback_list
        )
        if validation is not None:
            val = _run_epoch(runner, validation, training=False, loss_mean=loss_mean)
            logs.update({f"val_{k}": v for k, v in val.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    runner.reset_all()
    history = model.history
    return history


def _plan(
    lengths: np.ndarray, window: int, batch_size: int, dense: bool, **kwargs: Any
) -> TBPTTPlan | DenseTBPTTPlan:
    return plan_tbptt(lengths, window=window, batch_size=batch_size, dense=dense, **kwargs)


def _rows(model: Any, batch_size: int, data_parallel: Any, caller: str) -> int:
    """The rows of every window: ``batch_size`` (the plan's lanes), or, under data parallelism
    over ``k`` devices along the batch axis, ``batch_size`` rounded up to a multiple of ``k``:
    the extra rows are fill lanes of weight 0 (see :class:`_FilledWindows`), so training
    equals the one-device run of the same plan. The model must be built for that many rows."""
    layout = resolve_data_parallel(data_parallel, caller=caller)
    if layout is None:
        return batch_size
    if layout.num_processes > 1:
        raise ValueError(
            f"`{caller}` runs data-parallel over the devices of one process, but the Keras "
            f"distribution spans {layout.num_processes} processes.\n- Run TBPTT in one "
            "process, or train on whole sequences with `seqprep.bucketed_dataset` or "
            "`seqprep.fit_per_length`, which shard their plan over processes."
        )
    k = layout.size
    rows = -(-batch_size // k) * k
    inputs = getattr(model, "inputs", None) or [None]
    built = getattr(inputs[0], "shape", (None,))[0]
    if rows != batch_size and built is not None and built != rows:
        raise ValueError(
            f"Argument `model` must be built for {rows} rows: `{caller}` runs "
            f"batch_size={batch_size} lanes on {k} devices along the batch axis, so every "
            f"window holds {rows} rows ({rows - batch_size} fill lanes of weight 0). Received a "
            f"model built for {built} rows\n- Build the model for batch size {rows} "
            f"(`keras.Input(batch_shape=({rows}, window, d))`), or pass a `batch_size` that is "
            f"a multiple of {k}; to run every window whole on each device, pass "
            "`options=seqprep.Options(data_parallel=None)`."
        )
    return rows


@takes_options
def evaluate_tbptt(
    model: keras.Model,
    x: Any,
    y: Any,
    *,
    window: int,
    batch_size: int,
    return_sequences: bool | None = None,
    return_dict: bool = False,
    verbose: int | str = 0,
    dense: bool = False,
    targets: Targets = "auto",
    options: Options | None = None,
) -> float | dict[str, float]:
    """Loss (and compiled metrics) of a stateful RNN over long sequences, window by window.

    Runs the same plan and state handling as :func:`fit_tbptt` without updating weights. The loss
    is the mean over all targets (sequences for many-to-one, real steps for many-to-many).

    Args:
        model: A compiled stateful Keras model built for ``batch_size`` (per-step outputs, or a
            plain classifier for many-to-one targets).
        x: Sequence collection of ``n`` sequences, each at least one step long.
        y: Targets, as for :func:`fit_tbptt`.
        window: Steps per window, at least 1.
        batch_size: Rows per window; must be the batch size the model was built for.
        return_sequences: Many-to-many (True) or many-to-one (False); ``None`` leaves it to
            ``targets``.
        return_dict: Return ``{"loss": ..., <metric>: ...}`` instead of the loss alone.
        verbose: 1 (or ``"auto"``) for a progress bar, 0 for silence.
        dense: Run the dense plan, as in :func:`fit_tbptt` (same result; one model call per
            window on the dense twin, or the fallback).
        targets: ``"auto"``, ``"sequence"`` or ``"step"``, as in :func:`fit_tbptt`.
        options: :class:`seqprep.Options`; ``evaluate_tbptt`` reads ``allow_nonfinite``
            (accept NaN/inf in ``x``; refused by default; NaN/inf in ``y`` are always
            refused) and ``data_parallel``, as :func:`fit_tbptt` does. Any other option set
            is an error.

    Returns:
        The loss as a float, or a dict of the loss and metrics.

    Raises:
        ValueError: As for :func:`fit_tbptt`.
        TypeError: As for :func:`fit_tbptt`, or an option passed as a keyword
            (``allow_nonfinite=True``: pass ``options=seqprep.Options(allow_nonfinite=True)``).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 4, 1))
        >>> h = keras.layers.GRU(2, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(1)(h))
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> x = [np.ones((n, 1), "float32") for n in (6, 3, 2)]
        >>> loss = evaluate_tbptt(model, x, np.zeros(3), window=4, batch_size=2)
        >>> loss >= 0.0
        True
    """
    opts = options_for(options, "evaluate_tbptt", reads=("allow_nonfinite", "data_parallel"))
    allow_nonfinite = opts.allow_nonfinite
    window, batch_size = _check_sizes(window, batch_size)
    verbose = _verbosity(verbose)
    data, targets, many_to_one = _prepare_data(
        x, y, return_sequences=return_sequences, need_y=True, targets=targets,
        allow_nonfinite=allow_nonfinite,
    )
    rows = _rows(model, batch_size, opts.data_parallel, "evaluate_tbptt")
    runner = _runner_for(model, window=window, batch_size=rows, data=data)
    if getattr(model, "loss", None) is None and not model.losses:
        raise ValueError(
            "Argument `model` must be compiled with a loss: `model.compile(loss=...)`."
        )
    run, (plan,) = _runner_and_plans(
        runner, [_plan(data.lengths, window, batch_size, check_bool("dense", dense))]
    )
    windows = _windows_of(plan, data, targets, many_to_one, rows)
    _first_call(run, windows)
    progbar = keras.utils.Progbar(plan.n_windows, verbose=verbose) if verbose else None
    logs = _run_epoch(
        run, windows, training=False, loss_mean=keras.metrics.Mean(name="loss"),
        progbar=progbar,
    )
    runner.reset_all()
    return logs if return_dict else logs["loss"]


@takes_options
def predict_tbptt(
    model: keras.Model,
    x: Any,
    *,
    window: int,
    batch_size: int,
    return_sequences: bool = False,
    verbose: int | str = 0,
    dense: bool = False,
    options: Options | None = None,
) -> np.ndarray | list[np.ndarray]:
    """Outputs of a stateful RNN over long sequences, carrying state across windows.

    For a many-to-one model (``return_sequences=False``) the result is the output at each
    sequence's last real step, one row per input sequence in input order: within float tolerance
    the same as a non-stateful twin of the model (same weights) run on each whole sequence. With
    ``return_sequences=True`` it is the list of per-step outputs, one ``(T_i, ...)`` array per
    sequence.

    Args:
        model: A stateful Keras model built for ``batch_size`` (it need not be compiled), with
            per-step outputs or a last recurrent layer with ``return_sequences=False`` (then
            only ``return_sequences=False`` here).
        x: Sequence collection of ``n`` sequences, each at least one step long.
        window: Steps per window, at least 1. Any window gives the same outputs; larger windows
            make fewer, bigger model calls.
        batch_size: Rows per window; must be the batch size the model was built for.
        return_sequences: Return every step's output instead of the last step's.
        verbose: 1 (or ``"auto"``) for a progress bar, 0 for silence.
        dense: Run the dense plan, as in :func:`fit_tbptt` (same outputs; one model call per
            window on the dense twin, or the fallback).
        options: :class:`seqprep.Options`; ``predict_tbptt`` reads ``allow_nonfinite``
            (accept NaN/inf in ``x``; refused by default, as by :func:`fit_tbptt`: a NaN
            input makes NaN outputs) and ``data_parallel``, as :func:`fit_tbptt` does. Any
            other option set is an error.

    Returns:
        ndarray of shape ``(n, ...)``, or a list of ``n`` arrays of shape ``(T_i, ...)``.

    Raises:
        ValueError: As for :func:`fit_tbptt`.
        TypeError: As for :func:`fit_tbptt`, or an option passed as a keyword
            (``allow_nonfinite=True``: pass ``options=seqprep.Options(allow_nonfinite=True)``).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input(batch_shape=(2, 3, 1))
        >>> h = keras.layers.LSTM(2, stateful=True, return_sequences=True)(inputs)
        >>> model = keras.Model(inputs, h)
        >>> x = [np.ones((n, 1), "float32") for n in (7, 2, 4)]
        >>> predict_tbptt(model, x, window=3, batch_size=2).shape
        (3, 2)
        >>> [a.shape for a in predict_tbptt(model, x, window=3, batch_size=2,
        ...                                 return_sequences=True)]
        [(7, 2), (2, 2), (4, 2)]
        >>> dense = predict_tbptt(model, x, window=3, batch_size=2, dense=True)  # back to back
        >>> bool(np.allclose(dense, predict_tbptt(model, x, window=3, batch_size=2), atol=1e-5))
        True
        >>> from seqprep.models import reference_rnn  # a plain classifier works too
        >>> clf = reference_rnn(input_dim=1, num_classes=4, units=2, stateful=True, batch_size=2)
        >>> predict_tbptt(clf, x, window=3, batch_size=2).shape
        (3, 4)
    """
    opts = options_for(options, "predict_tbptt", reads=("allow_nonfinite", "data_parallel"))
    allow_nonfinite = opts.allow_nonfinite
    verbose = _verbosity(verbose)
    check_bool("return_sequences", return_sequences)
    window, batch_size = _check_sizes(window, batch_size)
    data, _, _ = _prepare_data(x, None, return_sequences=return_sequences, need_y=False,
                               allow_nonfinite=allow_nonfinite)
    rows = _rows(model, batch_size, opts.data_parallel, "predict_tbptt")
    runner = _runner_for(model, window=window, batch_size=rows, data=data)
    if return_sequences and runner.per_window:
        raise ValueError(
            "Argument `return_sequences=True` needs a model with per-step outputs, but the "
            "model's last recurrent layer has `return_sequences=False`.\n- If you want each "
            "sequence's last output, pass `return_sequences=False`."
        )
    run, (plan,) = _runner_and_plans(
        runner, [_plan(data.lengths, window, batch_size, check_bool("dense", dense))]
    )
    filled = _windows_of(plan, data, None, not return_sequences, rows)
    windows = getattr(filled, "windows", filled)  # the plan's own rows, for the scatter
    runner.reset_all()
    progbar = keras.utils.Progbar(plan.n_windows, verbose=verbose) if verbose else None
    outputs: np.ndarray | None = None
    per_row = run.per_window and run is runner  # one output per row, not per step
    for w in range(plan.n_windows):
        y_pred = ops.convert_to_numpy(run.forward(filled.inputs(w)))
        if w == 0:
            run.check_output(y_pred)
            size = plan.num_sequences if not return_sequences else plan.real_steps
            outputs = np.empty((size, *y_pred.shape[1 if per_row else 2 :]), y_pred.dtype)
        y_pred = y_pred[: plan.batch_size]  # without the fill lanes
        if isinstance(windows, _DenseWindows):
            windows.scatter(w, y_pred, outputs, per_step=return_sequences)
        else:
            _scatter_windowed(windows, w, y_pred, outputs, return_sequences, per_row)
        if progbar is not None:
            progbar.update(w + 1)
    runner.reset_all()
    if return_sequences:
        return [outputs[a:b] for a, b in zip(data.offsets[:-1], data.offsets[1:], strict=True)]
    return outputs
