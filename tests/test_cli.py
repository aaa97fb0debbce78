"""The `retrieval` command end to end, in process: index seeds/, search --json, info."""

from __future__ import annotations

import json

import pytest
from conftest import SEEDS

from retrieval.cli.main import main

SEED_ID = "000_88e63c04297101a7"


@pytest.fixture
def indexed(tmp_path, capsys):
    path = tmp_path / "collection"
    assert main(["index", str(SEEDS), "--collection", str(path), "--quiet"]) == 0
    capsys.readouterr()
    return path


def test_index_then_search_json(indexed, capsys):
    query = "phone call between the Cuban and Chinese presidents"
    argv = ["search", query, "--collection", str(indexed), "-k", "2", "--json", "--no-collapse"]
    assert main(argv) == 0  # two passages of the one seed article: uncollapsed
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 2
    first = hits[0]
    assert {"passage_id", "article_id", "score", "text", "start", "end"} <= set(first)
    assert "by telephone" in first["text"] and first["start"] == 0


def test_reindexing_unchanged_seeds_is_a_no_op(indexed, capsys):
    assert main(["index", str(SEEDS), "--collection", str(indexed), "--quiet"]) == 0
    assert "0 added, 0 updated, 1 unchanged" in capsys.readouterr().out


def test_info_reports_agreement(indexed, capsys):
    assert main(["info", "--collection", str(indexed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["in_agreement"] and info["articles"] == 1 and info["passages"] == 3
    assert info["max_passage_tokens"] <= 256


def test_strict_refuses_a_batch_with_a_bad_line(indexed, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "ok", "text": "Fine."}\n{not json}\n', encoding="utf-8")
    assert main(["index", str(bad), "--collection", str(indexed), "--strict", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "nothing was indexed" in err
    assert main(["info", "--collection", str(indexed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["articles"] == 1


def test_default_skips_the_bad_line_and_indexes_the_rest(indexed, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "ok", "text": "Fine words."}\n{not json}\n', encoding="utf-8")
    assert main(["index", str(bad), "--collection", str(indexed), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"{bad}:2:" in captured.err and "1 added" in captured.out


def test_search_without_a_collection_says_how_to_make_one(tmp_path, capsys):
    assert main(["search", "anything", "--collection", str(tmp_path / "none")]) != 0
    assert "retrieval index" in capsys.readouterr().err


def test_delete_removes_the_article_and_refuses_an_unknown_id(indexed, capsys):
    assert main(["delete", "seed", "--collection", str(indexed)]) == 1  # no article "seed"
    assert "no article with id 'seed'" in capsys.readouterr().err
    assert main(["search", "presidents", "--collection", str(indexed), "--json"]) == 0
    article_id = json.loads(capsys.readouterr().out)[0]["article_id"]
    assert main(["delete", article_id, "nope", "--collection", str(indexed)]) == 1
    captured = capsys.readouterr()
    assert f"deleted {article_id}: 3 passages" in captured.out
    assert "no article with id 'nope'" in captured.err
    assert main(["info", "--collection", str(indexed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["articles"] == 0 and info["passages"] == 0 and info["in_agreement"]


def test_index_saves_a_checkpoint_when_one_is_due(tmp_path, embedder, capsys):
    from retrieval.collection.checkpoint import saved_checkpoints
    from retrieval.collection.collection import Collection
    from retrieval.collection.index_policy import IndexPolicy

    path = tmp_path / "collection"
    with Collection.open(path, embedder, policy=IndexPolicy(delta_max=2), background=False):
        pass  # a new collection whose policy asks for a checkpoint every 2 passages
    assert main(["index", str(SEEDS), "--collection", str(path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint: saving the index (3 passages added since the last checkpoint)" in err
    assert "checkpoint: rebuilt as Flat" in err
    assert [generation for generation, _ in saved_checkpoints(path)] == [1]


def test_search_with_min_score_freshness_and_date_order(indexed, capsys):
    query = "phone call between the Cuban and Chinese presidents"
    # Dense: cosine scores are positive, so aging multiplies each by 0.75 (a negative
    # hybrid score is divided instead, to stay below its fresh value).
    args = ["search", query, "--collection", str(indexed), "--json", "--mode", "dense"]
    assert main([*args, "--min-score", "0.99"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # nothing scores that high
    assert main([*args, "-k", "3"]) == 0
    plain = json.loads(capsys.readouterr().out)
    # The seed article is dated 2021-08-30: one half-life before --now, 0.75 of its score.
    assert main([*args, "-k", "3", "--recency-half-life", "10", "--now", "2021-09-09"]) == 0
    aged = json.loads(capsys.readouterr().out)
    assert [h["score"] for h in aged] == pytest.approx([h["score"] * 0.75 for h in plain])
    assert main([*args, "--sort", "date", "--min-score", "0.1"]) == 0
    assert all(h["score"] >= 0.1 for h in json.loads(capsys.readouterr().out))
    assert main([*args, "--sort", "date"]) == 2  # date order needs --min-score
    assert "needs min_score" in capsys.readouterr().err


def test_related_lists_the_closest_articles(indexed, tmp_path, capsys):
    more = tmp_path / "more.jsonl"
    more.write_text(
        '{"_id": "cuba", "title": "Cuba thanks China", "text": "Cuba thanked China for its '
        'help against the pandemic after a call between the presidents.", "date": "2021-09-01"}\n'
        '{"_id": "cup", "title": "Cup final", "text": "The cup final ended in a draw."}\n',
        encoding="utf-8",
    )
    assert main(["index", str(more), "--collection", str(indexed), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["related", "cuba", "--collection", str(indexed), "-k", "5", "--json"]) == 0
    related = json.loads(capsys.readouterr().out)
    assert [r["article_id"] for r in related] == [SEED_ID, "cup"]  # itself left out
    assert related[0]["title"].startswith("Xi calls") and related[0]["date"] == "2021-08-30"
    assert main(["related", "cuba", "--collection", str(indexed), "-k", "1"]) == 0
    assert capsys.readouterr().out.startswith("1. [")
    assert main(["related", "nope", "--collection", str(indexed)]) == 1
    assert "no article with id 'nope'" in capsys.readouterr().err


def test_a_reader_that_stops_early_is_no_error(indexed):
    """`retrieval info | head -1`: the pipe closes early; no traceback, exit 0."""
    import subprocess
    import sys

    command = f"{sys.executable} -m retrieval info --collection {indexed} | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.startswith("collection") and "Traceback" not in done.stderr
    assert done.returncode == 0, done.stderr
