"""A newsletter's template set picks its email templates; unknown sets are refused."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from gazette.articles.service import ArticleInput, upsert_article
from gazette.config import load_settings
from gazette.digests.planning import plan_issue
from gazette.errors import GazetteError
from gazette.newsletters.service import NewsletterChanges, create_newsletter, update_newsletter
from gazette.store.db import transaction
from gazette.store.models import utcnow
from gazette.subscribers.service import Origin
from gazette.subscribers.subscribing import subscribe
from tests.support.env import install, make_env
from tests.support.messages import parse


def test_a_newsletter_sends_with_its_own_template_set(tmp_path: Path, database_url: str) -> None:
    from worker.tasks import enqueue_issue

    templates = tmp_path / "theme" / "email"
    templates.mkdir(parents=True)
    (templates / "brief.subject.j2").write_text("Brief: {{ issue.articles|length }} item(s)")
    (templates / "brief.txt.j2").write_text("{{ greeting }} BRIEF TEXT {{ unsubscribe_url }}\n")
    (templates / "brief.html.j2").write_text("<p>{{ greeting }} BRIEF HTML</p>")
    settings = load_settings(
        make_env(tmp_path, database_url, template_dir=str(tmp_path / "theme")), cwd=tmp_path
    )
    with install(settings) as runtime:
        assert runtime.renderer.has_template_set("brief")
        assert runtime.renderer.has_template_set("digest")  # the built-in theme fills in
        assert not runtime.renderer.has_template_set("missing")
        with transaction(runtime.sessions) as session:
            newsletter_id = create_newsletter(session, "brief", "The Brief")
            update_newsletter(session, "brief", NewsletterChanges(template_set="brief"))
            upsert_article(
                session,
                # Within the look-back window of the issue planned below.
                ArticleInput("One", "https://example.org/1", utcnow() - timedelta(days=1)),
            )
            subscribe(session, "ada@example.org", "brief", Origin("cli"), confirmed=True)
            plan = plan_issue(session, newsletter_id, utcnow())
        enqueue_issue(plan.issue_id)
    [path] = list((tmp_path / "var" / "outbox" / "new").iterdir())
    message = parse(path)
    assert message["Subject"] == "Brief: 1 item(s)"
    plain = message.get_body(("plain",))
    assert plain is not None
    assert "BRIEF TEXT" in plain.get_content()
    assert "/unsubscribe/" in plain.get_content()


def test_an_unknown_template_set_is_refused_by_the_cli(tmp_path: Path) -> None:
    env = {"GAZETTE_VAR_DIR": str(tmp_path / "var"), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "gazette"]
    subprocess.run([*run, "init"], env=env, check=True, capture_output=True, cwd=tmp_path)
    subprocess.run(
        [*run, "newsletters", "add", "weekly", "--name", "Weekly"],
        env=env, check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    result = subprocess.run(
        [*run, "newsletters", "edit", "weekly", "--template-set", "nope"],
        env=env, capture_output=True, text=True, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_update_newsletter_checks_the_schedule(session: Session) -> None:
    create_newsletter(session, "weekly", "Weekly")
    with pytest.raises(GazetteError, match="Mars/Base"):
        update_newsletter(session, "weekly", NewsletterChanges(timezone="Mars/Base"))
