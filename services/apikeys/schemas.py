"""API shapes for API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from services.api.pages import Page
from services.api.types import StrictId, Text


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Annotated[str, Field(pattern="^(customer|finance|admin|platform)$")]
    account_id: StrictId | None = None
    name: Annotated[Text, Field(max_length=200)] = ""


class ApiKeyOut(BaseModel):
    id: int
    prefix: str
    role: str
    account_id: int | None
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class IssuedApiKeyOut(ApiKeyOut):
    # The secret, shown this once.
    key: str


ApiKeyPage = Page[ApiKeyOut]


class CustomerSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: StrictId
    # Where the credits page links back to (the platform's own page): an http(s) URL, https in production.
    return_url: Annotated[Text, Field(max_length=2048)] | None = None
    # How long the session lives without use; each use renews it (default and bounds: settings).
    lifetime_seconds: Annotated[int, Field(strict=True, ge=1, le=10**9)] | None = None


class CustomerSessionOut(BaseModel):
    id: int
    # The token, shown this once: the browser sends it as ``Authorization: Bearer <token>``.
    token: str
    # The credits page, the token in its fragment (never sent to a server, nor in a Referer).
    url: str
    expires_at: datetime
    account_id: int
