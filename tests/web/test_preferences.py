"""The preferences page: address and language shown, topics and frequency saved, unsubscribe all."""

from __future__ import annotations

from sqlalchemy import select

from gazette.newsletters.service import NewsletterChanges, create_newsletter, update_newsletter
from gazette.store.db import transaction
from gazette.store.models import Subscriber, Subscription, SubscriptionStatus
from gazette.tokens import Purpose
from gazette.web.csrf import FIELD
from tests.support import web
from tests.web.helpers import add_topics


def test_preferences_page_shows_the_readers_address_and_language(site: web.Site) -> None:
    rt = site.runtime
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True, language="uk")
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, web.SLUG)}"
    page = site.browser().get(url)
    assert page.status == 200
    assert web.EMAIL in page.text
    assert web.NAME in page.text
    assert '<html lang="uk">' in page.text
    form = page.form(url)
    assert form.value("language") == "uk"
    assert form.value(FIELD)


def test_preferences_post_saves_language_and_topics(site: web.Site) -> None:
    rt = site.runtime
    add_topics(rt, "Energy", "Climate")
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, web.SLUG)}"
    browser = site.browser()
    page = browser.get(url)
    form = page.form(url)
    assert form.input_types["topic"] == "checkbox"
    assert [v for k, v in form.fields if k == "topic"] == []  # nothing chosen yet

    saved = browser.submit(form, language="ja", topic="energy", action="save")
    assert saved.status == 200, saved.text
    assert '<html lang="ja">' in saved.text
    assert 'class="notice"' in saved.text
    assert [v for k, v in saved.form(url).fields if k == "topic"] == ["energy"]
    after = web.snapshot(rt)
    assert after.languages[web.EMAIL] == "ja"
    assert after.topics[(web.EMAIL, web.SLUG)] == {"energy"}
    assert after.statuses[(web.EMAIL, web.SLUG)] == SubscriptionStatus.ACTIVE
    assert after.events["preferences"] == 1


def test_preferences_offer_a_frequency_only_where_the_newsletter_does(site: web.Site) -> None:
    rt = site.runtime
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, web.SLUG)}"
    browser = site.browser()
    page = browser.get(url)
    assert 'name="frequency"' not in page.text
    # A newsletter sent every morning may offer a weekly summary instead.
    with transaction(rt.sessions) as session:
        update_newsletter(
            session, web.SLUG, NewsletterChanges(cron="0 7 * * *", allow_frequency=True)
        )
    page = browser.get(url)
    assert ">Every issue</option>" in page.text
    assert ">Weekly summary</option>" in page.text
    saved = browser.submit(page.form(url), frequency="weekly", action="save")
    assert saved.status == 200, saved.text
    assert saved.form(url).value("frequency") == "weekly"
    with rt.sessions() as session:
        frequency = session.scalar(
            select(Subscription.frequency)
            .join(Subscriber, Subscriber.id == Subscription.subscriber_id)
            .where(Subscriber.email == web.EMAIL)
        )
    assert frequency == "weekly"
    # A value the form never offers is refused with the reason, and nothing is saved.
    refused = browser.submit(saved.form(url), frequency="hourly", action="save")
    assert refused.status == 400, refused.text
    assert "Frequency &#39;hourly&#39; is not one of daily, weekly." in refused.text


def test_preferences_unsubscribe_all_ends_every_subscription(site: web.Site) -> None:
    rt = site.runtime
    with transaction(rt.sessions) as session:
        create_newsletter(session, web.OTHER_SLUG, web.OTHER_NAME)
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True, slugs=(web.SLUG, web.OTHER_SLUG))
    web.add_reader(rt, web.ACTIVE_EMAIL, confirmed=True, slugs=(web.SLUG, web.OTHER_SLUG))
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, web.SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    response = browser.submit(form, action="unsubscribe-all")
    assert response.status == 200, response.text
    assert "You are unsubscribed from every newsletter." in response.text
    after = web.snapshot(rt)
    assert after.statuses == {
        (web.EMAIL, web.SLUG): SubscriptionStatus.UNSUBSCRIBED,
        (web.EMAIL, web.OTHER_SLUG): SubscriptionStatus.UNSUBSCRIBED,
        (web.ACTIVE_EMAIL, web.SLUG): SubscriptionStatus.ACTIVE,
        (web.ACTIVE_EMAIL, web.OTHER_SLUG): SubscriptionStatus.ACTIVE,
    }
    assert after.events["unsubscribed"] == 2


def test_preferences_post_without_csrf_is_refused(site: web.Site) -> None:
    rt = site.runtime
    add_topics(rt, "Energy")
    public_id = web.add_reader(rt, web.EMAIL, confirmed=True)
    url = f"/preferences/{rt.tokens.mint(Purpose.PREFERENCES, public_id, web.SLUG)}"
    browser = site.browser()
    form = browser.get(url).form(url)
    before = web.snapshot(rt)
    for action in ("save", "unsubscribe-all"):
        fields = [(k, v) for k, v in form.filled(language="ja", topic="energy") if k != FIELD]
        response = browser.post(url, [*fields, ("action", action)])
        assert response.status == 403, response.text
        assert web.title_of(response) == "Form expired"
    assert web.snapshot(rt) == before
