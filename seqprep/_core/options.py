"""Options that several executors and planners share, declared and checked once.

Every executor (``bucketed_dataset``, ``bucketed_pydataset``, ``grain_dataset``,
``packed_dataset``, ``fit_per_length``, ``fit_tbptt``, ``predict``, ``evaluate``, the replica
datasets, ``PadCollate``) keeps the arguments a user sets every day as keywords (``padding``,
``value``, ``pad_to``, ``sample_weight``, ``targets``, ``epoch``) and takes the ones set rarely in
one value object, :class:`Options`, in the way ``tf.data.Options`` gathers a dataset's rarely
changed knobs; :class:`~seqprep.BucketSampler` takes its cost-model knobs the same way. Each
option is declared once here (:data:`DECLARED`: its check and its meaning); a callable says
which options it reads (:func:`options_for`), and an option set to anything but its default
on a callable that does not read it is an error, never silently ignored. Checks that need
more than the value (``quadratic_length`` needs ``max_tokens``; ``field_weights`` one weight
per field) stay with the callable that has the rest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np

from seqprep._core.checks import check_bool, check_choice, check_int

__all__ = ["DECLARED", "OptionSet", "Options", "options_for", "takes_options"]

OptionsT = TypeVar("OptionsT", bound="OptionSet")
F = TypeVar("F", bound=Callable[..., Any])


def _per_field(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """A check that also takes a dict of per-field values (the fields of ``x``, by name)."""

    def checked(name: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: check(f"{name}[{key!r}]", v) for key, v in value.items()}
        return check(name, value)

    return checked


def _side(name: str, value: Any) -> str:
    return check_choice(name, value, ("pre", "post"))


def _dtype(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        np.dtype(value)
    except TypeError:
        raise TypeError(
            f"Argument `{name}` must be a numpy dtype or None. Received: {name}={value!r}\n"
            f'- Pass e.g. {name}="float32", {name}="int32", or None for the default rule.'
        ) from None
    return value


def _data_parallel(name: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    fix = (f'Pass {name}="auto" to read keras.distribution, None, or the number of devices '
           "along the batch axis.")
    if isinstance(value, str):
        raise ValueError(f'Argument `{name}` must be "auto", None or a positive int. '
                         f"Received: {name}={value!r}\n- {fix}")
    return check_int(name, value, minimum=1, fix=fix)


def _epochs(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1, fix=f"Pass {name}=1 or more.")


def _sorted_epochs(name: str, value: Any) -> int | None:
    return check_int(name, value, minimum=0, allow_none=True)


def _quadratic_length(name: str, value: Any) -> int | None:
    return check_int(name, value, minimum=1, allow_none=True)


def _compile_cost(name: str, value: Any) -> float | None:
    if value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0:
        raise (ValueError if ok else TypeError)(
            f"Argument `{name}` must be a number of padded tokens >= 0, or None. Received: "
            f"{name}={value!r}\n- Pass e.g. {name}=1_000_000 (one compile costs as much as "
            f"training 1M padded tokens), or {name}=None for the grid of 16 widths."
        )
    return float(value)


def _field_tokens(name: str, value: Any) -> str:
    return check_choice(name, value, ("sum", "max"))


def _any(name: str, value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Declared:
    """One shared option: its check (returns the value, or raises naming the option) and what
    it means, in one sentence for the docs and the errors."""

    check: Callable[[str, Any], Any]
    meaning: str
    owner: str = "Options"  # the class that holds it: Options, or a planner's PlanOptions


#: Every shared option, declared once.
DECLARED: dict[str, Declared] = {
    "truncating": Declared(_per_field(_side),
                           '"pre" or "post": which end a planned max_length cuts '
                           "(per field: a dict)"),
    "dtype": Declared(_per_field(_dtype),
                      "dtype of the padded batches; None keeps integers, floats wider than "
                      "Keras's floatx (at least float32) become it (per field: a dict)"),
    "allow_nonfinite": Declared(check_bool,
                                "accept NaN/inf in x (never in y or the weights)"),
    "targets_field": Declared(_any,
                              "the field of x whose lengths per-step targets follow, where "
                              "several fields have them"),
    "data_parallel": Declared(_data_parallel,
                              '"auto" (read keras.distribution), None, or a device count k: '
                              "batches get weight-0 fill rows to a multiple of k"),
    "reshuffle_each_iteration": Declared(check_bool,
                                         "each new pass plays the sampler's next epoch(s), as "
                                         "tf.data reshuffles by default"),
    "epochs": Declared(_epochs, "how many consecutive sampler epochs one pass holds"),
    "sorted_epochs": Declared(_sorted_epochs,
                              "with a sorted batch order, how many first epochs are sorted "
                              "(later ones shuffled: SortaGrad); None sorts every epoch"),
    "drop_remainder": Declared(check_bool,
                               "an executor that cuts its own batches leaves out each group's "
                               "partial last batch (a sampler takes its own keyword)"),
    "merge_leftovers": Declared(check_bool,
                                "a sampler packs the partial last batches of neighbouring "
                                "buckets together (fewest batches)",
                                owner="PlanOptions"),
    "quadratic_length": Declared(_quadratic_length,
                                 "with max_tokens, a row of length L costs L + L**2 / "
                                 "quadratic_length tokens (attention-like cost)",
                                 owner="PlanOptions"),
    "compile_cost": Declared(_compile_cost,
                             'on a compiling backend, what one more batch shape costs, in '
                             'padded tokens of training: pad_to="auto" sizes its width grid '
                             "by it (None: 16 widths)",
                             owner="PlanOptions"),
    "train_epochs": Declared(_epochs,
                             'the epochs pad_to="auto" spreads each compile over (with '
                             "compile_cost)",
                             owner="PlanOptions"),
    "field_tokens": Declared(_field_tokens,
                             '"sum" or "max": how a max_tokens budget counts a row of several '
                             "fields",
                             owner="PlanOptions"),
    # Checked by the sampler, which knows its fields' names (errors name the field).
    "field_weights": Declared(_any,
                              "the cost of one padded step of each field in the boundary "
                              "planner (several fields)",
                              owner="PlanOptions"),
}


class OptionSet:
    """What a frozen dataclass of declared options shares: each field is checked by its
    :data:`DECLARED` entry when the object is built, and shown only when changed."""

    def __post_init__(self) -> None:
        for f in fields(self):
            checked = DECLARED[f.name].check(f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, checked)

    def changed(self) -> dict[str, Any]:
        """The options set to something other than their defaults.

        Example:
            >>> Options(epochs=2).changed()
            {'epochs': 2}
        """
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not _same(getattr(self, f.name), f.default)}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.changed().items())
        return f"{type(self).__name__}({shown})"


@dataclass(frozen=True, repr=False)
class Options(OptionSet):
    """The rarely changed options that seqprep's executors share.

    Each executor reads the options that apply to it and refuses one set to a non-default value
    that does not apply to it (the error names the option and the executor). All are checked
    when the object is built.

    Args:
        truncating: ``"pre"`` or ``"post"``: which end a planned ``max_length`` cuts; a dict
            gives one per field of ``x``.
        dtype: dtype of the padded batches; ``None`` keeps integer dtypes and casts floats to
            float32. A dict gives one per field.
        allow_nonfinite: accept NaN / inf in ``x`` (never in targets or weights).
        targets_field: the field of a dict/tuple ``x`` whose lengths per-step targets follow,
            when several fields have the targets' lengths.
        data_parallel: ``"auto"`` reads ``keras.distribution``; ``None`` turns it off; an int
            ``k`` fills every batch to a multiple of ``k`` rows with weight-0 rows.
        reshuffle_each_iteration: every new pass over a dataset plays the sampler's next
            epoch(s) (``False``: replay the same ones).
        epochs: how many consecutive sampler epochs one pass over a dataset holds.
        sorted_epochs: with a sorted batch ``order`` (``fit_per_length``), only the first
            ``sorted_epochs`` epochs are sorted and later ones shuffled
            (``order="ascending"``, ``sorted_epochs=1``: SortaGrad); None sorts every epoch.
        drop_remainder: an executor that cuts its own batches (``fit_per_length``) leaves
            out each group's partial last batch (a ``UserWarning`` says how many sequences
            that leaves out). Samplers take ``drop_remainder=`` as their own keyword.

    Raises:
        ValueError: an option with a value it cannot take (``epochs=0``).
        TypeError: an option of the wrong type (``allow_nonfinite="yes"``, a ``dtype`` that
            is not a dtype).

    Example:
        >>> import seqprep as sp
        >>> sp.Options(dtype="float16", truncating="pre")
        Options(truncating='pre', dtype='float16')
        >>> sp.Options(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: Argument `epochs` must be at least 1. Received: epochs=0
        - Pass epochs=1 or more.
    """

    truncating: Any = "post"
    dtype: Any = None
    allow_nonfinite: bool = False
    targets_field: Any = None
    data_parallel: Any = "auto"
    reshuffle_each_iteration: bool = True
    epochs: int = 1
    sorted_epochs: int | None = None
    drop_remainder: bool = False


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return a is b


def options_for(
    options: Any,
    caller: str,
    reads: tuple[str, ...],
    kind: type[OptionsT] = Options,  # type: ignore[assignment]
) -> OptionsT:
    """``options`` checked for ``caller``: a ``kind`` (:class:`Options`, or a planner's
    ``seqprep.PlanOptions``; None gives the defaults) that sets no option outside ``reads``.

    Args:
        options: what the user passed as ``options=``.
        caller: the public name, for the error message.
        reads: the options ``caller`` uses.
        kind: the option class ``caller`` takes.

    Returns:
        The ``kind`` to read.

    Raises:
        TypeError: ``options`` is not a ``kind`` (a dict is accepted and converted).
        ValueError: an option ``caller`` does not use is set.

    Example:
        >>> options_for(None, "packed_dataset", ("dtype",))
        Options()
        >>> options_for({"truncating": "pre"}, "packed_dataset", ("dtype",))
        Traceback (most recent call last):
        ...
        ValueError: Argument `options` sets truncating='pre', which `packed_dataset` does not use.
        - Leave it at its default there; `packed_dataset` reads only: dtype.
    """
    name = kind.__name__
    if options is None:
        return kind()
    if isinstance(options, Mapping):
        known = sorted(f.name for f in fields(kind))
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(
                f"Argument `options` has unknown keys {unknown}. Known: {known}\n"
                f"- Pass seqprep.{name}(...) with the options you mean."
            )
        options = kind(**options)
    if not isinstance(options, kind):
        raise TypeError(
            f"Argument `options` of `{caller}` must be a seqprep.{name} or None. Received: "
            f"{options!r}\n- Pass options=seqprep.{name}(...)."
        )
    unused = {k: v for k, v in options.changed().items() if k not in reads}
    if unused:
        shown = ", ".join(f"{k}={v!r}" for k, v in unused.items())
        raise ValueError(
            f"Argument `options` sets {shown}, which `{caller}` does not use.\n"
            f"- Leave it at its default there; `{caller}` reads only: {', '.join(reads)}."
        )
    return options


def takes_options(fn: F | None = None, *, kind: str = "Options") -> Any:
    """Decorate a callable that takes ``options=`` (a ``kind``: ``"Options"`` or
    ``"PlanOptions"``): a declared option passed as a keyword (``dtype="float16"``) gets a
    ``TypeError`` that says where it goes, instead of Python's bare "unexpected keyword
    argument" (or, through a ``**kwargs``, an error somewhere else). Any other call goes
    through unchanged.

    Example:
        >>> @takes_options
        ... def run(x, *, sampler=None, options=None):
        ...     return options_for(options, "run", reads=("dtype",))
        >>> run([1], dtype="float16")
        Traceback (most recent call last):
        ...
        TypeError: `run` takes `dtype` in `options`, not as a keyword. Received: dtype='float16'
        - Pass options=seqprep.Options(dtype='float16').
        >>> run([1], merge_leftovers=False)
        Traceback (most recent call last):
        ...
        TypeError: `run` takes no `merge_leftovers`: it belongs in seqprep.PlanOptions. Received: merge_leftovers=False
        - Pass options=seqprep.PlanOptions(merge_leftovers=False) where it is read (e.g. to the sampler).
    """  # noqa: E501
    if fn is None:
        return functools.partial(takes_options, kind=kind)
    own = set(inspect.signature(fn).parameters)
    caller = fn.__qualname__.split(".")[0] if fn.__name__ == "__init__" else fn.__name__

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        moved = {k: v for k, v in kwargs.items() if k in DECLARED and k not in own}
        if moved:
            owner = DECLARED[next(iter(moved))].owner
            moved = {k: v for k, v in moved.items() if DECLARED[k].owner == owner}
            shown = ", ".join(f"{k}={v!r}" for k, v in moved.items())
            names = "`, `".join(moved)
            if owner == kind:
                raise TypeError(
                    f"`{caller}` takes `{names}` in `options`, not as a keyword. Received: "
                    f"{shown}\n- Pass options=seqprep.{owner}({shown})."
                )
            raise TypeError(
                f"`{caller}` takes no `{names}`: it belongs in seqprep.{owner}. Received: "
                f"{shown}\n- Pass options=seqprep.{owner}({shown}) where it is read (e.g. to "
                f"{'the sampler' if owner == 'PlanOptions' else 'the executor'})."
            )
        return fn(*args, **kwargs)

    return wrapper

