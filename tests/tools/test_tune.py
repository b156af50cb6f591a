"""`thinksearch tune` against a real gateway: real vLLM (tiny random-weight model), real Redis, real MiniLM."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from service.cli import main
from service.tools.tune import tune
from tests.search.test_think import think_settings
from tests.support.gateway import Gateway

# One document per topic, and a query that shares its words: direct mode ranks every relevant document first.
TOPICS = {
    "tides": ("Tides and the Moon", "Ocean tides are caused by the gravitational pull of the Moon and the Sun."),
    "photo": ("Photosynthesis", "Photosynthesis in plant leaves converts light energy into chemical energy."),
    "vaccine": ("Vaccines", "Vaccines train the immune system to recognise viral pathogens."),
    "inflation": ("Inflation", "Inflation erodes the purchasing power of money and savings over time."),
    "volcano": ("Volcanoes", "Volcanic eruptions push molten lava and ash out of the Earth's crust."),
}
QUERIES = {
    "q1": ("what causes ocean tides, the moon's gravitational pull?", "tides"),
    "q2": ("how do plant leaves turn light energy into chemical energy", "photo"),
    "q3": ("how vaccines train the immune system against viral pathogens", "vaccine"),
    "q4": ("why inflation erodes the purchasing power of money", "inflation"),
}
GRID = {
    "generation": [{"label": "current"}, {"label": "short", "n": 2, "max_tokens": 8}],
    "fusion": [{"method": "vector"}, {"method": "rank", "think_weight": 0.3}],
}


def write_beir(root: Path, docs: list[dict], queries: dict[str, str], qrels: dict[str, str]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    lines = "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items())
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines)
    return root


def load(gw: Gateway, docs: list[dict], think: dict | None = None) -> str:
    name = f"tune_{uuid.uuid4().hex[:8]}"
    assert (
        gw.client.post("/v1/collections", json={"name": name, **({"think": think} if think else {})}).status_code == 201
    )
    documents = [{"id": d["_id"], "title": d["title"], "text": d["text"]} for d in docs]
    assert gw.client.post(f"/v1/collections/{name}/documents", json={"documents": documents}).status_code == 200
    return name


@pytest.fixture(scope="module")
def tgw(vllm, redis_server):
    with Gateway(think_settings(thinker_url=vllm.base_url, redis_url=redis_server.url)) as gateway:
        yield gateway


def test_useless_thoughts_lose_to_direct_and_thinking_is_switched_off(tgw, vllm, tmp_path, capsys):
    docs = [{"_id": k, "title": t, "text": x} for k, (t, x) in TOPICS.items()]
    data = write_beir(
        tmp_path / "beir", docs, {q: t for q, (t, _) in QUERIES.items()}, {q: d for q, (_, d) in QUERIES.items()}
    )
    (tmp_path / "grid.json").write_text(json.dumps(GRID))
    name = load(tgw, docs)
    before = tgw.client.get(f"/v1/collections/{name}").json()["think"]
    args = ["tune", "--data", str(data), "--split", "train", "--collection", name, "--url", tgw.url]
    args += ["--grid", str(tmp_path / "grid.json"), "--concurrency", "2"]

    # (c) A dry run measures every row and leaves the policy as it was.
    requests = vllm.completion_requests()
    main([*args, "--dry-run", "--report", str(tmp_path / "report")])
    assert tgw.client.get(f"/v1/collections/{name}").json()["think"] == before
    # One worker request per query and generation config: the fusions reuse the cached thoughts.
    assert vllm.completion_requests() - requests == len(QUERIES) * len(GRID["generation"])
    # (a) The table: direct and every (generation config, fusion).
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 1 + len(GRID["generation"]) * len(GRID["fusion"])
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == [
        "direct",
        "current / vector α=profile",
        "current / rank w=0.3",
        "short / vector α=profile",
        "short / rank w=0.3",
    ]
    direct, *thinking = report["rows"]
    assert direct["metrics"]["ndcg@10"] == pytest.approx(1.0)  # the set is built so
    assert direct["served"] == {"direct": len(QUERIES)}
    assert all(r["served"] == {"think": len(QUERIES)} and r["tokens_per_query"] > 0 for r in thinking)
    assert report["rows"][0]["winner"] and report["dry_run"] is True and report["written"] is None

    # (b) For real: the tiny model's thoughts are noise, nothing beats direct (ties go to direct): thinking off.
    rows, outcome = tune(
        base_url=tgw.url, data_dir=str(data), split="train", collection=name, grid=str(tmp_path / "grid.json")
    )
    assert [r.label for r in rows] == [r["label"] for r in report["rows"]]
    assert rows[0].winner and not any(r.winner for r in rows[1:])
    assert all(r.tokens_per_query is None for r in rows[1:])  # the dry run's thoughts, from the cache
    assert all(r.vs_direct is not None and r.vs_direct[0] == 0 for r in rows[1:])  # no query above 1.0
    think = tgw.client.get(f"/v1/collections/{name}").json()["think"]
    assert outcome["thinking"] is False and think["enabled"] is False
    # The best think row is kept for searches that still ask `think: true`; the rest of the policy is as it was.
    best = next(r for r in rows if r.label == outcome["best"])
    assert think["fusion"] == best.policy["fusion"]
    assert think["n"] == best.policy.get("n", before["n"]) and think["prompt"] == before["prompt"]


def test_thoughts_that_name_the_relevant_document_win(tgw, tmp_path):
    """The tiny model's thought for a query becomes the text of that query's relevant document: a stand-in for an
    LLM that knows the corpus. Direct mode ranks the query's topical distractors first; thinking finds it. Sampled,
    yet deterministic: tuning finds the very thoughts read here in the cache. (Greedy decoding would do without the
    cache, but the tiny model's most likely first token ends the answer: empty thoughts.)"""
    generation = {"n": 1, "max_tokens": 16}
    distractors = [{"_id": k, "title": t, "text": x} for k, (t, x) in TOPICS.items()]
    name = load(tgw, distractors, think=generation)
    queries = {q: t for q, (t, _) in QUERIES.items()}
    thoughts = {}
    for qid, text in queries.items():
        r = tgw.client.post(
            f"/v1/collections/{name}/search", json={"query": text, "think": True, "include_thoughts": True}
        )
        assert r.status_code == 200 and r.json()["mode"] == "think", r.text
        thoughts[qid] = r.json()["thoughts"][0]
    if len(set(thoughts.values())) < len(thoughts) or not all(t.strip() for t in thoughts.values()):
        pytest.skip(f"the tiny model's thoughts are empty or alike: {thoughts}")
    answers = [{"_id": f"a{qid}", "title": "", "text": t} for qid, t in thoughts.items()]
    docs = [{"id": d["_id"], "text": d["text"]} for d in answers]
    assert tgw.client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    data = write_beir(tmp_path / "beir", distractors + answers, queries, {q: f"a{q}" for q in queries})
    grid = {"generation": [{"label": "n1", **generation}], "fusion": GRID["fusion"]}
    (tmp_path / "grid.json").write_text(json.dumps(grid))

    rows, outcome = tune(
        base_url=tgw.url, data_dir=str(data), split="train", collection=name, grid=str(tmp_path / "grid.json")
    )
    direct, *thinking = rows
    winner = next(r for r in rows if r.winner)
    assert winner is not direct and winner.metrics["ndcg@10"] > direct.metrics["ndcg@10"]
    assert winner.vs_direct is not None and winner.vs_direct[0] >= 1  # queries the thoughts raised
    think = tgw.client.get(f"/v1/collections/{name}").json()["think"]
    assert outcome["thinking"] is True and think["enabled"] is True
    assert (think["n"], think["max_tokens"]) == (1, 16)
    assert think["fusion"] == winner.policy["fusion"] and think["think_weight"] == winner.policy["think_weight"]


def test_an_empty_or_unknown_collection_is_refused_with_what_to_do(tgw, tmp_path):
    data = write_beir(tmp_path / "beir", [], {"q1": "tides"}, {"q1": "tides"})
    empty = f"tune_{uuid.uuid4().hex[:8]}"
    assert tgw.client.post("/v1/collections", json={"name": empty}).status_code == 201
    for name, state in ((empty, "is empty"), (f"{empty}_x", "does not exist")):
        with pytest.raises(SystemExit, match=f"{state}: load the corpus first.*thinksearch ingest"):
            tune(base_url=tgw.url, data_dir=str(data), split="train", collection=name)
