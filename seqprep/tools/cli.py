"""The ``seqprep`` command: ``seqprep demo`` and ``seqprep analyze PATH``.

``main(argv)`` returns the exit status: 0 on success, 2 for a usage or input error (a
missing file or column, lengths that are not non-negative integers), with a message on
standard error that names the problem (by its command-line flag). Output piped into a reader
that stops early (``seqprep analyze x.npy | head -3``) ends quietly with status 0.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


# Python argument names as the command line spells them, so errors raised by the library name
# the flag the user typed.
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors end with what to do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n- Run `{self.prog} --help` for the "
                     "accepted arguments and values.\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


_BACKENDS = ("tensorflow", "jax", "torch")


def _use_backend(backend: str) -> bool:
    """Select the Keras backend for this process; False if Keras already runs on another.

    Keras reads ``KERAS_BACKEND`` once, when it is first imported, so the variable is set
    before anything imports Keras.
    """
    keras = sys.modules.get("keras")
    if keras is not None:
        return keras.backend.backend() == backend
    os.environ["KERAS_BACKEND"] = backend
    return True


def _parser() -> argparse.ArgumentParser:
    from seqprep import __version__

    parser = _Parser(
        prog="seqprep",
        description="Cheap and correct training on variable-length sequences.",
    )
    parser.add_argument("--version", action="version", version=f"seqprep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="train the reference RNN on bundled real data with each batching strategy",
        description=(
            "Train the reference RNN on the bundled Japanese Vowels data with each of five "
            "batching strategies (pad to max, tf.data bucket_by_sequence_length, seqprep "
            "buckets, fit_per_length, packed rows: several sequences per row through "
            "PackedRNN) and a many-to-many next-frame task; print a table and write report.md "
            "and four PNG plots."
        ),
    )
    demo.add_argument("--out", default="seqprep-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--epochs", type=_positive_int, default=None,
                      help="training epochs per strategy (default: the documented setting)")
    demo.add_argument("--seed", type=int, default=0, help="seed shared by every strategy")
    demo.add_argument("--quick", action="store_true",
                      help="a smoke run: small model and a subset of the data (for tests)")
    demo.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                      help="Keras's own output while training: 0 none, the demo prints a line "
                           "every few epochs (default); 1 progress bars; 2 a line per epoch")
    demo.add_argument("--task", choices=("vowels", "g2p"), default="vowels",
                      help="vowels: the RNN classifier on Japanese Vowels (default); g2p: the "
                           "reference encoder-decoder on CMUdict, 2-D buckets against pad to "
                           "max, written to g2p_report.md")
    demo.add_argument("--backend", choices=_BACKENDS, default=None,
                      help="Keras backend to train on (default: $KERAS_BACKEND, else Keras's "
                           "own default, tensorflow)")

    analyze = sub.add_parser(
        "analyze",
        help="padding cost of batching strategies for the lengths in a file",
        description=(
            "Read sequence lengths from a CSV/Parquet/NPY file (a column of lengths, or a "
            "long-format table with one row per step and an id column), print a summary and "
            "compare padding and batch shapes for five strategies: pad to max, random "
            "batches, quantile buckets, seqprep buckets and seqprep for JAX (the width grid "
            "bucketed_dataset pads to there); recommend boundaries and write two plots "
            "(PATH-stem_lengths.png and PATH-stem_padding.png). With two or more --column "
            "(an encoder-decoder's source and target lengths), compare the padding of all "
            "fields together: pad-to-max, random batches, 1-D buckets on each column, sorted "
            "by the columns, and seqprep's 2-D buckets."
        ),
    )
    analyze.add_argument("path", help="a .csv, .parquet or .npy file")
    what = analyze.add_mutually_exclusive_group()
    what.add_argument("--column", action="append", metavar="COLUMN",
                      help="column holding one length per sequence (default: the only "
                           "column of a one-column table); repeat it (--column src "
                           "--column tgt) or pass several as src,tgt for examples of "
                           "several fields (2-D buckets)")
    what.add_argument("--id", dest="id_column",
                      help="id column of a long-format table (lengths = rows per id)")
    budget = analyze.add_mutually_exclusive_group()
    budget.add_argument("--batch-size", type=_positive_int, default=None,
                        help="rows per batch (default 32)")
    budget.add_argument("--max-tokens", type=_positive_int, default=None,
                        help="padded steps per batch (rows x padded length)")
    analyze.add_argument("--num-buckets", type=_positive_int, default=None,
                         help="bucket count for the bucketing strategies (default: seqprep's "
                              "choice for these lengths)")
    analyze.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    analyze.add_argument("--out", default=None,
                         help="folder for the plots (default: the current folder)")
    return parser


def _analyze(args: argparse.Namespace) -> int:
    from seqprep.readers._ingest_files import read_lengths
    from seqprep.tools.analyze import analyze_lengths, format_analysis

    path = Path(args.path)
    fix = "\n- Pass the path of a .csv, .parquet or .npy file."
    if not path.exists():
        raise FileNotFoundError(f"Argument PATH: no such file. Received: {str(path)!r}{fix}")
    if path.is_dir():
        raise FileNotFoundError(
            f"Argument PATH is a folder, not a file. Received: {str(path)!r}{fix}"
        )
    columns = [c for given in args.column or () for c in given.split(",") if c]
    if len(columns) > 1:
        lengths = {c: read_lengths(path, column=c) for c in columns}
    else:
        lengths = read_lengths(path, id=args.id_column, column=columns[0] if columns else None)
    result = analyze_lengths(
        lengths, batch_size=args.batch_size, max_tokens=args.max_tokens,
        num_buckets=args.num_buckets, seed=args.seed,
    )
    print(f"{path}:")
    print(format_analysis(result))
    out = Path(args.out) if args.out is not None else Path.cwd()
    out.mkdir(parents=True, exist_ok=True)
    try:
        from seqprep.tools import plots
        hist = out / f"{path.stem}_lengths.png"
        first = next(iter(lengths.values())) if isinstance(lengths, dict) else lengths
        bounds = result["recommended_boundaries"]
        plots.length_histogram(
            first, bounds[0] if isinstance(lengths, dict) else bounds,
            title=f"{path.name}: lengths{f' of {columns[0]}' if len(columns) > 1 else ''} "
                  "and seqprep bucket boundaries", path=hist,
        )
        padding = out / f"{path.stem}_padding.png"
        plots.padding_by_strategy(
            {k: v["padding_fraction"] for k, v in result["strategies"].items()},
            title=f"{path.name}: padding per strategy", path=padding,
        )
    except ImportError as error:  # matplotlib missing: the numbers are still useful
        print(f"(no plots: {error})", file=sys.stderr)
    else:
        print(f"Plots: {hist}, {padding}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.backend is not None and not _use_backend(args.backend):
        # Keras is already imported on another backend (main() called in-process): run the
        # demo in a fresh interpreter, where the backend can still be chosen.
        env = {**os.environ, "KERAS_BACKEND": args.backend}
        return subprocess.run([sys.executable, "-m", "seqprep", *args.argv], env=env).returncode
    if args.task == "g2p":
        from seqprep.tools.demo_g2p import run_g2p_demo

        run_g2p_demo(out=args.out, epochs=args.epochs, seed=args.seed, quick=args.quick,
                     verbose=args.verbose)
        return 0
    from seqprep.tools.demo import run_demo

    run_demo(out=args.out, epochs=args.epochs, seed=args.seed, quick=args.quick,
             verbose=args.verbose)
    return 0


# Python argument names that a subcommand exposes as flags, so that errors name the flag.
_FLAGS = {
    "analyze": {
        "batch_size": "--batch-size", "max_tokens": "--max-tokens", "num_buckets": "--num-buckets",
        "seed": "--seed", "column": "--column", "id": "--id", "path": "PATH",
    },
    "demo": {
        "epochs": "--epochs", "seed": "--seed", "out": "--out", "verbose": "--verbose",
        "backend": "--backend", "task": "--task",
    },
}


def _with_flags(message: str, command: str) -> str:
    """``message`` with the Python argument names of ``command`` replaced by its flags
    (`` `id` ``, `` `id=` `` and ``id=...`` all become ``--id``)."""
    for name, flag in _FLAGS.get(command, {}).items():
        message = re.sub(rf"`{name}=?`", f"`{flag}`", message)
        message = re.sub(rf"(?<![\w.`-]){name}=", f"{flag}=", message)
    return message


def _quiet_broken_pipe() -> int:
    """The reader of our output has gone (``| head``): stop without a traceback."""
    # Later flushes of sys.stdout (at exit too) would fail again; send them nowhere.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (tests): nothing to redirect
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``seqprep`` command line and return its exit status.

    Args:
        argv: the arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success; 2 on a usage error or bad input (the message goes to standard error).

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     status = main(["analyze", "no-such-file.csv"])
        >>> status, err.getvalue().splitlines()[0]
        (2, "seqprep analyze: error: Argument PATH: no such file. Received: 'no-such-file.csv'")
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed the usage error
        return int(exit_.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler = {"demo": _demo, "analyze": _analyze}[args.command]
    try:
        status = handler(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (FileNotFoundError, ValueError, TypeError, ImportError) as error:
        message = _with_flags(str(error), args.command)
        print(f"seqprep {args.command}: error: {message}", file=sys.stderr)
        return 2
