"""/docs loads nothing from elsewhere: every URL its page references is on the same origin and answers 200."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from services.app.app import create_app
from services.core.db import make_engine
from services.core.settings import Settings


def _client() -> TestClient:
    # No database work: the docs are static (an engine that is never used).
    return TestClient(create_app(Settings(environment="test"), engine=make_engine("sqlite://")))


def test_the_docs_page_references_only_its_own_origin_and_each_reference_answers() -> None:
    with _client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        references = re.findall(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", html)
        references += re.findall(r"""\burl:\s*['"]([^'"]+)['"]""", html)
        assert len(references) >= 4  # the stylesheet, the icon, the script, the OpenAPI document
        assert '"validatorUrl": null' in html
        assert not re.search(r"https?://|//[a-z0-9]", html, re.IGNORECASE), "the page names another origin"
        for reference in references:
            assert reference.startswith("/"), reference
            response = client.get(reference)
            assert response.status_code == 200, reference
            assert response.content
        assert client.get("/docs/oauth2-redirect").status_code == 200


def test_redoc_is_not_served() -> None:
    with _client() as client:
        assert client.get("/redoc").status_code == 404
