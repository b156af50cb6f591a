"""Locust scenarios for ThinkSearch (and the same traffic for the peer), run by `loadtests/run.py`.

Environment (set by run.py; settable by hand for `locust -f loadtests/locustfile.py`):
- SCENARIO: hot (a few repeated queries), cold (every query new, thinking), burst (all users send the same new
  query in the same time window), batch (16 queries per batch request), mixed (searches + bulk NDJSON ingest)
- TARGET: thinksearch (default) or peer (the LangChain HyDE endpoint; search scenarios only)
- COLLECTION, API_KEY (optional), BURST_WINDOW_S (burst: seconds one shared query lasts), SHAPE=ramp (users
  stepped up over time by RampShape; stage length STAGE_S, user steps RAMP_USERS, e.g. "1,4,16")
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid

from locust import FastHttpUser, LoadTestShape, constant, task

SCENARIO = os.environ.get("SCENARIO", "hot")
TARGET = os.environ.get("TARGET", "thinksearch")
COLLECTION = os.environ.get("COLLECTION", "loadtest")
BURST_WINDOW_S = float(os.environ.get("BURST_WINDOW_S", "2"))
HOT_QUERIES = [
    "what causes the tides",
    "how do vaccines train the immune system",
    "effect of vitamin D on bone density",
    "role of inflammation in heart disease",
    "how does insulin regulate blood sugar",
    "what is the function of mitochondria",
    "genetic risk factors for breast cancer",
    "antibiotic resistance in bacteria",
]
_run = uuid.uuid4().hex[:6]  # keeps this run's "new" queries new, whatever ran before
_sequence = itertools.count()


def cold_query() -> str:
    return f"{random.choice(HOT_QUERIES)} (case {_run}-{next(_sequence)})"


def burst_query() -> str:
    # Every user sends the same query within one window: the first is cold, the rest coalesce or hit the cache.
    return f"{HOT_QUERIES[0]} (burst {_run}-{int(time.time() // BURST_WINDOW_S)})"


class SearchTarget:
    """Where a search goes and how it is spelled, for ThinkSearch or the peer."""

    def __init__(self) -> None:
        self.headers = {"content-type": "application/json"}
        if key := os.environ.get("API_KEY"):
            self.headers["authorization"] = f"Bearer {key}"

    def search(self, user: FastHttpUser, query: str, name: str) -> None:
        if TARGET == "peer":
            body, path = {"query": query, "top_k": 10}, "/search"
        else:
            body, path = {"query": query, "top_k": 10}, f"/v1/collections/{COLLECTION}/search"
        with user.client.post(path, data=json.dumps(body), headers=self.headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")


class SearchUser(FastHttpUser):
    wait_time = constant(0)
    target = SearchTarget()

    @task
    def search(self) -> None:
        if SCENARIO == "hot":
            self.target.search(self, random.choice(HOT_QUERIES), "search hot")
        elif SCENARIO == "burst":
            self.target.search(self, burst_query(), "search burst")
        elif SCENARIO == "batch":
            body = {"searches": [{"query": random.choice(HOT_QUERIES), "top_k": 10} for _ in range(16)]}
            path = f"/v1/collections/{COLLECTION}/search/batch"
            with self.client.post(
                path, data=json.dumps(body), headers=self.target.headers, name="search batch x16", catch_response=True
            ) as r:
                if r.status_code != 200:
                    r.failure(f"HTTP {r.status_code}")
        else:  # cold, and the search side of mixed
            self.target.search(self, cold_query(), "search cold")


class IngestUser(FastHttpUser):
    """The ingest side of `mixed`: a bulk NDJSON job of 100 new documents every few seconds."""

    wait_time = constant(3)
    weight = 1
    fixed_count = 1

    @task
    def bulk(self) -> None:
        lines = "\n".join(
            json.dumps({"id": f"load-{_run}-{next(_sequence)}", "text": f"{random.choice(HOT_QUERIES)} passage"})
            for _ in range(100)
        )
        headers = {**SearchTarget().headers, "content-type": "application/x-ndjson"}
        path = f"/v1/collections/{COLLECTION}/documents/bulk"
        with self.client.post(path, data=lines, headers=headers, name="bulk x100", catch_response=True) as r:
            if r.status_code != 202:
                r.failure(f"HTTP {r.status_code}")


if SCENARIO != "mixed":
    IngestUser.abstract = True  # only `mixed` ingests


class RampShape(LoadTestShape):
    """Users stepped up (RAMP_USERS, e.g. 1,4,16), STAGE_S seconds each; used when SHAPE=ramp."""

    use_common_options = True

    def __init__(self) -> None:
        super().__init__()
        self.steps = [int(u) for u in os.environ.get("RAMP_USERS", "1,4,16").split(",")]
        self.stage_s = float(os.environ.get("STAGE_S", "20"))

    def tick(self):  # type: ignore[override]
        stage = int(self.get_run_time() // self.stage_s)
        if stage >= len(self.steps):
            return None
        users = self.steps[stage]
        return users, users


if os.environ.get("SHAPE") != "ramp":
    del RampShape  # locust picks up any LoadTestShape defined in the file
