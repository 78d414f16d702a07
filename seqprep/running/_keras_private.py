"""Every private Keras / TensorFlow / backend detail that seqprep relies on, in one place.

Each helper here leans on something Keras (or JAX) does not promise to keep: a private import,
the closure layout of a Keras-built train function, a JAX monitoring event name. Keeping them
together means one file to audit when Keras changes, and ``tests/test_backends.py`` checks each
of them directly, so a change breaks a test that names it instead of silently changing a figure
(a trace count of 0, a mask never found).

* :func:`keras_mask`: the Keras mask of a backend tensor. Keras stores it as a ``_keras_mask``
  attribute where the tensor type allows one and in a side table where it does not; the
  function that knows both is ``keras.src.backend.get_keras_mask``.
* :func:`compiled_identity`: what identifies one ``model.compile`` (the loss and metrics
  containers Keras builds in each ``compile``, ``model._compile_loss`` and
  ``model._compile_metrics``); TBPTT keys its compiled window steps on it.
* :func:`compiled_losses`: the losses one ``model.compile`` set, one per output that has one,
  with its output path, loss weight and name (``model._compile_loss._flat_losses``, built on
  the first structures of targets and outputs as Keras builds it); :func:`seqprep.evaluate`
  reduces each output's loss itself.
* :func:`initial_epoch` / :func:`set_initial_epoch`: the epoch ``model.fit`` starts from when
  a callback resumes a run (``model._initial_epoch``, which ``fit`` reads before its first
  epoch, as Keras's own ``BackupAndRestore`` sets it).
* :func:`stop_server`: stops a ``tf.data`` service dispatcher or worker in-process (the
  public ``stop()``; ``server._stop()`` on TensorFlow releases without it).
* :func:`count_steps`: a ``tf.distribute`` dataset's ``cardinality`` in training steps, for
  Keras's ``fit`` (TensorFlow keeps it in ``DistributedDatasetsFromFunction._cardinality``);
  :func:`counts_pipeline_batches`: whether TensorFlow's count is a pipeline's batches (told
  by TensorFlow's class name).
* :func:`calling_callback_list`: the ``CallbackList`` calling a callback, found on the call
  stack (``sys._getframe``).
* :class:`StepTraces`: how often Keras traced (and so compiled) a model's train and test steps
  during a block of code, without touching ``train_step``:

  - TensorFlow: Keras wraps the step in a ``tf.function``; its public
    ``experimental_get_tracing_count()`` is read from the function Keras builds (found in the
    closure of ``model.train_function``: that layout is Keras's, not an API).
  - JAX: Keras ``jax.jit``-s ``train_step``/``test_step``; JAX reports every trace through the
    public ``jax.monitoring`` listeners as a ``/jax/core/compile/jaxpr_trace_duration`` event
    with the traced function's name (the event name is JAX's, not an API). JAX traces once per
    distinct input shape, so this is the number of programs compiled.
  - PyTorch (and ``run_eagerly``): Keras runs the step eagerly, nothing is traced, so the count
    is ``None``. With ``jit_compile=True`` PyTorch compiles through ``torch.compile``, whose
    counters are private; the count is ``None`` there too.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import keras
from keras.src.backend import get_keras_mask as _get_keras_mask

__all__ = [
    "KERAS_CALLBACK_STATE",
    "StepTraces",
    "calling_callback_list",
    "compiled_identity",
    "count_steps",
    "counts_pipeline_batches",
    "draw_as_iterator_ahead",
    "global_seed_generator",
    "initial_epoch",
    "keras_mask",
    "seed_state_variables",
    "set_initial_epoch",
    "stop_server",
]

JAX_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_STEPS = ("train", "test")


def keras_mask(tensor: Any) -> Any:
    """The Keras mask attached to ``tensor`` by a masking layer, or ``None``."""
    return _get_keras_mask(tensor)


def _keras_attribute(obj: Any, name: str) -> Any:
    """``obj.<name>``, a private attribute Keras sets on every instance; a clear error naming
    this module if a Keras version no longer has it (never a silent default)."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise RuntimeError(
            f"seqprep reads `{name}` of a {type(obj).__name__}, which Keras "
            f"{keras.__version__} no longer sets; seqprep/running/_keras_private.py needs "
            "updating for this Keras version."
        ) from None


# --------------------------------------------------------------------------- compile / fit


def compiled_identity(model: Any) -> tuple[int, int]:
    """Identifies ``model``'s last ``compile``: the ids of the loss and metrics containers
    Keras builds anew in each ``compile(loss=..., metrics=...)`` (``model.loss`` is the user's
    argument, often the same string across compiles, so it cannot tell them apart)."""
    return (id(_keras_attribute(model, "_compile_loss")),
            id(_keras_attribute(model, "_compile_metrics")))


def compiled_losses(model: Any, y_true: Any, y_pred: Any) -> list[tuple[tuple, Any, Any, str]]:
    """The losses ``model.compile`` set, one per output that has one, in Keras's order:
    ``(path, loss, loss_weight, name)``. ``path`` locates the output in ``y_pred`` as Keras
    structures it (a dict loss over a list of outputs keys them by output name); ``loss`` is
    the :class:`keras.losses.Loss` Keras calls (strings and functions already wrapped);
    ``name`` is the output's name, the prefix of its ``<name>_loss`` log. Keras builds its
    compiled loss on the first targets and outputs it sees; so does this, with ``y_true`` and
    ``y_pred`` (any arrays of the right structure), when it is not built yet."""
    compile_loss = _keras_attribute(model, "_compile_loss")
    if compile_loss is None:
        return []
    if not compile_loss.built:
        compile_loss.build(y_true, y_pred)
    return [(tuple(entry.path), entry.loss, entry.loss_weights, entry.name)
            for entry in _keras_attribute(compile_loss, "_flat_losses")]


def initial_epoch(model: Any) -> int:
    """The epoch ``model.fit`` starts from as set by a resuming callback (0 if none is)."""
    return int(_keras_attribute(model, "_initial_epoch") or 0)


def set_initial_epoch(model: Any, epoch: int) -> None:
    """Make the ``model.fit`` being set up start at ``epoch`` (Keras reads it in ``fit`` after
    ``on_train_begin``, as for its own ``BackupAndRestore``)."""
    _keras_attribute(model, "_initial_epoch")  # refuse a Keras that no longer reads it
    model._initial_epoch = epoch


# --------------------------------------------------------------------------- tf.data service


def stop_server(server: Any) -> None:
    """Stop an in-process ``tf.data.experimental.service`` ``DispatchServer`` or
    ``WorkerServer`` now, not when it is garbage collected.

    The servers' public ``stop()`` is used where TensorFlow has it (2.21 does); older releases
    that seqprep supports had only the private ``_stop()``, which is what ``stop()`` calls.
    """
    stop = getattr(server, "stop", None)
    if stop is None:
        stop = _keras_attribute(server, "_stop")
    stop()


# --------------------------------------------------------------------------- TensorFlow


def _same_method(value: Any, step: Any) -> bool:
    return (getattr(value, "__func__", None) is getattr(step, "__func__", step)
            and getattr(value, "__self__", None) is getattr(step, "__self__", None))


def _tf_step_function(function: Any, step: Any) -> Any:
    """The ``tf.function`` closest to ``step`` inside the closures of Keras's ``function``.

    Walks closure cells depth first, remembering the last ``tf.function`` passed through;
    returns it when the bound method ``step`` is reached, ``None`` if it never is.
    """
    seen: set[int] = set()

    def walk(fn: Any, owner: Any) -> Any:
        if id(fn) in seen:
            return None
        seen.add(id(fn))
        if hasattr(fn, "experimental_get_tracing_count"):
            owner, fn = fn, getattr(fn, "python_function", None)
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if _same_method(value, step):
                return owner
            if callable(value):
                found = walk(value, owner)
                if found is not None:
                    return found
        return None

    return walk(function, None)


# --------------------------------------------------------------------------- JAX

_jax_lock = threading.Lock()
_jax_active: list[StepTraces] = []
_jax_listening = False


def _on_jax_event(event: str, duration: float, **kwargs: Any) -> None:
    if event != JAX_TRACE_EVENT:
        return
    name = kwargs.get("fun_name")
    for which in _STEPS:
        if name == f"{which}_step":
            with _jax_lock:
                for counter in _jax_active:
                    counter._jax_counts[which] += 1


def _listen_to_jax() -> None:
    """Register the one process-wide JAX listener (JAX has no public way to remove one)."""
    global _jax_listening
    with _jax_lock:
        if _jax_listening:
            return
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_jax_event)
        _jax_listening = True


# --------------------------------------------------------------------------- the counter


class StepTraces:
    """Counts traces of ``model``'s train and test steps between :meth:`start` and :meth:`stop`.

    :meth:`counts` returns ``{"train": n, "test": m}``, or ``None`` when the backend runs the
    steps eagerly (PyTorch, ``run_eagerly=True``) or cannot say (PyTorch with
    ``jit_compile=True``).
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.backend = keras.backend.backend()
        self._jax_counts = {"train": 0, "test": 0}
        self._tf_functions: dict[str, Any] = {}
        self._tf_base = {"train": 0, "test": 0}

    @property
    def available(self) -> bool:
        return (not getattr(self.model, "run_eagerly", False)
                and self.backend in ("tensorflow", "jax"))

    def start(self) -> StepTraces:
        if not self.available:
            return self
        if self.backend == "jax":
            _listen_to_jax()
            with _jax_lock:
                _jax_active.append(self)
        else:
            # Rebuilt functions (public methods) start from zero traces, so the count is this
            # block's; the old functions would also hold traces made before it.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)
            for which in _STEPS:
                fn = _tf_step_function(getattr(self.model, f"{which}_function"),
                                       getattr(self.model, f"{which}_step"))
                if fn is None:
                    raise RuntimeError(
                        f"seqprep cannot find the tf.function around `{which}_step` in "
                        f"Keras {keras.__version__}'s `model.{which}_function`; "
                        "seqprep/running/_keras_private.py needs updating for this Keras version."
                    )
                self._tf_functions[which] = fn
                self._tf_base[which] = fn.experimental_get_tracing_count()
        return self

    def stop(self) -> None:
        if self.backend == "jax":
            with _jax_lock:
                if self in _jax_active:
                    _jax_active.remove(self)

    def counts(self) -> dict[str, int] | None:
        if not self.available:
            return None
        if self.backend == "jax":
            with _jax_lock:
                return dict(self._jax_counts)
        return {which: fn.experimental_get_tracing_count() - self._tf_base[which]
                for which, fn in self._tf_functions.items()}


# --------------------------------------------------------------------------- BackupAndRestore
#
# What seqprep.BackupAndRestore needs that Keras 3.15 does not offer publicly:
#
# * the state of every ``keras.random.SeedGenerator`` a model's layers draw from (Dropout,
#   recurrent dropout, noise layers): ``model.save_weights`` leaves it out (a layer saves its
#   ``_trainable_variables + _non_trainable_variables`` only), but ``model.variables`` lists
#   it, as a variable Keras names ``"seed_generator_state"``;
# * Keras's global SeedGenerator (``keras.random`` calls without a seed), a global attribute;
# * the ``CallbackList`` that calls a callback (a callback has no public way to see the others);
# * the attributes that hold the state of Keras's own stateful callbacks.

SEED_STATE_NAME = "seed_generator_state"
GLOBAL_SEED_GENERATOR = "global_seed_generator"

# Keras callbacks whose state seqprep.BackupAndRestore saves, and the attributes holding it.
KERAS_CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    keras.callbacks.ReduceLROnPlateau: ("best", "wait", "cooldown_counter"),
    keras.callbacks.EarlyStopping: ("best", "wait", "stopped_epoch", "best_weights",
                                    "best_epoch"),
    keras.callbacks.ModelCheckpoint: ("best", "_batches_seen_since_last_saving",
                                      "_last_batch_seen"),
}


def seed_state_variables(model: Any) -> list[Any]:
    """The state variables of the SeedGenerators of ``model``, in ``model.variables`` order."""
    return [v for v in model.variables if v.name == SEED_STATE_NAME]


def global_seed_generator(create: bool) -> Any:
    """Keras's global SeedGenerator (made if ``create``; else ``None`` when none exists)."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    gen = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
    if gen is None and create:
        gen = seed_generator.global_seed_generator()
    return gen


def calling_callback_list(callback: Any) -> Any:
    """The ``keras.callbacks.CallbackList`` whose hook is calling ``callback`` now, or None.

    Found on the call stack: Keras calls ``callback.on_train_begin`` from
    ``CallbackList.on_train_begin``, whose ``self`` is the list.
    """
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, keras.callbacks.CallbackList) and any(
            c is callback for c in getattr(owner, "callbacks", ())
        ):
            return owner
        frame = frame.f_back
    return None


def draw_as_iterator_ahead() -> None:
    """Draw from the global generators what Keras draws when it makes the next epoch's
    iterator ahead, at the end of an epoch that ran all its batches.

    Keras's ``EpochIterator`` makes that iterator when it has seen as many batches as the
    data has; an epoch that ``BackupAndRestore`` resumed mid-way ends after fewer batches,
    so Keras does not, and the draw must be made for it. On PyTorch the iterator is a
    ``torch.utils.data.DataLoader``'s, which draws its base seed (one int64) from torch's
    default generator; TensorFlow and JAX iterators draw nothing.
    """
    if keras.backend.backend() == "torch":
        import torch

        torch.empty((), dtype=torch.int64).random_()


# --------------------------------------------------------------------------- tf.distribute


def count_steps(distributed: Any, batches_per_step: int) -> Any:
    """Make ``distributed.cardinality`` count training steps, not a pipeline's batches;
    returns ``distributed``.

    ``strategy.distribute_datasets_from_function`` returns TensorFlow's
    ``DistributedDatasetsFromFunction``, whose public ``cardinality`` is its private
    ``_cardinality``: the cardinality of one input pipeline's dataset. A pipeline feeding
    ``batches_per_step`` local replicas (``MirroredStrategy`` on one machine) holds that many
    batches per step, and Keras's ``fit`` (its TF dataset adapter) takes the cardinality as the
    epoch's step count, so it would run one step past the data every epoch: that step finds
    none but still advances ``optimizer.iterations``. TensorFlow's iterators read the value
    only to ask whether it is infinite or 0, which dividing it leaves as it was. Unknown and
    infinite cardinalities are left alone.
    """
    if batches_per_step == 1:
        return distributed
    batches = int(distributed.cardinality)
    if batches < 0:
        return distributed
    if batches % batches_per_step:
        raise ValueError(f"A pipeline's {batches} batches are not a whole number of steps of "
                         f"{batches_per_step} batches (one per local replica).")
    if not hasattr(distributed, "_cardinality"):
        raise RuntimeError(
            f"seqprep sets `_cardinality` of a {type(distributed).__name__} to count training "
            "steps, which this TensorFlow no longer has; seqprep/running/_keras_private.py "
            "needs updating."
        )
    steps = batches // batches_per_step
    distributed._cardinality = type(distributed.cardinality)(steps)  # a NumPy int, as TF's
    if int(distributed.cardinality) != steps:  # `cardinality` no longer reads `_cardinality`
        raise RuntimeError(
            f"The `cardinality` of a {type(distributed).__name__} no longer reads "
            "`_cardinality` in this TensorFlow; seqprep/running/_keras_private.py needs "
            "updating."
        )
    return distributed


def counts_pipeline_batches(dataset: Any) -> bool:
    """Whether a ``tf.distribute`` dataset's ``cardinality`` counts one input pipeline's
    batches (TensorFlow's ``DistributedDatasetsFromFunction``, from
    ``strategy.distribute_datasets_from_function``: steps x local replicas) rather than steps
    (its ``DistributedDataset``, from ``strategy.experimental_distribute_dataset``, which splits
    each global batch between the replicas). Told by TensorFlow's class name, as Keras's data
    adapters tell TensorFlow datasets."""
    return any(c.__name__ == "DistributedDatasetsFromFunction" for c in type(dataset).__mro__)
