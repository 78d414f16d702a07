"""What the two demos (:mod:`seqprep.tools.demo`, :mod:`seqprep.tools.demo_g2p`) share: the
start of a run and the Keras callback that times and reports each training epoch."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The line printed after an epoch: (epochs done, epochs in the fit, Keras logs, wall seconds)
# -> the text, or None for no line.
EpochLine = Callable[[int, int, dict[str, Any], float], "str | None"]


def start_run(out: str | os.PathLike) -> Path:
    """Quiet TensorFlow's logger (every fresh model traces once: its retracing warning is noise
    here) and create the output folder ``out``; return it as a ``Path``."""
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def epoch_clock(line: EpochLine | None = None) -> Any:
    """A Keras callback timing each epoch in wall-clock (``.wall``) and process CPU (``.cpu``)
    seconds; after each epoch it prints ``line(done, total, logs, seconds)`` unless ``line`` is
    None or returns None. Built on call, so importing a demo stays free of Keras."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._wall, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.wall.append(time.perf_counter() - self._wall)
            self.cpu.append(time.process_time() - self._cpu)
            if line is not None:
                total = int(self.params.get("epochs") or epoch + 1)
                text = line(epoch + 1, total, logs or {}, self.wall[-1])
                if text is not None:
                    print(text, flush=True)

    return Clock()
