"""The reference RNN for post-padded variable-length batches, and its compile step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int, check_one_of

__all__ = ["compile_reference", "feature_stats", "reference_rnn"]

Cell = Literal["lstm", "gru", "simple"]

_CELLS = {"lstm": "LSTM", "gru": "GRU", "simple": "SimpleRNN"}


def _check_float(name: str, value: Any, low: float, high: float, *, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(
            f"Argument `{name}` must be a number. Received: {name}={value!r}\n"
            f"- Pass a float, e.g. {name}={low if np.isfinite(low) else 0.0}."
        )
    value = float(value)
    if not (low <= value and (value < high if high_open else value <= high)):
        bracket = ")" if high_open else "]"
        raise ValueError(
            f"Argument `{name}` must be in [{low}, {high}{bracket}. Received: {name}={value!r}\n"
            f"- Pass a value in that range."
        )
    return value


def _standardize_stats(standardize: Any, input_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, variance)`` float arrays of shape ``(input_dim,)`` from a ``(mean, std)`` pair."""
    if not isinstance(standardize, (tuple, list)) or len(standardize) != 2:
        raise TypeError(
            "Argument `standardize` must be a pair (mean, std) of per-feature arrays. "
            f"Received: standardize of type {type(standardize).__name__}\n"
            "- If you have training sequences `x`, pass "
            "`seqprep.models.feature_stats(x)`."
        )
    mean, std = (np.asarray(part, dtype=np.float64).reshape(-1) for part in standardize)
    for label, part in (("mean", mean), ("std", std)):
        if part.shape != (input_dim,):
            raise ValueError(
                f"Argument `standardize` must hold a {label} of shape ({input_dim},) to match "
                f"`input_dim`={input_dim}. Received shape {part.shape}"
            )
        if not np.isfinite(part).all():
            raise ValueError(f"Argument `standardize` has a non-finite {label}.")
    if (std <= 0).any():
        bad = np.flatnonzero(std <= 0)[:5].tolist()
        raise ValueError(
            f"Argument `standardize` has a non-positive std for features {bad}.\n"
            "- If a feature is constant in the training data, drop it or use std 1 for it."
        )
    return mean, std**2


def feature_stats(sequences: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation over every real step of some sequences.

    Use on the *training* sequences only and pass the result as ``standardize=`` to
    :func:`reference_rnn`; padding never enters the statistics. A constant feature gets
    std 1 (so standardising leaves it centred rather than dividing by zero).

    Args:
        sequences: a list of ``(T_i, d)`` arrays (any sequence collection of 2-D steps).

    Returns:
        ``(mean, std)``, two float32 arrays of shape ``(d,)``.

    Raises:
        ValueError: the sequences are not 2-D or hold no step at all.

    Example:
        >>> mean, std = feature_stats([np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[2.0, 5.0]])])
        >>> mean.tolist(), [round(float(s), 3) for s in std]
        ([2.0, 5.0], [0.816, 1.0])
    """
    from seqprep._core.ragged import as_ragged

    values = np.asarray(as_ragged(sequences).values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(
            "Argument `sequences` must hold 2-D sequences of shape (T_i, d). Received steps "
            f"of shape {values.shape[1:]}"
        )
    if len(values) == 0:
        raise ValueError("Argument `sequences` holds no time step, so there is nothing to average.")
    std = values.std(axis=0)
    std[std == 0] = 1.0
    return values.mean(axis=0).astype(np.float32), std.astype(np.float32)


def reference_rnn(
    *,
    input_dim: int | None = None,
    vocab_size: int | None = None,
    num_classes: int | None = None,
    cell: Cell = "lstm",
    units: int = 64,
    mask: bool = True,
    bidirectional: bool = False,
    return_sequences: bool = False,
    stateful: bool = False,
    batch_size: int | None = None,
    output_dim: int = 1,
    embedding_dim: int = 32,
    mask_value: float = 0.0,
    standardize: tuple[Any, Any] | None = None,
    dropout: float = 0.0,
    num_layers: int = 1,
    seed: int | None = None,
    name: str = "reference_rnn",
    packed: bool = False,
) -> keras.Model:
    """Build a small recurrent model for post-padded variable-length batches.

    Input is either integer tokens (pass ``vocab_size``: ``Embedding(mask_zero=True)``, so
    token id 0 is padding and real tokens are ``1..vocab_size-1``) or real-valued frames
    (pass ``input_dim``: ``Masking(mask_value)``, so a step whose every feature equals
    ``mask_value`` is padding). Then one or more recurrent layers (``cell`` ``"lstm"``,
    ``"gru"`` or ``"simple"``, optionally bidirectional) and a ``Dense`` head:

    - many-to-one (``return_sequences=False``): the output after each sequence's last *real*
      step feeds ``Dense(num_classes, softmax)``, or ``Dense(output_dim)`` for regression when
      ``num_classes`` is None;
    - many-to-many (``return_sequences=True``): the same head at every step, shape
      ``(batch, T, num_classes or output_dim)``. The mask travels with the output, and
      :func:`compile_reference` compiles the loss with ``reduction="mean_with_sample_weight"``
      so the loss is the mean over real steps only; pass ``seqprep.sequence_weights(lengths)``
      (0/1) as ``sample_weight`` too if your Keras version stops propagating RNN masks
      (keras-team/keras#23235): the result is the same mean either way.

    **cuDNN.** By default the model stays on the configuration for which Keras runs LSTM/GRU
    with the fused cuDNN kernel on a GPU: default activations (``tanh``/``sigmoid``),
    ``recurrent_dropout=0``, ``unroll=False``, ``use_bias=True`` (and ``reset_after=True`` for
    GRU), with a mask that must be *right-padded*: feed it ``padding="post"`` batches (check
    with :func:`seqprep.check_cudnn_mask`). Pre-padded input or an all-padding row silently
    loses the fast kernel or fails. ``dropout`` (on the inputs) keeps eligibility;
    ``"simple"`` cells have no cuDNN kernel. On a CPU nothing changes but speed.

    **Padding collisions.** A real frame equal to ``mask_value`` in *every* feature would be
    masked as padding. With ``standardize=(mean, std)`` the data are standardised inside the
    model *after* the mask is computed from the raw input, so zero padding of the raw frames
    never collides with standardised values near 0; if your raw data can hold all-zero frames
    (silence, missing sensors), pad with a value outside the data's range and pass it as
    ``mask_value``.

    Args:
        input_dim: number of features per step for real-valued input. Exactly one of
            ``input_dim`` and ``vocab_size``.
        vocab_size: vocabulary size (including id 0 for padding) for integer-token input.
        num_classes: classes for a softmax head; None gives a linear regression head.
        cell: ``"lstm"``, ``"gru"`` or ``"simple"``.
        units: units of each recurrent layer.
        mask: compute and propagate a padding mask (needed for correct results on padded
            batches; ``False`` only when every batch is unpadded, as in per-length fitting).
        bidirectional: wrap each recurrent layer in ``Bidirectional`` (not with ``stateful``).
        return_sequences: per-timestep outputs (many-to-many) instead of one per sequence.
        stateful: keep states across batches (for truncated BPTT, see
            :func:`seqprep.fit_tbptt`); needs ``batch_size`` and a fixed batch shape.
        batch_size: fixed batch size; required with ``stateful=True``.
        output_dim: outputs of the regression head (``num_classes=None``); e.g. ``input_dim``
            to predict the next frame.
        embedding_dim: embedding width for token input.
        mask_value: the padding value of real-valued frames.
        standardize: ``(mean, std)`` per feature (see :func:`feature_stats`), applied inside
            the model after masking; real-valued input only.
        dropout: input dropout rate of each recurrent layer, in ``[0, 1)``.
        num_layers: number of stacked recurrent layers.
        seed: seed for weight initialisation and dropout (None: Keras's global seed).
        name: model name.
        packed: take packed rows (see :class:`seqprep.PackSampler`,
            :func:`seqprep.packed_dataset`): the inputs are the dict
            ``{"values", "segment_ids", "segment_lengths"}`` and every recurrent layer is
            wrapped in :class:`seqprep.layers.PackedRNN` (named ``packed_{i}``; the wrapped
            layers keep their names, so the weights load into the unpacked model layer by
            layer). Many-to-one outputs are ``(batch, S, ...)``, one per packed slot. Needs
            ``dropout=0`` and ``stateful=False``; ``mask`` is not used (segment ids replace it).

    Returns:
        An uncompiled ``keras.Model``; compile it yourself or with :func:`compile_reference`.

    Raises:
        ValueError: both or neither of ``input_dim``/``vocab_size``, an unknown ``cell``,
            ``stateful`` without ``batch_size`` or with ``bidirectional``, or out-of-range
            sizes and rates.
        TypeError: sizes that are not integers.

    Example:
        >>> model = reference_rnn(input_dim=12, num_classes=9, cell="gru", units=8)
        >>> model.output_shape
        (None, 9)
        >>> reference_rnn(vocab_size=100, units=4, return_sequences=True).output_shape
        (None, None, 1)
    """
    check_one_of(
        "Pass `input_dim` for real-valued frames (features per step) or `vocab_size` for "
        "integer tokens.", input_dim=input_dim, vocab_size=vocab_size,
    )
    for flag_name, flag in (("mask", mask), ("bidirectional", bidirectional),
                            ("return_sequences", return_sequences), ("stateful", stateful)):
        check_bool(flag_name, flag)
    check_choice("cell", cell, tuple(_CELLS))
    input_dim = check_int("input_dim", input_dim, minimum=1, allow_none=True)
    vocab_size = check_int(
        "vocab_size", vocab_size, minimum=2, allow_none=True,
        fix="Token id 0 is reserved for padding, so the vocabulary needs at least 2 ids.",
    )
    num_classes = check_int(
        "num_classes", num_classes, minimum=2, allow_none=True,
        fix="For one output (binary or regression), pass `num_classes=None`.",
    )
    units = check_int("units", units, minimum=1)
    output_dim = check_int("output_dim", output_dim, minimum=1)
    embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
    num_layers = check_int("num_layers", num_layers, minimum=1)
    dropout = _check_float("dropout", dropout, 0.0, 1.0, high_open=True)
    mask_value = _check_float("mask_value", mask_value, -np.inf, np.inf, high_open=False)
    batch_size = check_int("batch_size", batch_size, minimum=1, allow_none=True)
    _check_rnn_combinations(stateful=stateful, batch_size=batch_size,
                            bidirectional=bidirectional, packed=packed, dropout=dropout,
                            standardize=standardize, input_dim=input_dim)

    packed_inputs = {
        "segment_ids": keras.Input((None,), dtype="int32", name="segment_ids"),
        "segment_lengths": keras.Input((None,), dtype="int32", name="segment_lengths"),
    } if packed else None
    inputs, x = _rnn_input(
        input_dim=input_dim, vocab_size=vocab_size, batch_size=batch_size,
        mask=mask and not packed,  # segment ids mark the padding of packed rows
        mask_value=mask_value, standardize=standardize, embedding_dim=embedding_dim,
        seed=seed, packed=packed,
    )
    x = _rnn_stack(x, cell=cell, units=units, num_layers=num_layers,
                   return_sequences=return_sequences, stateful=stateful, dropout=dropout,
                   bidirectional=bidirectional, seed=seed, packed_inputs=packed_inputs)
    head_seed = None if seed is None else seed + 1000
    head = keras.layers.Dense(
        output_dim if num_classes is None else num_classes,
        activation=None if num_classes is None else "softmax", name="head",
        kernel_initializer=keras.initializers.GlorotUniform(seed=head_seed),
    )
    outputs = head(x)
    if packed_inputs is not None:
        inputs = {"values": inputs, **packed_inputs}
    return keras.Model(inputs, outputs, name=name)


def _check_rnn_combinations(
    *, stateful: bool, batch_size: int | None, bidirectional: bool, packed: bool,
    dropout: float, standardize: Any, input_dim: int | None,
) -> None:
    """Refuse the argument combinations reference_rnn cannot build."""
    if stateful and batch_size is None:
        raise ValueError(
            "Argument `stateful=True` needs a fixed batch size. Received: batch_size=None\n"
            "- If you train with truncated BPTT, pass the same `batch_size` as to "
            "`seqprep.fit_tbptt`."
        )
    if stateful and bidirectional:
        raise ValueError(
            "Arguments `stateful=True` and `bidirectional=True` cannot be combined: the "
            "backward direction of a window cannot carry state to the next window.\n"
            "- If you need both directions, train on whole sequences (`stateful=False`)."
        )
    if packed and (stateful or dropout):
        raise ValueError(
            "Argument `packed=True` needs stateful=False and dropout=0 (packed rows reset the "
            f"state per sequence). Received: stateful={stateful!r}, dropout={dropout!r}\n"
            "- For regularisation, add keras.layers.Dropout to a model of your own."
        )
    if standardize is not None and input_dim is None:
        raise ValueError(
            "Argument `standardize` applies to real-valued frames (`input_dim`), not to "
            "integer tokens (`vocab_size`)."
        )


def _rnn_input(
    *, input_dim: int | None, vocab_size: int | None, batch_size: int | None, mask: bool,
    mask_value: float, standardize: Any, embedding_dim: int, seed: int | None, packed: bool,
) -> tuple[Any, Any]:
    """The model's input and what the first recurrent layer reads: masked (and standardised)
    frames, or embedded tokens."""
    if input_dim is not None:
        inputs = keras.Input(shape=(None, input_dim), batch_size=batch_size,
                             name="values" if packed else "frames")
        x = keras.layers.Masking(mask_value=mask_value, name="mask")(inputs) if mask else inputs
        if standardize is not None:
            mean, variance = _standardize_stats(standardize, input_dim)
            x = keras.layers.Normalization(
                mean=mean.tolist(), variance=variance.tolist(), name="standardize"
            )(x)
        return inputs, x
    inputs = keras.Input(shape=(None,), batch_size=batch_size, dtype="int32",
                         name="values" if packed else "tokens")
    x = keras.layers.Embedding(
        vocab_size, embedding_dim, mask_zero=mask, name="embedding",
        embeddings_initializer=keras.initializers.RandomUniform(-0.05, 0.05, seed=seed),
    )(inputs)
    return inputs, x


def _rnn_stack(
    x: Any, *, cell: str, units: int, num_layers: int, return_sequences: bool, stateful: bool,
    dropout: float, bidirectional: bool, seed: int | None, packed_inputs: dict[str, Any] | None,
) -> Any:
    """``num_layers`` recurrent layers on ``x`` (each wrapped for packed rows if asked)."""
    layer_cls = getattr(keras.layers, _CELLS[cell])
    for i in range(num_layers):
        last = i == num_layers - 1
        layer_seed = None if seed is None else seed + 1 + i
        rnn = layer_cls(
            units,
            return_sequences=return_sequences or not last,
            stateful=stateful,
            dropout=dropout,
            seed=layer_seed,
            kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed),
            recurrent_initializer=keras.initializers.Orthogonal(seed=layer_seed),
            name=f"{cell}_{i}",
        )
        if bidirectional:
            rnn = keras.layers.Bidirectional(rnn, name=f"bidirectional_{i}")
        if packed_inputs is not None:
            from seqprep.layers import PackedRNN

            x = PackedRNN(rnn, name=f"packed_{i}")({"values": x, **packed_inputs})
        else:
            x = rnn(x)
    return x


def compile_reference(
    model: keras.Model,
    *,
    learning_rate: float = 1e-3,
    optimizer: Any = None,
    jit_compile: bool | Literal["auto"] | None = None,
    **compile_kwargs: Any,
) -> keras.Model:
    """Compile a :func:`reference_rnn` model with the loss and metrics that suit its head.

    A softmax head gets ``SparseCategoricalCrossentropy`` and accuracy; a linear head gets
    mean squared error and mean absolute error. Every loss uses
    ``reduction="mean_with_sample_weight"``: the loss sum is divided by the sum of the
    weights, so a per-timestep loss is the mean over real steps whether the weights come from
    the propagated mask, from 0/1 ``sample_weight`` (``seqprep.sequence_weights(lengths)``),
    or both. (Keras's default ``"sum_over_batch_size"`` also averages over real steps when the
    mask alone reaches the loss, but combined with *normalised* weights it divides twice.)

    Args:
        model: a model from :func:`reference_rnn` (its last layer is named ``"head"``).
        learning_rate: Adam's learning rate (ignored when ``optimizer`` is given).
        optimizer: any Keras optimizer or name; default ``Adam(learning_rate)``.
        jit_compile: passed to ``Model.compile``. ``None`` (the default) picks per backend:
            False on TensorFlow (XLA recompiles for every new padded shape, and cuDNN kernels
            are not XLA-compatible) and PyTorch (Keras's own default there: eager), True on
            JAX (without ``jax.jit`` the step runs op by op: 3x slower than compiling every
            shape on a tiny bucketed problem, see ``docs/backends.md``).
        **compile_kwargs: anything else for ``Model.compile`` (overrides ``loss``/``metrics``).

    Returns:
        The same model, compiled.

    Raises:
        ValueError: the model has no layer named ``"head"``.

    Example:
        >>> model = compile_reference(reference_rnn(input_dim=3, num_classes=2, units=4))
        >>> model.loss.reduction
        'mean_with_sample_weight'
    """
    try:
        head = model.get_layer("head")
    except ValueError:
        raise ValueError(
            f"Argument `model` has no layer named 'head'. Received: model named {model.name!r}\n"
            "- If you built the model yourself, compile it with `model.compile(...)` instead."
        ) from None
    if keras.activations.serialize(head.activation) == "softmax":
        loss = keras.losses.SparseCategoricalCrossentropy(reduction="mean_with_sample_weight")
        metrics = ["accuracy"]
    else:
        loss = keras.losses.MeanSquaredError(reduction="mean_with_sample_weight")
        metrics = ["mae"]
    settings: dict[str, Any] = {
        "optimizer": optimizer or keras.optimizers.Adam(learning_rate),
        "loss": loss,
        "metrics": metrics,
        "jit_compile": (keras.backend.backend() == "jax") if jit_compile is None else jit_compile,
    }
    settings.update(compile_kwargs)
    model.compile(**settings)
    return model
