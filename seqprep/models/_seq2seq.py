"""A reference recurrent encoder–decoder and batched greedy decoding in input order.

:func:`reference_seq2seq` builds a Keras 3 model that reads post-padded integer sources and
teacher-forced decoder inputs (see :func:`seqprep.teacher_forcing`) as the dict
``{"encoder": (B, S), "decoder": (B, T)}`` and returns next-token probabilities
``(B, T, target_vocab_size)``. :func:`greedy_decode` runs any such model on new sources,
batched by source length, and returns one token array per source in the caller's order.
Both are re-exported from :mod:`seqprep.models`.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any, Literal

import keras
import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int
from seqprep._core.ragged import as_ragged

__all__ = ["greedy_decode", "reference_seq2seq"]

_CELLS = {"gru": "GRU", "lstm": "LSTM"}


def _check_rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"Argument `{name}` must be a number. Received: {name}={value!r}\n"
            f"- Pass a float in [0, 1), e.g. {name}=0.1."
        )
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"Argument `{name}` must be in [0, 1). Received: {name}={value!r}\n"
            f"- Pass a rate in that range, e.g. {name}=0.1."
        )
    return float(value)


def reference_seq2seq(
    *,
    source_vocab_size: int,
    target_vocab_size: int,
    units: int = 128,
    embedding_dim: int = 64,
    cell: Literal["gru", "lstm"] = "gru",
    bidirectional: bool = True,
    attention: bool = True,
    dropout: float = 0.0,
    seed: int | None = None,
    name: str = "reference_seq2seq",
) -> keras.Model:
    """Build a small recurrent encoder–decoder for post-padded integer sources and targets.

    The architecture, every part of it masked by ``Embedding(mask_zero=True)`` (id 0 is
    padding on both sides, so feed post-padded batches):

    1. **encoder**: ``Embedding(source_vocab_size, embedding_dim)`` then one ``GRU``/``LSTM``
       of ``units`` (``Bidirectional`` by default, the two directions' final states
       concatenated), returning its final state (and every step's output for attention);
    2. **decoder**: ``Embedding(target_vocab_size, embedding_dim)`` then one recurrent layer of
       the encoder's state width (``2 * units`` when bidirectional), *initialised from the
       encoder's final state*, returning every step;
    3. **attention** (``attention=True``, the default: small, one dot-product
       ``keras.layers.Attention`` with no weights of its own plus one ``Dense``): each decoder
       step attends over the real encoder steps (the encoder's padding is masked), and
       ``Dense(tanh)`` mixes the context with the decoder output;
    4. **head**: ``Dense(target_vocab_size, softmax)``, named ``"head"`` so that
       :func:`seqprep.models.compile_reference` compiles it (sparse categorical
       cross-entropy, mean over real steps, accuracy).

    The inputs are the dict ``{"encoder": (B, S), "decoder": (B, T)}`` of int32 ids; the
    output ``(B, T, target_vocab_size)`` carries the decoder's mask, so padded steps do not
    count in the loss (pass the 0/1 weights of a seqprep dataset as well: the mean is the
    same). Decoder inputs and targets come from :func:`seqprep.teacher_forcing`; put its
    ``start`` and ``end`` ids inside ``target_vocab_size``. With the defaults, LSTM/GRU keep
    the configuration for Keras's fused cuDNN kernel (right-padded masks, default
    activations, no recurrent dropout). Decode new sources with :func:`greedy_decode`.

    Args:
        source_vocab_size: source ids ``0..source_vocab_size-1`` (0 is padding).
        target_vocab_size: decoder ids, including padding 0 and your start and end ids.
        units: units of the encoder (per direction when bidirectional).
        embedding_dim: width of both embeddings.
        cell: ``"gru"`` or ``"lstm"`` (encoder and decoder alike).
        bidirectional: read the source in both directions.
        attention: add the small dot-product attention described above.
        dropout: input dropout rate of the encoder and decoder layers, in ``[0, 1)``.
        seed: seed for weight initialisation and dropout (None: Keras's global seed).
        name: model name.

    Returns:
        An uncompiled ``keras.Model``; compile it with
        :func:`seqprep.models.compile_reference` or your own ``compile``.

    Raises:
        ValueError: an unknown ``cell``, sizes below their minimum, ``dropout`` outside
            ``[0, 1)``.
        TypeError: sizes that are not integers, flags that are not bools.

    Example:
        >>> from seqprep.models import reference_seq2seq
        >>> model = reference_seq2seq(source_vocab_size=27, target_vocab_size=42, units=8,
        ...                           embedding_dim=4)
        >>> sorted(model.input.keys()), model.output_shape
        (['decoder', 'encoder'], (None, None, 42))
    """
    source_vocab_size = check_int("source_vocab_size", source_vocab_size, minimum=2,
                                  fix="Id 0 is padding, so a vocabulary needs at least 2 ids.")
    target_vocab_size = check_int(
        "target_vocab_size", target_vocab_size, minimum=4,
        fix="The decoder needs padding 0, a start id, an end id and at least one token.",
    )
    units = check_int("units", units, minimum=1)
    embedding_dim = check_int("embedding_dim", embedding_dim, minimum=1)
    check_choice("cell", cell, tuple(_CELLS))
    check_bool("bidirectional", bidirectional)
    check_bool("attention", attention)
    dropout = _check_rate("dropout", dropout)

    def init(offset: int, kind: str = "glorot") -> Any:
        layer_seed = None if seed is None else seed + offset
        if kind == "orthogonal":
            return keras.initializers.Orthogonal(seed=layer_seed)
        if kind == "uniform":
            return keras.initializers.RandomUniform(-0.05, 0.05, seed=layer_seed)
        return keras.initializers.GlorotUniform(seed=layer_seed)

    layer_cls = getattr(keras.layers, _CELLS[cell])
    source = keras.Input((None,), dtype="int32", name="encoder")
    target = keras.Input((None,), dtype="int32", name="decoder")

    x = keras.layers.Embedding(source_vocab_size, embedding_dim, mask_zero=True,
                               embeddings_initializer=init(0, "uniform"),
                               name="encoder_embedding")(source)
    encoder = layer_cls(units, return_sequences=attention, return_state=True, dropout=dropout,
                        seed=None if seed is None else seed + 1,
                        kernel_initializer=init(1), recurrent_initializer=init(1, "orthogonal"),
                        name="encoder_rnn")
    if bidirectional:
        encoder = keras.layers.Bidirectional(encoder, name="encoder_bidirectional")
    encoded, *states = encoder(x)
    if bidirectional:  # forward states then backward states: join them per kind (h, c)
        half = len(states) // 2
        states = [keras.layers.Concatenate(name=f"encoder_state_{i}")([f, b])
                  for i, (f, b) in enumerate(zip(states[:half], states[half:], strict=True))]
    state_units = 2 * units if bidirectional else units

    y = keras.layers.Embedding(target_vocab_size, embedding_dim, mask_zero=True,
                               embeddings_initializer=init(2, "uniform"),
                               name="decoder_embedding")(target)
    y = layer_cls(state_units, return_sequences=True, dropout=dropout,
                  seed=None if seed is None else seed + 3,
                  kernel_initializer=init(3), recurrent_initializer=init(3, "orthogonal"),
                  name="decoder_rnn")(y, initial_state=states)
    if attention:
        context = keras.layers.Attention(name="attention")([y, encoded])
        y = keras.layers.Concatenate(name="attention_concat")([y, context])
        y = keras.layers.Dense(state_units, activation="tanh", kernel_initializer=init(4),
                               name="attention_combine")(y)
    outputs = keras.layers.Dense(target_vocab_size, activation="softmax",
                                 kernel_initializer=init(5), name="head")(y)
    return keras.Model({"encoder": source, "decoder": target}, outputs, name=name)


def _check_token(name: str, value: Any, vocab: int | None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"Argument `{name}` must be the integer id of the {name} token. Received: "
            f"{name}={value!r}\n- Pass the same `{name}` id as to `seqprep.teacher_forcing`."
        )
    value = int(value)
    if value < 0 or (vocab is not None and value >= vocab):
        bound = "" if vocab is None else f" (the model outputs ids 0..{vocab - 1})"
        raise ValueError(
            f"Argument `{name}` must be an id the model can emit{bound}. Received: "
            f"{name}={value}\n- Pass the same `{name}` id as to `seqprep.teacher_forcing`."
        )
    return value


def _model_vocab(model: Any) -> int | None:
    """The last axis of the model's output (its target vocabulary), if it declares one."""
    try:
        shape = model.output_shape
    except (AttributeError, ValueError, RuntimeError):
        return None
    return shape[-1] if isinstance(shape, tuple) and isinstance(shape[-1], int) else None


def _check_seq2seq_model(model: Any) -> None:
    names = set()
    for tensor in getattr(model, "inputs", None) or []:
        names.add(getattr(tensor, "name", None))
    if not {"encoder", "decoder"} <= names:
        raise TypeError(
            "Argument `model` must take the dict inputs {'encoder', 'decoder'} of an "
            f"encoder–decoder. Received: a model with inputs {sorted(map(str, names))}\n"
            "- Build it with `seqprep.models.reference_seq2seq`, or name your model's inputs "
            "keras.Input(..., name='encoder') and keras.Input(..., name='decoder')."
        )


def greedy_decode(
    model: Any,
    sources: Any,
    *,
    start: int,
    end: int,
    max_length: int | None = None,
    batch_size: int = 256,
    pad: int = 0,
) -> list[np.ndarray]:
    """Greedy decoding, batched by source length, one token array per source in input order.

    Sources are sorted by length and cut into batches of ``batch_size`` (so each batch is
    padded only to its own longest source, post-padded with ``pad``). Each batch starts every
    decoder row with ``start`` and, step by step, feeds the model the tokens decoded so far and
    appends the most probable next token (other than ``pad`` and ``start``, which are no
    tokens a row can emit). A row stops at its first ``end`` token (which is
    not returned); the batch stops as soon as every row has stopped, or after ``max_length``
    tokens. A row that never emits ``end`` within ``max_length`` is returned truncated to
    ``max_length`` tokens: that is a property of the model, not an error (check
    ``len(out[i]) == max_length`` to find such rows).

    Works for any model whose inputs are named ``"encoder"`` and ``"decoder"`` and whose
    output is ``(B, T, vocab)`` scores, where the output at step ``t`` depends on decoder
    steps ``<= t`` only (a recurrent or causal decoder), e.g.
    :func:`reference_seq2seq`. Each step re-runs the model on the prefix (``T**2 / 2``
    decoder steps per batch: cheap for the short targets of g2p or transliteration; for long
    targets, write a step-wise decoder with the model's layers); on JAX on the whole padded
    buffer, so that each batch compiles once. Runs on every Keras backend.

    Args:
        model: the trained encoder–decoder.
        sources: a sequence collection of 1-D integer source sequences.
        start: the start id the decoder was trained with (see :func:`seqprep.teacher_forcing`).
        end: the end id; must be an id the model can output.
        max_length: most tokens decoded per source. None: ``2 * S + 10`` for a batch whose
            longest source has ``S`` steps.
        batch_size: sources per batch.
        pad: the padding id of sources and decoder inputs (0 for ``mask_zero=True``).

    Returns:
        A list of int32 arrays, ``out[i]`` the tokens decoded for ``sources[i]``, ``end``
        excluded.

    Raises:
        TypeError: ``model`` has no ``"encoder"``/``"decoder"`` inputs, or ``start``/``end``
            are not integers.
        ValueError: ``end`` (or ``start``, ``pad``) is not among the model's output ids,
            ``start == end``, ``pad`` equals either, source ids outside int32, or sizes
            below 1.

    Example:
        >>> from seqprep.models import greedy_decode, reference_seq2seq
        >>> model = reference_seq2seq(source_vocab_size=10, target_vocab_size=8, units=4,
        ...                           embedding_dim=4, seed=0)
        >>> out = greedy_decode(model, [[1, 2, 3], [4], [5, 6]], start=6, end=7, max_length=5)
        >>> len(out), all(len(o) <= 5 and 7 not in o for o in out)
        (3, True)
    """
    _check_seq2seq_model(model)
    vocab = _model_vocab(model)
    start = _check_token("start", start, vocab)
    end = _check_token("end", end, vocab)
    pad = _check_token("pad", pad, vocab)
    if pad in (start, end):
        raise ValueError(
            f"Argument `pad` must differ from `start` and `end`. Received: pad={pad}, "
            f"start={start}, end={end}\n- Pass the padding id your model masks (0 for "
            "`Embedding(mask_zero=True)`)."
        )
    if start == end:
        raise ValueError(
            f"Arguments `start` and `end` must be different ids. Received: start={start}, "
            f"end={end}\n- Pass the ids you gave `seqprep.teacher_forcing`."
        )
    max_length = check_int("max_length", max_length, minimum=1, allow_none=True)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    ragged = as_ragged(sources, "sources")
    if ragged.values.ndim != 1:
        raise ValueError(
            "Argument `sources` must hold 1-D sequences of token ids. Received steps of shape "
            f"{ragged.values.shape[1:]}"
        )
    if ragged.values.size and not np.issubdtype(ragged.values.dtype, np.integer):
        raise TypeError(
            "Argument `sources` must hold integer token ids. Received values of dtype "
            f"{ragged.values.dtype}\n- Convert them: `[s.astype('int32') for s in sources]`."
        )
    if ragged.values.size and (ragged.values.min() < 0
                               or ragged.values.max() > np.iinfo(np.int32).max):
        raise ValueError(
            "Argument `sources` must hold token ids in 0..2**31-1 (the model reads int32). "
            f"Received ids from {ragged.values.min()} to {ragged.values.max()}\n"
            "- Map your tokens to ids below the model's source vocabulary size."
        )
    lengths = ragged.lengths
    order = np.argsort(lengths, kind="stable")
    results: list[np.ndarray] = [np.zeros(0, np.int32)] * len(lengths)
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        decoded = _decode_batch(model, ragged, rows, start=start, end=end, pad=pad,
                                max_length=max_length)
        for row, tokens in zip(rows, decoded, strict=True):
            results[row] = tokens
    return results


def _scores(model: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The model's scores on one batch, as numpy, by the fastest route of the backend."""
    with warnings.catch_warnings():
        # A batch of one-step sources makes attention's softmax run over one key: that is
        # expected here, so Keras's warning about it would only be noise.
        warnings.filterwarnings("ignore", message="You are using a softmax over axis")
        if keras.backend.backend() in ("tensorflow", "jax") and hasattr(model,
                                                                      "predict_on_batch"):
            # A traced function: a recurrent layer called eagerly on TensorFlow loops in
            # Python (10x slower), and JAX compiles a scan for every new shape anyway.
            return np.asarray(model.predict_on_batch(inputs))
        return keras.ops.convert_to_numpy(model(inputs, training=False))


def _decode_batch(model: Any, ragged: Any, rows: np.ndarray, *, start: int, end: int, pad: int,
                  max_length: int | None) -> list[np.ndarray]:
    """Greedy decoding of one batch of sources (``rows`` of ``ragged``)."""
    lengths = ragged.lengths[rows]
    width = max(int(lengths.max()), 1)
    source = np.full((len(rows), width), pad, dtype=np.int32)
    for i, row in enumerate(rows):
        source[i, :lengths[i]] = ragged.row(int(row))
    limit = max_length if max_length is not None else 2 * width + 10
    tokens = np.full((len(rows), limit + 1), pad, dtype=np.int32)
    tokens[:, 0] = start
    produced = np.full(len(rows), limit)  # tokens before the end token
    done = np.zeros(len(rows), dtype=bool)
    # JAX compiles once per input shape: feed the whole (padded, so masked) decoder buffer
    # each step, one shape per batch. TensorFlow and PyTorch run the growing prefix only.
    whole_buffer = keras.backend.backend() == "jax"
    for step in range(limit):
        decoder = tokens[:, :limit] if whole_buffer else tokens[:, :step + 1]
        scores = _scores(model, {"encoder": source, "decoder": decoder})
        step_scores = scores[:, step].astype(np.float64)
        # Padding would be masked as the next input and `start` only begins a sequence:
        # neither is a token a row can emit.
        step_scores[:, [pad, start]] = -np.inf
        following = np.argmax(step_scores, axis=-1)
        finished = ~done & (following == end)
        produced[finished] = step
        done |= finished
        # Stopped rows read padding from here on: masked, so it changes nothing.
        tokens[:, step + 1] = np.where(done, pad, following)
        if done.all():
            break
    return [tokens[i, 1:1 + produced[i]].copy() for i in range(len(rows))]
