"""The bundled CMUdict subset and `seqprep demo --task g2p` in its quick mode."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import seqprep as sp
from seqprep.datasets import Pronunciations, load_cmudict
from seqprep.tools.cli import main
from seqprep.tools.demo_g2p import G2P_SETTINGS, batch_padding, validation_split


def test_cmudict_splits_are_fixed_disjoint_and_well_formed():
    train, test = load_cmudict("train"), load_cmudict("test")
    assert isinstance(train, Pronunciations)
    assert (len(train.words), len(test.words)) == (38_000, 2_000)
    assert not set(train.words) & set(test.words)
    assert len(set(train.words)) == len(train.words)
    for data in (train, test):
        assert all(re.fullmatch("[a-z]+", w) for w in data.words)
        assert [len(g) for g in data.graphemes] == [len(w) for w in data.words]
        assert all("".join(data.letters[i] for i in g) == w
                   for g, w in zip(data.graphemes[:500], data.words[:500], strict=True))
        values = np.concatenate(data.phonemes)
        assert values.dtype == np.int32 and values.min() >= 1
        assert values.max() == len(data.phones) - 1 == 39
        assert all(len(p) >= 1 for p in data.phonemes)
    # stress marks are gone: no phoneme name holds a digit
    assert not any(ch.isdigit() for p in train.phones for ch in p)
    assert test.words[:3] == ["unkindest", "commodious", "accrediting"]


def test_cmudict_returns_fresh_arrays_and_takes_the_first_words():
    first = load_cmudict("test", max_words=5)
    first.graphemes[0][:] = 0
    first.phonemes[0][:] = 0
    again = load_cmudict("test")
    assert again.graphemes[0].min() > 0 and again.phonemes[0].min() > 0
    assert again.words[:5] == load_cmudict("test", max_words=5).words


@pytest.mark.parametrize(
    ("kwargs", "error", "word"),
    [({"split": "all"}, ValueError, "`split`"), ({"max_words": 0}, ValueError, "`max_words`"),
     ({"max_words": 1.5}, TypeError, "`max_words`")],
)
def test_cmudict_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        load_cmudict(**kwargs)


@pytest.mark.parametrize(
    ("lengths", "batches", "widths", "expected"),
    [
        # encoder: 1+3 real in 2x3, 2 in 1x2 -> 6 real of 8; decoder: 2+2 in 2x2, 4 in 1x4
        ({"encoder": [1, 3, 2], "decoder": [2, 2, 4]}, [[0, 1], [2]], None,
         {"encoder": 2 / 8, "decoder": 0.0, "total": 2 / 16}),
        # padded to fixed widths 5 and 4: 6 real of 15, 8 real of 12
        ({"encoder": [1, 3, 2], "decoder": [2, 2, 4]}, [[0, 1], [2]],
         {"encoder": 5, "decoder": 4}, {"encoder": 9 / 15, "decoder": 4 / 12, "total": 13 / 27}),
    ],
)
def test_batch_padding_exact_values(lengths, batches, widths, expected):
    lengths = {k: np.array(v) for k, v in lengths.items()}
    got = batch_padding(lengths, [np.array(b) for b in batches], widths)
    assert got == pytest.approx(expected)


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory):
    """The quick demo, with every training and every greedy decoding it runs logged in order:
    ("train", strategy, the words trained on, epochs, whether validation is scored) and
    ("decode", the words decoded)."""
    import seqprep.models
    import seqprep.tools.demo_g2p as demo_g2p

    out = tmp_path_factory.mktemp("g2p")
    events: list[tuple] = []
    real_decode, real_train = seqprep.models.greedy_decode, demo_g2p._train

    def logged_decode(model, sources, **kwargs):
        events.append(("decode", [tuple(np.asarray(s).tolist()) for s in sources]))
        return real_decode(model, sources, **kwargs)

    def logged_train(strategy, words, settings, *, epochs, validation=None, **kwargs):
        events.append(("train", strategy, tuple(words.words), epochs, validation is not None))
        return real_train(strategy, words, settings, epochs=epochs, validation=validation,
                          **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seqprep.models, "greedy_decode", logged_decode)
        patch.setattr(demo_g2p, "_train", logged_train)
        status = main(["demo", "--task", "g2p", "--quick", "--out", str(out),
                       "--verbose", "0"])
    assert status == 0
    return out, json.loads((out / "g2p_results.json").read_text()), events


def _quick_split(results):
    words = load_cmudict("train", max_words=results["data"]["refit_words"])
    kept, held = validation_split(len(words.words), G2P_SETTINGS["validation_fraction"],
                                  seed=0)
    return words, kept, held


def test_g2p_quick_demo_writes_a_consistent_report(g2p_run):
    out, results, _ = g2p_run
    report = (out / "g2p_report.md").read_text()
    assert report.startswith("# seqprep g2p demo")
    assert list(results["strategies"]) == ["2-D buckets", "pad to max"]
    test = load_cmudict("test", max_words=results["data"]["test_words"])
    reference_phonemes = sum(len(p) for p in test.phonemes)
    for name, r in results["strategies"].items():
        # PER is an edit-distance result: edits over the reference phonemes of the test words
        assert r["reference_phonemes"] == reference_phonemes
        assert r["per"] == pytest.approx(r["edits"] / reference_phonemes)
        assert 0 <= r["wer"] <= 1 and r["per"] >= 0
        for example in r["examples"]:
            ref, hyp = example["reference"].split(), example["decoded"].split()
            assert example["reference"] == " ".join(
                test.phones[t] for t in test.phonemes[test.words.index(example["word"])])
            assert sp.edit_distance(ref, hyp) <= max(len(ref), len(hyp))
        assert all(0 <= v < 1 for v in r["padding"].values())
        assert r["epoch_time"] > 0 and r["epoch_cpu_time"] > 0 and r["decode_seconds"] > 0
        assert r["selection"]["train_time"] > 0 and r["selection"]["train_cpu_time"] > 0
        row = next(line for line in report.splitlines() if line.startswith(f"| {name} |"))
        assert f"{r['per']:.4f}" in row and f"{r['wer']:.4f}" in row
        assert f"| {r['selected_epoch']} |" in row
    two_d, full = results["strategies"]["2-D buckets"], results["strategies"]["pad to max"]
    assert two_d["padding"]["total"] < full["padding"]["total"]
    assert results["settings"]["epochs"] == 2 and results["seed"] == 0
    assert (results["data"]["train_words"], results["data"]["validation_words"],
            results["data"]["refit_words"]) == (190, 10, 200)
    assert full["steps_per_epoch"] == 4  # the refit's: ceil(200 / 64), not ceil(190 / 64)


def test_g2p_demo_padding_matches_the_refit_plan(g2p_run):
    _, results, _ = g2p_run
    words, _, _ = _quick_split(results)  # the refit trains on all the words
    dec_in, _ = sp.teacher_forcing(words.phonemes, start=40, end=41)
    lengths = {"encoder": sp.sequence_lengths(words.graphemes),
               "decoder": sp.sequence_lengths(dec_in)}
    sampler = sp.BucketSampler(lengths, batch_size=64, seed=0)
    two_d = results["strategies"]["2-D buckets"]
    fed = [b for e in range(two_d["selected_epoch"]) for b in sampler.batches(e)]
    assert two_d["padding"] == pytest.approx(batch_padding(lengths, fed))
    assert two_d["steps_per_epoch"] == len(sampler)


def test_g2p_validation_split_is_seeded_disjoint_and_complete():
    train, held = validation_split(38_000, 0.05, seed=3)
    assert len(held) == 1_900 and len(train) == 36_100
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(38_000))
    again = validation_split(38_000, 0.05, seed=3)
    assert np.array_equal(again[1], held) and np.array_equal(again[0], train)
    assert not np.array_equal(validation_split(38_000, 0.05, seed=4)[1], held)
    assert len(validation_split(2, 0.01, seed=0)[1]) == 1  # at least one, never all
    assert len(validation_split(2, 0.99, seed=0)[0]) == 1


@pytest.mark.parametrize(("kwargs", "error", "word"),
                         [({"n": 1, "fraction": 0.5}, ValueError, "`n`"),
                          ({"n": 10, "fraction": 0.0}, ValueError, "`fraction`"),
                          ({"n": 10, "fraction": 1.0}, ValueError, "`fraction`")])
def test_g2p_validation_split_bad_arguments(kwargs, error, word):
    with pytest.raises(error, match=word):
        validation_split(**kwargs, seed=0)


def test_g2p_demo_selects_on_validation_refits_on_all_words_then_decodes_the_test_once(
        g2p_run):
    _, results, events = g2p_run
    words, kept, held = _quick_split(results)
    test = load_cmudict("test", max_words=results["data"]["test_words"])
    validation = [tuple(words.graphemes[i].tolist()) for i in held]
    test_words = [tuple(g.tolist()) for g in test.graphemes]
    trained = {tuple(words.graphemes[i].tolist()) for i in kept}
    # the three word sets are disjoint (the bundle's splits hold distinct words)
    assert not set(validation) & set(test_words) and not trained & set(test_words)
    assert not trained & set(validation)
    selection_words = tuple(words.words[i] for i in kept)
    cap = results["settings"]["epochs"]
    expected = []
    for name, r in results["strategies"].items():
        # selection: the validation PER after every epoch; the epoch count chosen is its argmin
        assert len(r["validation_per"]) == cap
        assert r["selected_epoch"] == 1 + int(np.argmin(r["validation_per"]))
        expected += [("train", name, selection_words, cap, True)]
        expected += [("decode", validation)] * cap
        # refit: every training word (train + validation), for the epoch count chosen
        expected += [("train", name, tuple(words.words), r["selected_epoch"], False)]
    # the test words are decoded once per model, last; nothing else is ever decoded
    expected += [("decode", test_words)] * len(results["strategies"])
    assert events == expected


def test_g2p_demo_reuses_a_recorded_selection_and_refits_for_its_epochs(g2p_run, tmp_path):
    """`selection=`: the chosen epochs of an earlier results file (here edited to 2 and 1, so
    neither is what the quick run chose by chance) are the refits' epoch counts; no selection
    run trains, and each refitted model is tested once, after both refits. Training and
    testing are stubbed (the quick run above trains for real): this checks the wiring."""
    import seqprep.tools.demo_g2p as demo_g2p

    out, results, _ = g2p_run
    earlier = json.loads((out / "g2p_results.json").read_text())
    for name, epochs in zip(earlier["strategies"], (2, 1), strict=True):
        earlier["strategies"][name]["selection"]["selected_epoch"] = epochs
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    events = []

    def train(strategy, words, settings, *, epochs, validation=None, **kwargs):
        events.append(("train", strategy, len(words.words), epochs, validation))
        return f"model {strategy}", dict(results["strategies"][strategy])

    def evaluate(model, test, **kwargs):
        events.append(("test", model, len(test.words)))
        return {k: results["strategies"][model[6:]][k] for k in (
            "per", "wer", "edits", "reference_phonemes", "decode_seconds", "examples")}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(demo_g2p, "_train", train)
        patch.setattr(demo_g2p, "_evaluate", evaluate)
        again = demo_g2p.run_g2p_demo(tmp_path / "out", quick=True, selection=path)
    tested = results["data"]["test_words"]
    assert events == [("train", "2-D buckets", 200, 2, None), ("train", "pad to max", 200, 1, None),
                      ("test", "model 2-D buckets", tested), ("test", "model pad to max", tested)]
    for name, r in again["strategies"].items():
        assert r["selection"]["reused_from"] == str(path)
        assert r["selected_epoch"] == earlier["strategies"][name]["selection"]["selected_epoch"]
        assert r["validation_per"] == results["strategies"][name]["validation_per"]
    assert "reused from" in (tmp_path / "out" / "g2p_report.md").read_text()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda d: d["settings"].update(units=9), "same settings"),
    (lambda d: d.update(seed=1), "same settings"),
    (lambda d: d.pop("strategies"), "cannot be read"),
])
def test_g2p_demo_refuses_a_selection_from_another_run(g2p_run, tmp_path, edit, match):
    import seqprep.tools.demo_g2p as demo_g2p

    out, _, _ = g2p_run
    earlier = json.loads((out / "g2p_results.json").read_text())
    edit(earlier)
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match=f"`selection`.*{match}"):
        demo_g2p.run_g2p_demo(tmp_path / "out", quick=True, selection=path)
    assert not (tmp_path / "out").exists()  # refused before anything is written or trained


def test_g2p_best_on_validation_restores_the_epoch_of_the_lowest_validation_per(monkeypatch):
    """The callback keeps the weights of the validation argmin (earliest on ties): scripted
    validation PERs, and weights changed between "epochs" as training would."""
    import keras

    import seqprep.tools.demo_g2p as demo_g2p
    from seqprep.models import reference_seq2seq

    scripted = iter([0.5, 0.3, 0.4, 0.3])
    monkeypatch.setattr(sp, "error_rates", lambda *a: {"token_error_rate": next(scripted)})
    validation = load_cmudict("test", max_words=3)
    model = reference_seq2seq(source_vocab_size=27, target_vocab_size=42, units=2,
                              embedding_dim=2, seed=0)
    best = demo_g2p._BestOnValidation(validation, start=40, end=41)
    best.set_model(model)
    seen = []
    for epoch in range(4):
        model.set_weights([w + 1.0 for w in model.get_weights()])
        seen.append(model.get_weights())
        best.on_epoch_end(epoch)
    best.on_train_end()
    assert best.per == [0.5, 0.3, 0.4, 0.3] and best.best_epoch == 2
    assert len(best.seconds) == 4
    for got, want in zip(model.get_weights(), seen[1], strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_demo_task_flag_is_checked(capsys):
    assert main(["demo", "--task", "translation", "--quick"]) == 2
    assert "--task" in capsys.readouterr().err
