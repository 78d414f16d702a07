"""Inference in input order: :func:`predict` and :func:`evaluate`.

``model.predict(seqprep.bucketed_dataset(x, sampler=s))`` returns rows in the sampler's plan
order, not in the order of ``x``, and per-step outputs come back padded. :func:`predict`
plans its own batches for inference (sorted by length, no shuffle, sized by a token budget;
see :mod:`seqprep.planning._inference`), runs them through the model's own predict step
(``model.predict_on_batch``) and puts every output back where its sequence was: an array for
per-sequence outputs, one unpadded array per sequence (or a ``tf.RaggedTensor``) for per-step
outputs. :func:`evaluate` runs the same batches through the compiled loss and metrics and
accumulates them so that the result is the one-batch value over all real examples and steps.

Other kinds of model go to their own runner: a model with stateful recurrent layers to
:func:`seqprep.predict_tbptt` / :func:`seqprep.evaluate_tbptt`, a
:class:`~seqprep.LengthEnsemble` to its own ``predict`` / ``evaluate``. A model built on
:class:`seqprep.layers.PackedRNN` is fed one sequence per packed row (segment id 1 on its
steps), which is exactly the unpacked computation with the same weights.

Under a ``keras.distribution`` layout each batch gets fill rows up to a multiple of the devices
along the batch axis (:mod:`seqprep.planning._fill`), left out of every output. Over several
``jax.distributed`` processes every process plans the same global batches (checked), gives
the model its contiguous rows of each, as Keras's JAX trainer gives a per-process batch
(``jax.make_array_from_process_local_data``), keeps its own rows of the global outputs
(``model.predict_on_batch`` cannot bring a global array to numpy, so the same stateless predict
call runs), and sends only its real rows and their input indices to every other process
(``jax.experimental.multihost_utils.process_allgather``): every process returns the whole
result.

Everything here goes through public Keras APIs (``predict_on_batch``, ``compute_loss``,
``compute_metrics``, ``stateless_call``) plus
:func:`seqprep.running._keras_private.keras_mask`, so it runs on TensorFlow, JAX and PyTorch.
TensorFlow is imported only for ``ragged=True``.

The code: :func:`predict` here; the fields, model checks and planned batches that both share
in :mod:`._inference_batches`; the outputs put back in order in :mod:`._inference_outputs`;
:func:`evaluate` in :mod:`._inference_evaluate`.
"""

from __future__ import annotations

import warnings
from typing import Any

import keras
import numpy as np

from seqprep._core.checks import check_bool
from seqprep._core.options import Options
from seqprep.inputs._padding import Side
from seqprep.running._inference_batches import (
    DEFAULT_MAX_TOKENS,
    PadTo,
    _Batches,
    _callback_list,
    _check_model_inputs,
    _fields,
    _filled,
    _forward_of,
    _last_rnn_returns_sequences,
    _model_kind,
    _packed_returns_sequences,
    _plan,
    _refuse_processes,
    _run_arguments,
    _stateful_sizes,
)
from seqprep.running._inference_outputs import (
    Outputs,
    _assemble,
    _delegated,
    _gather_batches,
    _output_structure,
)

__all__ = ["predict"]


def _run_predict(model: Any, batches: _Batches, callbacks: Any) -> list[list[np.ndarray]]:
    """Every batch's outputs, flattened (one list of leaves per batch; real rows only, this
    process's under several processes), with Keras's predict callbacks and progress bar.

    One process runs Keras's own ``model.predict_on_batch``; under several processes, whose
    outputs are global arrays that ``predict_on_batch`` cannot bring to numpy, the same
    stateless predict call runs and each process keeps its own rows."""
    forward = _forward_of(model) if batches.processes > 1 else None
    outs = []
    callbacks.on_predict_begin()
    for b in range(len(batches)):
        callbacks.on_predict_batch_begin(b)
        _, xb = batches.inputs(b)
        with warnings.catch_warnings():
            # Keras warns per call that a structure of inputs does not match the model's
            # declared structure when a dict arrives for a list of named inputs; names match.
            warnings.filterwarnings("ignore", message=".*does not match the expected structure")
            if forward is None:
                pred = model.predict_on_batch(xb)
                leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(pred)]
            else:
                leaves, _, structure = forward(xb)
                pred = keras.tree.pack_sequence_as(structure, leaves)
        real = batches.real_rows(b)  # fill rows (data parallelism) come after the real rows
        outs.append([leaf[:real] for leaf in leaves])
        callbacks.on_predict_batch_end(b, {"outputs": pred})
    callbacks.on_predict_end()
    return outs


def predict(
    model: Any,
    x: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    padding: Side = "post",
    value: Any = 0,
    pad_to: PadTo | int = "auto",
    outputs: Outputs | str = "auto",
    ragged: bool = False,
    window: int | None = None,
    options: Options | None = None,
    **kwargs: Any,
) -> Any:
    """The model's outputs for every sequence of ``x``, in the order of ``x``.

    Batches are planned for inference: sequences sorted by length, no shuffle, each batch as
    many rows as fit ``max_tokens`` padded steps (at most ``batch_size``), so short sequences
    go in large batches. Each batch is padded like :func:`seqprep.bucketed_dataset` pads it
    and run through the model's own predict step (``model.predict_on_batch``), then every
    output goes back to its sequence's position. ``model.predict`` on a
    :func:`seqprep.bucketed_dataset` returns rows in the sampler's plan order instead.

    What comes back, per output of the model (a structure of outputs keeps its structure):

    * one output per sequence, ``(B, ...)``: an array ``(n, ...)``, row ``i`` for ``x[i]``;
    * one output per step, ``(B, T, ...)`` with ``T`` the batch's padded width: a list of
      ``n`` arrays ``(T_i, ...)``, the padding cut off (a ``tf.RaggedTensor`` of shape
      ``(n, None, ...)`` with ``ragged=True``). The rule (``outputs="auto"``): an output is
      per step when its axis 1 equals the padded width in every batch and, if every batch had
      the same width, the model declares that axis as its input's time axis.

    Widths (``pad_to="auto"``): each batch's longest sequence on TensorFlow and PyTorch; on
    JAX (and TensorFlow with ``jit_compile=True``), which compile one program per shape, the
    smallest of at most 16 widths chosen for these lengths (:func:`seqprep.width_grid`'s
    rule). A model whose input declares a time axis gets that width.

    Other models: a model with stateful recurrent layers runs through
    :func:`seqprep.predict_tbptt` (its batch size, ``window`` steps at a time); a
    :class:`seqprep.LengthEnsemble` through its own ``predict``; a model built on
    :class:`seqprep.layers.PackedRNN` gets one sequence per packed row, which computes what
    the unpacked layer computes, with the same weights.

    Args:
        model: a Keras model (compiled or not), or a :class:`seqprep.LengthEnsemble`.
        x: a sequence collection (list of ``(T_i, ...)`` arrays or lists, ``tf.RaggedTensor``,
            pandas Series of arrays, array ``(n, T, ...)``), or a dict of them, one per named
            model input, or a tuple of them, one per input in order (each field padded to its
            own width; the structure rule is :func:`seqprep.inputs._stage_fields.split_fields`'s).
        batch_size: the most rows per batch (None: only the token budget limits rows).
        max_tokens: padded steps per batch, rows x width summed over the fields. A sequence
            longer than the budget runs in a batch of its own.
        padding: ``"post"`` (default) or ``"pre"``, as the model was trained.
        value: padding value of the inputs.
        pad_to: ``"auto"``, ``"batch"`` (each batch's longest, also on JAX) or one int width
            for every batch.
        outputs: ``"auto"``, ``"sequence"``, ``"step"``, or the name of the field of a dict
            ``x`` whose steps the per-step outputs follow.
        ragged: return per-step outputs as a ``tf.RaggedTensor`` (imports TensorFlow).
        window: stateful models only: steps per window (default: the model's time axis, or
            the longest sequence within ``max_tokens``).
        options: :class:`seqprep.Options`; read: ``dtype`` (of the input batches; default:
            integers keep theirs, floats wider than Keras's ``floatx`` (at least float32)
            become it; a dict gives one per field of a dict ``x``), ``allow_nonfinite``
            (accept NaN/inf inputs, refused by default) and ``data_parallel`` (``"auto"``:
            under a ``keras.distribution`` layout every batch gets fill rows up to a multiple
            of the devices along the batch axis and is laid out over them; the fill rows are
            in no output; an int ``k`` fills for ``k`` devices; None never fills). Under a
            layout over several ``jax.distributed`` processes, call it with the same whole
            ``x`` on every process: each process runs its contiguous rows of every global
            batch (the same batches and widths everywhere) and every process returns the
            whole result (the distribution must have ``auto_shard_dataset=False``).
        **kwargs: Keras's own ``predict`` arguments, as ``model.predict`` takes them:
            ``verbose`` (``"auto"`` or 1: progress bar, 0: silent, 2: one line) and
            ``callbacks`` (Keras callbacks; they get ``on_predict_*`` calls as in
            ``model.predict``). Any other key is refused.

    Returns:
        For a single-output model, an array ``(n, ...)`` or a list of ``n`` arrays (or a
        ``tf.RaggedTensor``); for several outputs, the same structure as the model's outputs
        holding one of those each.

    Raises:
        ValueError: ``x`` does not match the model's inputs (count or names), fields of
            different counts, bad ``batch_size``/``max_tokens``/``padding``/``pad_to``/
            ``outputs``, NaN/inf inputs, a sequence longer than the model's fixed time axis,
            or outputs that are neither per sequence nor per step.
        TypeError: ``model`` is not a Keras model or a LengthEnsemble, ``x`` is not a
            sequence collection, or ``kwargs`` holds a key other than ``verbose`` and
            ``callbacks``.

    Example:
        >>> import keras, numpy as np
        >>> import seqprep as sp
        >>> inputs = keras.Input((None, 2))
        >>> steps = keras.layers.GRU(3, return_sequences=True)(keras.layers.Masking()(inputs))
        >>> model = keras.Model(inputs, [keras.layers.GlobalAveragePooling1D()(steps), steps])
        >>> x = [np.ones((n, 2), "float32") for n in (4, 1, 3)]
        >>> pooled, per_step = sp.predict(model, x, verbose=0)
        >>> pooled.shape, [a.shape for a in per_step]
        ((3, 3), [(4, 3), (1, 3), (3, 3)])
        >>> padded = sp.pad_sequences(x, padding="post", dtype="float32")
        >>> bool(np.allclose(pooled, model.predict(padded, verbose=0)[0], atol=1e-5))
        True
    """
    batch_size, max_tokens, verbose, callbacks, opts = _run_arguments(
        "predict", batch_size, max_tokens, padding, outputs, options, kwargs)
    check_bool("ragged", ragged)
    kind = _model_kind(model)
    if kind == "ensemble":
        _refuse_processes(opts.data_parallel, "predict")
        return _delegated(model.predict(x, batch_size=batch_size or 256), ragged)
    if kind == "stateful":
        rows, window = _stateful_sizes(model, x, window, max_tokens)
        per_step = {"step": True, "sequence": False}.get(outputs)
        if per_step is None:
            per_step = _last_rnn_returns_sequences(model)
        from seqprep.running._tbptt import predict_tbptt

        result = predict_tbptt(model, x, window=window, batch_size=rows,
                               return_sequences=per_step, verbose=verbose)
        return _delegated(result, ragged)
    fields = _fields(x, opts.dtype, value, opts.allow_nonfinite)
    packed = model if kind == "packed" else None
    if packed is not None and fields.keyed:
        raise ValueError(
            "Argument `x` is a dict, but a PackedRNN model takes one sequence collection (the "
            f"packed values). Received fields {list(fields.names)}\n- Pass the sequences alone."
        )
    if packed is None:
        _check_model_inputs(model, fields)
    plan = _plan(fields, model, max_tokens=max_tokens, batch_size=batch_size, pad_to=pad_to)
    fields, filled, layout = _filled(fields, plan, opts.data_parallel, "predict")
    batches = _Batches(fields, filled, padding, packed, layout)
    outs = _run_predict(model, batches, _callback_list(model, callbacks, verbose, len(plan)))
    if batches.processes > 1:  # every process's real rows, on every process, in plan order
        idxs = [filled.batch(b)[: batches.real_rows(b)] for b in range(len(batches))]
        outs = _gather_batches(outs, idxs, plan, batches.processes)
    slot_axis = packed is not None and not _packed_returns_sequences(model)
    leaves = _assemble(outs, plan, fields, padding, outputs, model, ragged, slot_axis)
    structure = _output_structure(model, len(leaves))
    if structure is None:
        return leaves[0] if len(leaves) == 1 else leaves
    return keras.tree.pack_sequence_as(structure, leaves)
