"""The one normalisation of a sequence collection: flat values plus row offsets.

Every public function that takes sequences calls :func:`as_ragged` (or :func:`lengths_of` when
only the lengths are needed), so the rules for what counts as a sequence collection live here
and nowhere else:

* a list or tuple of 1-D / N-D numpy arrays, Python lists, or a mix of them;
* a ``tf.RaggedTensor`` with one ragged dimension (the time axis);
* a rectangular numpy array or ``tf.Tensor`` of shape ``(n, T, ...)`` (every row has length T);
* a pandas ``Series`` whose cells are sequences;
* any other iterable of sequences (a generator is consumed once).

TensorFlow is never imported here: tensors are recognised by duck typing.
"""

from __future__ import annotations

import inspect
import itertools
import numbers
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

# float64 holds every integer up to 2**53 exactly; past that the list fast path would round.
_EXACT_FLOAT_INT = 2**53


@dataclass(frozen=True)
class Ragged:
    """A sequence collection as ``values`` (all steps, stacked) and ``offsets`` (row starts).

    Sequence ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    Attributes:
        values: array of shape ``(total_steps, *step_shape)``.
        offsets: int64 array of shape ``(n + 1,)``, starting at 0, non-decreasing.
    """

    values: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """int64 array of the ``n`` sequence lengths."""
        return np.diff(self.offsets)

    @property
    def step_shape(self) -> tuple[int, ...]:
        """Shape of one time step (``()`` for scalar steps)."""
        return tuple(self.values.shape[1:])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        """Sequence ``i`` (a view into ``values``)."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def locator(
        self, name: str = "sequences", cut_steps: Callable[[int], int] | None = None
    ) -> Callable[[int], str]:
        """Map a flat index into ``values`` to ``name[i][t]`` (plus the index inside a step)
        in the caller's input, for error messages; ``cut_steps(i)`` is how many steps
        truncation removed before row ``i``'s kept ones (none by default).

        Example:
            >>> Ragged(np.arange(6.0).reshape(3, 2), np.array([0, 1, 3])).locator("x")(5)
            'x[1][1][1]'
        """
        step_shape = self.values.shape[1:]
        step_size = max(int(np.prod(step_shape, dtype=np.int64)), 1)

        def locate(flat_index: int) -> str:
            step = flat_index // step_size
            row = int(np.searchsorted(self.offsets, step, side="right")) - 1
            cut = 0 if cut_steps is None else cut_steps(row)
            where = f"{name}[{row}][{step - int(self.offsets[row]) + cut}]"
            if step_shape:
                inner = np.unravel_index(flat_index % step_size, step_shape)
                where += "".join(f"[{int(k)}]" for k in inner)
            return where

        return locate


def _is_tf_ragged(x: Any) -> bool:
    return hasattr(x, "row_splits") and hasattr(x, "flat_values") and hasattr(x, "ragged_rank")


def _is_tf_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("tensorflow") and hasattr(x, "numpy")


def _is_pandas(x: Any) -> bool:
    return type(x).__module__.startswith("pandas")


def _to_list(sequences: Any, name: str) -> list[Any] | np.ndarray | Ragged:
    """Return a list of per-sequence objects, or a rectangular ndarray, or a Ragged."""
    if isinstance(sequences, Ragged):
        return sequences
    if isinstance(sequences, (str, bytes)):
        raise TypeError(
            f"Argument `{name}` must be a collection of sequences. Received a single "
            f"{type(sequences).__name__}: {sequences[:40]!r}\n"
            f"- If this is one sequence, wrap it in a list: `[{name}]`."
        )
    if _is_tf_ragged(sequences):
        if sequences.ragged_rank != 1:
            raise ValueError(
                f"Argument `{name}` must be ragged only along the time axis (ragged_rank=1). "
                f"Received a RaggedTensor with ragged_rank={sequences.ragged_rank}\n"
                "- If the steps are ragged too, pad or merge them into a fixed step shape first."
            )
        # A tensor's numpy() may share the tensor's buffer: never hand it out writable.
        values = _read_only(np.asarray(sequences.values.numpy()))
        offsets = np.asarray(sequences.row_splits.numpy(), dtype=np.int64)
        return Ragged(values, offsets)
    if _is_tf_tensor(sequences):
        sequences = sequences.numpy()
    if _is_pandas(sequences):
        if hasattr(sequences, "columns"):
            raise TypeError(
                f"Argument `{name}` must be a collection of sequences. Received a pandas "
                "DataFrame\n"
                "- If it holds one row per time step, convert it with "
                "`seqprep.from_dataframe(df, id=..., features=...)`."
            )
        return list(sequences.to_numpy(dtype=object))
    if isinstance(sequences, np.ndarray):
        if sequences.dtype == object:
            if sequences.ndim != 1:
                raise ValueError(
                    f"Argument `{name}` as an object array must be 1-D (one cell per "
                    f"sequence). Received shape {sequences.shape}"
                )
            return list(sequences)
        if sequences.ndim < 2:
            raise ValueError(
                f"Argument `{name}` must be a collection of sequences: a list of arrays or an "
                f"array of shape (n, T, ...). Received a numpy array of shape {sequences.shape}\n"
                f"- If this is one sequence, wrap it in a list: `[{name}]`."
            )
        return sequences
    if isinstance(sequences, (list, tuple)):
        return sequences if isinstance(sequences, list) else list(sequences)
    if isinstance(sequences, Iterable) and not isinstance(sequences, dict):
        return _read_iterable(sequences, name)
    raise TypeError(
        f"Argument `{name}` must be a collection of sequences (a list of arrays or lists, a "
        f"tf.RaggedTensor, an array of shape (n, T, ...) or a pandas Series). "
        f"Received: {name}={sequences!r:.60} of type {type(sequences).__name__}\n"
        f"- Pass a list of sequences, e.g. `{name}=[[1, 2, 3], [4, 5]]`."
    )


def _read_iterable(sequences: Iterable[Any], name: str) -> list[Any]:
    """Read a one-shot iterable, refusing one that is already used up (it reads as empty)."""
    if type(sequences).__module__.startswith("tensorflow") and hasattr(sequences, "element_spec"):
        raise TypeError(
            f"Argument `{name}` must be a collection of sequences held in memory. Received a "
            f"{type(sequences).__name__}\n- If the data is a tf.data pipeline of unbatched "
            "elements, batch it with `dataset.apply(seqprep.bucket_by_length(...))`; to use "
            f"this function, collect it first: `{name} = [e.numpy() for e in dataset]`."
        )
    if isinstance(sequences, Generator) and inspect.getgeneratorstate(sequences) == "GEN_CLOSED":
        raise ValueError(
            f"Argument `{name}` is a generator that has already been consumed, so it would read "
            f"as empty. Received: {sequences!r}\n- Pass a list (`{name} = list(generator)` "
            "once, then reuse the list), or create a new generator for each call."
        )
    out = list(sequences)
    if not out and isinstance(sequences, Iterator):
        raise ValueError(
            f"Argument `{name}` is an iterator that yielded nothing: it was probably already "
            f"consumed. Received: {sequences!r}\n- Pass a list (`{name} = list(iterator)` "
            "once, then reuse the list), or create a new iterator for each call."
        )
    return out


def _row_length(seq: Any, i: int, name: str) -> int:
    try:
        return len(seq)
    except TypeError:
        raise ValueError(
            f"Argument `{name}` must hold sequences, but element {i} is not a sequence. "
            f"Received: {name}[{i}]={seq!r} of type {type(seq).__name__}\n"
            "- If you passed one sequence, wrap it in a list: `[sequence]`."
        ) from None


def _lengths_of_list(seqs: list[Any], name: str) -> np.ndarray:
    try:
        return np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    except TypeError:
        for i, s in enumerate(seqs):
            _row_length(s, i, name)
        raise  # pragma: no cover - the loop above always finds the culprit


def lengths_of(sequences: Any, name: str = "sequences") -> np.ndarray:
    """Return the int64 lengths of a sequence collection without copying its values."""
    seqs = _to_list(sequences, name)
    if isinstance(seqs, Ragged):
        return seqs.lengths
    if isinstance(seqs, np.ndarray):
        return np.full(seqs.shape[0], seqs.shape[1], dtype=np.int64)
    lengths = _lengths_of_list(seqs, name)
    for i, s in enumerate(seqs):
        if isinstance(s, (str, bytes)):
            raise ValueError(
                f"Argument `{name}` must hold sequences of steps, but element {i} is a string: "
                f"{s[:40]!r}\n- If these are texts, tokenize them into integer ids first."
            )
    _check_step_shapes(seqs, lengths, name)
    return lengths


def _scalar_steps_only(seqs: list[Any], lengths: np.ndarray, chunk: int = 1 << 16) -> bool:
    """True if every sequence is a flat list of numbers: C passes as ``as_ragged``'s, over
    about ``chunk`` values at a time so that the check holds no copy of the data."""
    if not all(type(s) is list for s in seqs):
        return False
    ends = np.searchsorted(np.cumsum(lengths), np.arange(chunk, int(lengths.sum()), chunk))
    start = 0
    for stop in [*np.unique(ends + 1).tolist(), len(seqs)]:
        if stop <= start:
            continue
        part = seqs[start:stop]
        try:
            np.fromiter(itertools.chain.from_iterable(part), dtype=np.float64,
                        count=int(lengths[start:stop].sum()))
        except (TypeError, ValueError, OverflowError):
            return False
        start = stop
    return True


def _step_shape(seq: Any, i: int, name: str) -> tuple[int, ...]:
    """The shape of every step of sequence ``i``; refuses steps of different shapes."""
    if isinstance(seq, np.ndarray):
        return tuple(seq.shape[1:])
    try:
        arr = np.asarray(seq)
    except ValueError:  # numpy refuses a ragged nesting: steps of different depths or sizes
        arr = np.asarray(seq, dtype=object)
    if arr.dtype == object and arr.ndim >= 1 and any(
        isinstance(step, (list, tuple, np.ndarray)) for step in arr.reshape(-1).tolist()
    ):
        shapes = sorted({np.shape(step) for step in seq}, key=len)
        raise ValueError(
            f"Argument `{name}` element {i} has steps of different shapes: every step of every "
            f"sequence must have the same shape. Received steps of shapes {shapes[:2]} in "
            f"{name}[{i}]={seq!r:.80}\n- If each step is a feature vector, make every vector "
            "the same size; if a value is nested by mistake, flatten it."
        )
    return tuple(arr.shape[1:])


def _check_step_shapes(seqs: list[Any], lengths: np.ndarray, name: str) -> None:
    """Refuse a collection whose steps differ in nesting or shape, e.g. ``[[1, 2], [3, [4, 5]]]``
    (reading lengths alone would count 2 steps in each): the rule ``as_ragged`` applies."""
    if _scalar_steps_only(seqs, lengths):
        return
    if all(isinstance(s, np.ndarray) for s in seqs):
        shapes = {s.shape[1:] for s in seqs if len(s)}
        if len(shapes) <= 1:
            return
    first: tuple[int, tuple[int, ...]] | None = None
    for i in np.flatnonzero(lengths).tolist():
        shape = _step_shape(seqs[i], i, name)
        if first is None:
            first = (i, shape)
        elif shape != first[1]:
            raise ValueError(
                f"Argument `{name}` must have the same step shape in every sequence. Sequence "
                f"{first[0]} has steps of shape {first[1]}, but sequence {i} has steps of shape "
                f"{shape}\n- If some sequences are nested lists of different depths, make "
                "every step the same shape."
            )


def _check_step_dtype(values: np.ndarray, name: str) -> None:
    if values.dtype.kind == "O" and all(
        isinstance(x, numbers.Number) for x in values.reshape(-1).tolist()
    ):
        return  # integers past 64 bits, held exactly; the cast to the output dtype checks them
    if values.dtype.kind in "USO" and values.size:
        raise ValueError(
            f"Argument `{name}` holds {values.dtype} values (strings or objects), which need "
            "`dtype=object`.\n- If these are tokens, map them to integer ids first; to pad "
            "strings as they are, pass `dtype=object`."
        )


def _raise_mixed_steps(seqs: list[Any], name: str) -> None:
    """Find the element that stops the steps stacking into one array and say which it is."""
    first_shape = None
    for i, s in enumerate(seqs):
        if isinstance(s, (str, bytes)):
            raise ValueError(
                f"Argument `{name}` must hold sequences of steps, but element {i} is a string: "
                f"{s[:40]!r}\n- If these are texts, tokenize them into integer ids first."
            )
        if not len(s):
            continue
        try:
            arr = np.asarray(s)
        except ValueError:
            arr = np.asarray(s, dtype=object)
        if arr.dtype == object and any(np.ndim(step) != np.ndim(s[0]) or
                                       np.shape(step) != np.shape(s[0]) for step in s):
            raise ValueError(
                f"Argument `{name}` element {i} has steps of different shapes: every step "
                "of every sequence must have the same shape.\n- If each step is a feature "
                "vector, make every vector the same size."
            )
        if first_shape is None:
            first_shape, first = arr.shape[1:], i
        elif arr.shape[1:] != first_shape:
            raise ValueError(
                f"Argument `{name}` must have the same step shape in every sequence. "
                f"Sequence {first} has steps of shape {first_shape}, but sequence {i} has "
                f"steps of shape {arr.shape[1:]}\n- If some sequences are nested lists of "
                "different depths, make every step the same shape."
            )
        if arr.dtype == object:
            raise ValueError(
                f"Argument `{name}` element {i} holds values numpy cannot stack into a "
                f"numeric array (received {type(s[0]).__name__} steps).\n- Convert the steps "
                "to numbers (or pass `dtype=object` to pad them as they are)."
            )


def _list_values_fast(seqs: list[Any], total: int) -> np.ndarray | None:
    """Values of a list of flat Python lists via one ``fromiter`` pass, or None if not exact."""
    if not seqs or not all(type(s) is list for s in itertools.islice(seqs, 64)):
        return None
    try:
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.float64, count=total)
    except (TypeError, ValueError, OverflowError):
        return None
    finite = np.isfinite(flat)
    magnitude = np.abs(flat if finite.all() else flat[finite])
    if magnitude.size and magnitude.max() >= _EXACT_FLOAT_INT:
        return None  # an int past 2**53 may have been rounded: take the exact path
    if not finite.all():
        return flat  # NaN/inf are floats in the source too: the dtype checks report them
    ints = flat.astype(np.int64)
    # Whole numbers become int64, but only if the bits round-trip: -0.0 stays a float.
    if np.array_equal(ints.astype(np.float64).view(np.int64), flat.view(np.int64)):
        return ints
    return flat


def _read_only(values: np.ndarray) -> np.ndarray:
    """A view the caller's array cannot be written through."""
    view = values.view()
    view.flags.writeable = False
    return view


def _object_values(seqs: list[Any]) -> np.ndarray:
    """Values as an object array that holds every element exactly (strings, Python ints)."""
    parts = [s.astype(object) if isinstance(s, np.ndarray) else np.asarray(s, dtype=object)
             for s in seqs]
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _has_nested_steps(values: np.ndarray) -> bool:
    return any(isinstance(x, (list, tuple, np.ndarray)) for x in values.reshape(-1).tolist())


def _exact_numbers(values: np.ndarray, seqs: list[Any]) -> np.ndarray:
    """``values`` unless numpy rounded integers on the way (ints past 2**53 turned to float64,
    or ints past 64 bits left as objects); then an exact int64, uint64 or object array."""
    if values.dtype.kind == "f":
        # Only float64 (or wider) comes from promoting 64-bit ints; narrower floats hold
        # every int that numpy would promote into them.
        if values.dtype.itemsize < 8 or not values.size:
            return values
        if np.abs(values).max() < float(_EXACT_FLOAT_INT):  # False for NaN/inf: look closer
            return values
        if all(isinstance(s, np.ndarray) and s.dtype.kind not in "iuO" for s in seqs):
            return values  # float arrays only: no integer was promoted
        finite = values[np.isfinite(values)]
        if not finite.size or np.abs(finite).max() < float(_EXACT_FLOAT_INT):
            return values
    elif values.dtype.kind != "O":
        return values
    exact = _object_values(seqs)
    items = exact.reshape(-1).tolist()
    if not all(isinstance(x, numbers.Number) and not isinstance(x, complex) for x in items):
        return values  # not a numeric collection: the step checks report it
    ints = [x for x in items if isinstance(x, numbers.Integral)]
    if not ints:
        return values.astype(np.float64) if values.dtype.kind == "O" else values
    if len(ints) == len(items):
        low, high = min(ints), max(ints)
        for dtype in (np.int64, np.uint64):
            info = np.iinfo(dtype)
            if info.min <= low and high <= info.max:
                return np.array(items, dtype=dtype).reshape(exact.shape)
    return exact


def as_ragged(
    sequences: Any, name: str = "sequences", *, keep_object: bool = False
) -> Ragged:
    """Normalise any sequence collection to a :class:`Ragged` (flat values + offsets).

    Args:
        sequences: the collection (see the module docstring for what is accepted).
        name: argument name used in error messages.
        keep_object: allow string/object steps (for ``dtype=object`` padding).

    Returns:
        A ``Ragged`` whose values never alias the caller's arrays in a writable way: callers
        may read them freely but must copy before writing.

    Raises:
        ValueError: an element is not a sequence, or steps have different shapes.
        TypeError: the collection itself is of an unsupported type.
    """
    seqs = _to_list(sequences, name)
    if isinstance(seqs, Ragged):
        return seqs
    if isinstance(seqs, np.ndarray):
        n, t = seqs.shape[:2]
        values = _read_only(seqs.reshape((n * t, *seqs.shape[2:])))
        if not keep_object:
            _check_step_dtype(values, name)
        return Ragged(values, np.arange(n + 1, dtype=np.int64) * t)

    lengths = _lengths_of_list(seqs, name)
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])

    values = None if keep_object else _list_values_fast(seqs, total)
    if values is None:
        nonempty = seqs if lengths.all() else [seqs[i] for i in np.flatnonzero(lengths)]
        if not nonempty:
            return Ragged(_empty_values(seqs), offsets)
        if keep_object and not all(isinstance(s, np.ndarray) for s in nonempty):
            values = _object_values(nonempty)
            if values.ndim == 0 or _has_nested_steps(values):
                _raise_mixed_steps(seqs, name)
            return Ragged(values, offsets)
        try:
            if len(nonempty) > 1:
                values = np.concatenate(nonempty)
            else:
                values = nonempty[0]
                values = _read_only(values) if isinstance(values, np.ndarray) else np.asarray(
                    values)
        except (ValueError, TypeError):
            _raise_mixed_steps(seqs, name)
            raise
        if values.ndim == 0:
            _raise_mixed_steps(seqs, name)
        if not keep_object:
            values = _exact_numbers(values, nonempty)
        if values.dtype == object and not keep_object and _has_nested_steps(values):
            _raise_mixed_steps(seqs, name)
    if not keep_object:
        _check_step_dtype(values, name)
    return Ragged(values, offsets)


def _empty_values(seqs: list[Any]) -> np.ndarray:
    """Zero steps, keeping the step shape and dtype when the empty arrays agree on them."""
    arrays = [s for s in seqs if isinstance(s, np.ndarray) and s.ndim >= 1]
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) != 1:
        return np.zeros((0,), dtype=np.float64)
    return np.zeros((0, *shapes.pop()), dtype=np.result_type(*arrays))
