"""Text classification with a tokenizer: TextVectorization, bucketing, a masked reference RNN.

The corpus is generated on the spot (no network): short reviews built from a small
vocabulary, labelled positive when the last sentiment word in them is positive, so word
order matters and a bag of words is not enough. `keras.layers.TextVectorization` maps words
to ids, reserving 0 for padding, which is exactly what `Embedding(mask_zero=True)` in
`seqprep.models.reference_rnn(vocab_size=...)` expects.

    python examples/text_classification.py
    python examples/text_classification.py --quick
"""

from __future__ import annotations

import argparse

import keras
import numpy as np

import seqprep as sp
from seqprep.models import compile_reference, reference_rnn

FILLER = ("the movie was and then a plot with actors in scenes it felt like story "
          "ending music long short but so").split()
POSITIVE = "great wonderful moving brilliant fun".split()
NEGATIVE = "boring awful dull clumsy bad".split()


def make_corpus(n: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(n):
        words = list(rng.choice(FILLER, size=rng.integers(3, 40)))
        label = int(rng.integers(2))
        # A few sentiment words, the last one deciding the label.
        for _ in range(rng.integers(0, 3)):
            words.insert(rng.integers(len(words) + 1),
                         str(rng.choice(POSITIVE + NEGATIVE)))
        words.insert(len(words) - rng.integers(0, 3),
                     str(rng.choice(POSITIVE if label else NEGATIVE)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, np.array(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    args = parser.parse_args()
    n, epochs, units = (300, 1, 8) if args.quick else (4000, 8, 32)
    texts, labels = make_corpus(n)
    test_texts, test_labels = make_corpus(n // 4, seed=1)

    vectorize = keras.layers.TextVectorization(output_mode="int")
    vectorize.adapt(texts)
    vocab_size = vectorize.vocabulary_size()

    def to_ids(batch: list[str]) -> list[np.ndarray]:
        # TextVectorization pads with 0 to the longest text: cut each row back to its words.
        ids = np.asarray(vectorize(batch))
        return sp.unpad(ids, (ids != 0).sum(axis=1))

    x, x_test = to_ids(texts), to_ids(test_texts)

    sampler = sp.BucketSampler(sp.sequence_lengths(x), batch_size=32, seed=0)
    ds = sp.bucketed_dataset(x, labels, sampler=sampler, options=sp.Options(epochs=epochs))
    keras.utils.set_random_seed(0)
    model = compile_reference(reference_rnn(vocab_size=vocab_size, num_classes=2, cell="lstm",
                                            units=units, seed=0))
    model.fit(ds, epochs=epochs, steps_per_epoch=len(sampler), verbose=2, shuffle=False)

    test_ds = sp.bucketed_dataset(
        x_test, test_labels,
        sampler=sp.BucketSampler(sp.sequence_lengths(x_test), batch_size=64, shuffle=False),
    )
    loss, accuracy = model.evaluate(test_ds, verbose=0)
    print(f"vocabulary {vocab_size} ids; test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
