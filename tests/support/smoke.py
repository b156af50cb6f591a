"""Manual smoke check of the test support: tiny model, vLLM (generate + pooling), Redis.

Run from the repo root:  .venv/bin/python -m tests.support.smoke
                     or  .venv/bin/python tests/support/smoke.py
Takes ~2 minutes on 2 cores (two vLLM startups dominate). Exits non-zero on failure.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `tests.support` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from tests.support.servers import RedisServer, VLLMServer, pid_alive, rss_bytes
from tests.support.tinymodel import EMB, EOS_TOKEN, SPECIAL_TOKENS, build_tiny_model

MODEL = "tiny-o1"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _timed_post(client: httpx.Client, url: str, payload: dict[str, object]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = client.post(url, json=payload)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    return r.json(), dt


def check(cond: bool, msg: str) -> None:
    print(("  ok   " if cond else "  FAIL ") + msg, flush=True)
    if not cond:
        raise SystemExit(f"smoke failed: {msg}")


def check_tokenizer(model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    emb_id = tok.convert_tokens_to_ids(EMB)
    ids = tok("x<emb>").input_ids
    check(ids[-1] == emb_id and ids[:-1] == tok("x").input_ids, f"tokenizer('x<emb>') = {ids}: no BOS, <emb> is one id")
    singles = {t: tok(t).input_ids for t in SPECIAL_TOKENS}
    check(all(len(v) == 1 for v in singles.values()), f"each special token is one id: {singles}")
    prompt = str(
        tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    )
    check(prompt.endswith("<|im_start|>assistant\n"), "ChatML template with generation prompt")


def check_generate(gen: VLLMServer) -> None:
    with httpx.Client(timeout=60) as c:
        before = gen.completion_requests()
        body, dt = _timed_post(
            c,
            f"{gen.base_url}/completions",
            {
                "model": MODEL,
                "prompt": "<query>what is x</query><thought>",
                "n": 3,
                "temperature": 0.1,
                "top_p": 0.9,
                "max_tokens": 32,
            },
        )
        check(len(body["choices"]) == 3, f"/v1/completions n=3 -> {len(body['choices'])} choices in {dt * 1000:.0f} ms")
        print(f"       thought[0]={body['choices'][0]['text'][:60]!r}")
        after = gen.completion_requests()
        check(after - before == 1, f"completion_requests {before} -> {after} (+1 for one n=3 request)")

        body, dt = _timed_post(
            c,
            f"{gen.base_url}/chat/completions",
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Write a passage about x."}],
                "n": 8,
                "max_tokens": 32,
            },
        )
        check(
            len(body["choices"]) == 8,
            f"/v1/chat/completions n=8 -> {len(body['choices'])} choices in {dt * 1000:.0f} ms",
        )
        check(gen.completion_requests() == after + 1, "completion_requests +1 for the chat request")

        lat = []
        for _ in range(5):
            _, dt = _timed_post(
                c,
                f"{gen.base_url}/completions",
                {
                    "model": MODEL,
                    "prompt": "<query>q</query><thought>",
                    "n": 3,
                    "temperature": 0.1,
                    "top_p": 0.9,
                    "max_tokens": 32,
                },
            )
            lat.append(dt * 1000)
        print(f"       n=3 x 32 tokens latency ms: {' '.join(f'{x:.0f}' for x in lat)} (load {_load()})")

        models = c.get(f"{gen.base_url}/models").json()
        check([m["id"] for m in models["data"]] == [MODEL], f"/v1/models lists {MODEL!r}")


def check_embed(emb: VLLMServer) -> None:
    texts = [f"abc{EMB}", f"<query>q</query><thought>t{EOS_TOKEN}{EMB}"]
    with httpx.Client(timeout=60) as c:
        before = emb.embedding_requests()
        body, dt = _timed_post(c, f"{emb.base_url}/embeddings", {"model": MODEL, "input": texts})
        vecs = [d["embedding"] for d in body["data"]]
        norms = [math.sqrt(sum(x * x for x in v)) for v in vecs]
        check(
            len(vecs) == 2 and all(len(v) == 128 for v in vecs),
            f"/v1/embeddings -> 2 x dim {len(vecs[0])} in {dt * 1000:.0f} ms",
        )
        check(all(abs(n - 1.0) < 1e-4 for n in norms), f"L2 norms {[round(n, 6) for n in norms]}")
        check(emb.embedding_requests() == before + 1, "embedding_requests +1")
        # use_activation is what L2-normalises embed output (the old `normalize` key is rejected).
        raw, _ = _timed_post(
            c, f"{emb.base_url}/embeddings", {"model": MODEL, "input": texts[:1], "use_activation": False}
        )
        raw_norm = math.sqrt(sum(x * x for x in raw["data"][0]["embedding"]))
        check(abs(raw_norm - 1.0) > 1e-3, f"use_activation=false -> unnormalised (norm {raw_norm:.3f})")

        # vLLM's own tokenisation: <emb> is ONE token, nothing (no BOS) prepended.
        def ids(text: str) -> list[int]:
            return c.post(f"{emb.url}/tokenize", json={"model": MODEL, "prompt": text}).json()["tokens"]

        check(
            ids("abc<emb>") == ids("abc") + ids("<emb>") and len(ids("<emb>")) == 1,
            f"vLLM /tokenize 'abc<emb>' -> {ids('abc<emb>')}",
        )
        models = c.get(f"{emb.base_url}/models").json()
        check([m["id"] for m in models["data"]] == [MODEL], f"pooling /v1/models lists {MODEL!r}")


def check_pause(gen: VLLMServer) -> None:
    payload = {"model": MODEL, "prompt": "<query>q</query><thought>", "max_tokens": 8}
    gen.pause()
    try:
        httpx.post(f"{gen.base_url}/completions", json=payload, timeout=2.0)
        timed_out = False
    except httpx.TimeoutException:
        timed_out = True
    check(timed_out, "paused server -> request times out (2 s)")
    gen.resume()
    t0 = time.perf_counter()
    r = httpx.post(f"{gen.base_url}/completions", json=payload, timeout=30.0)
    check(r.status_code == 200, f"resumed server answers ({(time.perf_counter() - t0) * 1000:.0f} ms)")


def check_redis() -> None:
    import redis

    with RedisServer() as rs:
        client = redis.Redis.from_url(rs.url, socket_timeout=1)
        check(bool(client.ping() and client.set("k", "v")) and client.get("k") == b"v", f"redis up at {rs.url}")
        rs.stop()
        try:
            client.ping()
            down = False
        except redis.exceptions.ConnectionError:
            down = True
        check(down, "redis stopped -> ConnectionError")
        t0 = time.perf_counter()
        rs.start()
        check(
            bool(client.ping()) and client.get("k") is None,
            f"redis restarted on the same port in {(time.perf_counter() - t0) * 1000:.0f} ms (empty)",
        )


def main() -> int:
    print(f"load at start: {_load()}")
    check_redis()
    with tempfile.TemporaryDirectory(prefix="tiny-model-") as tmp:
        t0 = time.perf_counter()
        model_dir = build_tiny_model(Path(tmp) / "model")
        print(f"tiny model built in {time.perf_counter() - t0:.1f} s at {model_dir}")
        check_tokenizer(model_dir)
        gen = VLLMServer(model_dir, MODEL)
        # Worker on core 1: vLLM's auto binding would put both servers' workers on core 0.
        emb = VLLMServer(model_dir, MODEL, embed=True, cpu_bind="1")
        try:
            # Sequential starts: two cold starts at once just fight over 2 cores.
            for name, srv in (("generate", gen), ("pooling", emb)):
                srv.start()
                binds = [ln.split("]", 1)[-1].strip() for ln in srv.log_tail(400).splitlines() if "core ids=" in ln]
                rss = rss_bytes(srv.process_pids()) / 2**30
                print(
                    f"{name} server up in {srv.startup_seconds:.1f} s, pid {srv.pid}, "
                    f"RSS {rss:.2f} GiB (summed over {len(srv.process_pids())} procs), load {_load()}; {binds}"
                )
            check_generate(gen)
            check_embed(emb)
            check_pause(gen)
            print(
                f"RSS now: generate {rss_bytes(gen.process_pids()) / 2**30:.2f} GiB, "
                f"pooling {rss_bytes(emb.process_pids()) / 2**30:.2f} GiB"
            )
        except Exception:
            for srv in (gen, emb):
                print(f"--- {srv.embed and 'pooling' or 'generate'} log tail ---\n{srv.log_tail(30)}")
            raise
        finally:
            for srv in (gen, emb):
                t0 = time.perf_counter()
                pids = srv.process_pids()
                srv.stop()
                left = [p for p in pids if pid_alive(p)]
                leaks = [ln for ln in srv.log_tail(40).splitlines() if "leaked shared_memory" in ln]
                srv.cleanup()
                print(
                    f"stopped {len(pids)} procs in {time.perf_counter() - t0:.1f} s; "
                    f"still alive: {left}; shm leak warnings: {len(leaks)}"
                )
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
