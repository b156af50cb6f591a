"""Clients of external systems (thinker, embedder, vector store, cache), each behind one small typed client.
Clients depend on nothing above them: a client's request type lives with the client."""
