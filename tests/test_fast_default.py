"""The fast engine by default: the quality guard, and the backend chosen per machine."""

from __future__ import annotations

import json

import pytest
from test_evaluation import CORPUS, QRELS, QUERIES, write_beir

from retrieval.cli.main import main
from retrieval.errors import InputError
from retrieval.evaluation import guard
from retrieval.evaluation.guard import Comparison, GuardSet, paired
from retrieval.models import backends
from retrieval.models import choice as backend_choice
from retrieval.models import verdicts as verdicts_module
from retrieval.models.choice import Noise, Speed
from retrieval.models.embedding import default_model_path
from retrieval.models.openvino import export_key

# -- the guard's rule, on numbers made up to sit on either side of it -----------------------


def test_a_loss_on_every_query_is_worse_and_noise_is_not():
    reference = {f"q{i}": 0.5 + 0.01 * (i % 7) for i in range(40)}
    lower = {q: s - 0.02 - 0.001 * (i % 3) for i, (q, s) in enumerate(reference.items())}
    assert paired("set", "dense", reference, lower).worse
    # Two queries lose a lot and two gain as much: no evidence of a loss.
    noisy = dict(reference, q1=0.0, q2=0.0, q3=1.0, q4=1.0)
    assert not paired("set", "dense", reference, noisy).worse
    same = paired("set", "lexical", reference, dict(reference))
    assert (same.delta, same.p_worse, same.worse) == (0.0, 1.0, False)


def test_small_losses_everywhere_fail_on_the_mean_though_none_is_significant():
    small = [Comparison("s", m, 30, 0.5, 0.497, 0.3) for m in ("dense", "hybrid")]
    passed, mean = guard.judge("x", small)
    assert not passed and mean == pytest.approx(-0.003)
    mixed = [*small, Comparison("s", "lexical", 30, 0.5, 0.505, 1.0)]
    assert guard.judge("x", mixed) == (True, pytest.approx(-1 / 3 * 0.001))
    worse = [Comparison("s", "dense", 300, 0.5, 0.499, 0.01)]
    assert guard.judge("x", worse)[0] is False  # significant, however small


# -- the guard end to end, on a tiny labelled set ---------------------------------------------


def test_the_guard_runs_every_mode_and_records_a_verdict_for_its_recipe(tmp_path):
    write_beir(tmp_path / "sets" / "tiny", CORPUS, QUERIES, QRELS)
    verdict = guard.run_guard("openvino-fp32", datasets=tmp_path / "sets",
                              cache=tmp_path / "cache", sets=(GuardSet("Tiny", "tiny"),),
                              log=lambda line: None)
    assert [c.mode for c in verdict.comparisons] == ["dense", "lexical", "hybrid"]
    assert all(c.queries == 4 for c in verdict.comparisons)  # judged queries only
    lexical = verdict.comparisons[1]
    assert (lexical.delta, lexical.p_worse) == (0.0, 1.0)  # lexical search embeds nothing
    assert verdict.passed and "avx2" in verdict.cpu

    verdicts = tmp_path / "verdicts.json"
    verdicts_module.record_verdict(verdict.backend, verdict.as_dict(), verdicts)
    fingerprint, recipe = export_key(default_model_path(), "fp32")
    assert verdicts_module.passed("openvino-fp32", fingerprint, recipe, verdicts)
    passed = verdicts_module.passed
    assert not passed("openvino-fp32", fingerprint, "v0", verdicts)  # another export
    assert not passed("openvino-int8", fingerprint, recipe, verdicts)  # never judged
    assert "**passes**" in guard.table(verdict)


def test_the_shipped_verdicts_pass_the_fast_backends_for_the_packaged_model():
    model = default_model_path()
    for name in ("openvino-int8", "openvino-fp32"):
        fingerprint, recipe = export_key(model, name.removeprefix("openvino-"))
        assert verdicts_module.passed(name, fingerprint, recipe), name
    assert backend_choice.eligible(model) == list(backend_choice.CANDIDATES)


# -- the choice per machine -------------------------------------------------------------------


def test_the_best_backend_is_the_best_geometric_mean_of_its_three_speed_ups():
    speeds = {"torch": Speed(12.0, 30.0, 400.0), "openvino-int8": Speed(3.0, 80.0, 1100.0),
              "openvino-fp32": Speed(2.5, 35.0, 800.0)}
    assert backend_choice.best(speeds) == "openvino-int8"  # 4 * 2.67 * 2.75 > 4.8 * 1.17 * 2
    assert backend_choice.best({"torch": Speed(12.0, 30.0, 400.0)}) == "torch"
    # Faster alone and at ingest, but far slower in the service's batches (AVX2, fp32):
    slow_batches = {"torch": Speed(31.0, 19.0, 310.0), "openvino-fp32": Speed(18.8, 22.0, 129.0)}
    assert backend_choice.best(slow_batches) == "torch"  # 1.65 * 1.16 * 0.42 < 1


def test_the_choice_is_measured_once_per_machine_and_then_read(tmp_path):
    model = default_model_path()
    choice = backend_choice.chosen_backend(model, directory=tmp_path)
    assert set(choice.speeds) == set(backend_choice.eligible(model))
    assert choice.backend == backend_choice.best(choice.speeds)
    assert all(s.query_ms > 0 and s.passages_per_s > 0 and s.queries_per_s > 0
               for s in choice.speeds.values())
    assert choice.noise is not None and set(choice.noise.spread) == set(choice.speeds)
    [saved] = tmp_path.glob("backend-choice-*.json")
    assert json.loads(saved.read_text())["backend"] == choice.backend

    def must_not_measure(names, model_dir):
        raise AssertionError("measured again")

    again = backend_choice.chosen_backend(model, directory=tmp_path, measure=must_not_measure)
    assert again == choice
    assert backend_choice.cached_choice(model, tmp_path) == choice
    assert choice.backend in choice.reason() and "avx2" in choice.reason()


def test_a_measurement_is_noisy_when_its_rounds_differ_or_the_machine_was_busy():
    rounds = [Speed(4.0, 100.0, 1000.0), Speed(5.0, 90.0, 1000.0), Speed(4.2, 100.0, 800.0)]
    assert backend_choice.spread(rounds) == pytest.approx(0.25)  # 1000 against 800 queries/s
    assert backend_choice.best_round(rounds) == Speed(4.0, 100.0, 1000.0)
    quiet = Noise(load_average=0.3, cpus=2, spread={"torch": 0.05, "openvino-int8": 0.1})
    assert not quiet.noisy() and quiet.describe().endswith("quiet")
    assert Noise(0.3, 2, {"torch": 0.05, "openvino-int8": 0.25}).noisy()
    busy = Noise(load_average=3.5, cpus=2, spread={"torch": 0.05})
    assert busy.noisy() and "retrieval info --remeasure" in busy.describe()


@pytest.mark.slow
def test_remeasuring_replaces_a_choice_made_under_load_and_records_its_noise(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(backend_choice, "default_choice_dir", lambda: tmp_path)
    # Fewer texts than a real choice: the same measurement, over in seconds.
    monkeypatch.setattr(backend_choice, "QUERY_SAMPLES", 4)
    monkeypatch.setattr(backend_choice, "PASSAGE_SAMPLES", 8)
    model = default_model_path()
    path = backend_choice.choice_path(model, backend_choice.eligible(model), tmp_path)
    stale = {"backend": "torch", "speeds": {"torch": vars(Speed(90.0, 3.0, 40.0))},
             "cpu": "busy", "made": "2026-01-01 00:00 UTC"}
    path.write_text(json.dumps(stale))
    assert "noise not recorded" in backends.describe_default()

    assert main(["info", "--remeasure"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("new collections    ") and "load average" in printed
    remade = backend_choice.read_choice(path)
    assert remade is not None and remade.made != stale["made"]
    assert remade.noise is not None and set(remade.noise.spread) == set(remade.speeds)
    assert remade.noise.cpus >= 1 and remade.noise.load_average >= 0
    assert set(remade.speeds) == set(backend_choice.eligible(model))
    assert remade.noise.describe() in backends.describe_default()


def test_an_environment_variable_names_the_backend_instead(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_VARIABLE, "torch")
    assert backends.default_backend() == "torch"
    assert backends.describe_default() == "torch (from $RETRIEVAL_BACKEND)"
    monkeypatch.setenv(backends.BACKEND_VARIABLE, "fastest")
    with pytest.raises(InputError, match="RETRIEVAL_BACKEND='fastest' names no backend"):
        backends.default_backend()


def test_a_new_collection_gets_the_choice_and_info_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(backends.BACKEND_VARIABLE, raising=False)
    expected = backend_choice.chosen_backend(default_model_path()).backend
    seed = tmp_path / "a.txt"
    seed.write_text("Fast engines\n\nA short article about fast search engines.\n")
    collection = tmp_path / "c"
    assert main(["index", str(seed), "--collection", str(collection), "--quiet"]) == 0
    manifest = json.loads((collection / "manifest.json").read_text())
    assert manifest["embedder"]["backend"] == expected
    capsys.readouterr()
    assert main(["info", "--collection", str(collection)]) == 0
    printed = capsys.readouterr().out
    assert f"new collections    {expected}, the fastest on this CPU" in printed
