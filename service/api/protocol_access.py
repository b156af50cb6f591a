"""Schemas of the access routes: aliases and API keys managed at run time (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field

from service.api.protocol import COLLECTION_NAME
from service.model.documents import Strict
from service.settings import COLLECTION_GRANT, KEY_NAME, RateLimit

# --- aliases ---


class AliasPut(Strict):
    collection: str = Field(pattern=COLLECTION_NAME)


class AliasOut(BaseModel):
    alias: str
    collection: str


class AliasList(BaseModel):
    aliases: list[AliasOut]


# --- keys managed at run time ---


class KeyCreate(Strict):
    name: str = Field(pattern=KEY_NAME)
    scopes: list[Literal["search", "ingest", "admin"]] = Field(min_length=1, max_length=3)
    # Names or prefix patterns ("team-a-*"); unset: every collection.
    collections: list[Annotated[str, Field(pattern=COLLECTION_GRANT)]] | None = Field(
        default=None, min_length=1, max_length=256
    )
    expires_at: AwareDatetime | None = None  # with a time zone; unset: never
    rate_limits: dict[Literal["search", "ingest", "admin"], RateLimit] = Field(default_factory=dict)


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[str]
    collections: list[str] | None
    expires_at: str | None
    rate_limits: dict[str, RateLimit]
    created_at: str
    last_used_at: str | None = None
    digest_prefix: str  # the first 12 hex digits of the key's SHA-256, as logs name keys without a name


class KeyCreated(KeyOut):
    key: str  # the secret: shown once, never again


class KeyList(BaseModel):
    keys: list[KeyOut]
