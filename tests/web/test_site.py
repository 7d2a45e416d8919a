"""The rest of the site: health check, security headers, pages that work without JavaScript."""

from __future__ import annotations

import json
import re

from gazette.rendering import LANGUAGES, _translations
from gazette.web import create_app
from tests.support.web import SECURITY_HEADERS, Site, SiteFactory
from tests.web.helpers import tour


def test_healthz_answers_ok_as_json(site: Site) -> None:
    response = site.browser(cookies=False).get("/healthz")
    assert response.status == 200
    assert response.headers.get_content_type() == "application/json"
    assert json.loads(response.body) == {"status": "ok"}


def test_every_html_response_carries_the_security_headers(make_site: SiteFactory) -> None:
    for name, page in tour(make_site).items():
        assert page.headers.get_content_type() == "text/html", name
        for header, value in SECURITY_HEADERS.items():
            assert page.headers[header] == value, (name, header)
        policy = page.headers["Content-Security-Policy"]
        assert policy is not None, name
        directives = {d.strip().split()[0]: d.strip() for d in policy.split(";")}
        assert directives["default-src"] == "default-src 'none'", name
        assert directives["frame-ancestors"] == "frame-ancestors 'none'", name
        assert directives["form-action"] == "form-action 'self'", name
        assert "script-src" not in directives, name


def test_pages_work_without_javascript(make_site: SiteFactory) -> None:
    for name, page in tour(make_site).items():
        lowered = page.text.lower()
        assert "<script" not in lowered, name
        assert not re.search(r"<[^>]+\son[a-z]+\s*=", lowered), name  # no inline handlers
        assert "javascript:" not in lowered, name
        # Every form posts with a plain submit button, no script needed.
        for form in page.forms():
            assert form.method == "post", name
            assert 'type="submit"' in page.text, name


def test_the_app_compiles_every_language_catalogue_when_it_is_built(site: Site) -> None:
    """So the first one-click POST in a language does not wait for its .po file."""
    _translations.cache_clear()
    create_app(site.runtime)
    built = _translations.cache_info()
    assert (built.currsize, built.misses) == (len(LANGUAGES), len(LANGUAGES))
    site.runtime.renderer.translate("uk", "You will receive no more issues of this newsletter.")
    answered = _translations.cache_info()
    assert (answered.hits, answered.misses) == (built.hits + 1, built.misses)
