"""The archive's views: the issues that went out, one issue as a page, and an Atom feed."""

from __future__ import annotations

from flask import Response, request

from gazette.digests.archive import archived_issue, list_archive
from gazette.digests.routing import lang_query, parse_link_languages
from gazette.errors import GazetteError
from gazette.store.models import utcnow
from gazette.web.pages import Pages


class ArchiveViews(Pages):
    """GET /archive, /archive/<id> and /archive.xml."""

    def archive(self) -> Response:
        """GET /archive: the issues that went out, newest first.

        ``?lang=uk,en`` narrows each issue to those languages, as on the issue page (the
        issue page's "Archive" link carries it back here), and the links keep it.
        """
        slug = request.args.get("newsletter") or None
        try:
            languages = parse_link_languages(request.args.get("lang"))
        except GazetteError as error:
            return self.message(400, "This link does not work", str(error))
        with self.rt.sessions() as session:
            issues = list_archive(session, self.rt.send_context, slug, languages=languages)
        return self.page(
            "archive", issues=issues, languages=languages, lang_query=lang_query(languages),
            **self.newsletter_context(slug or ""),
        )  # fmt: skip

    def archive_issue(self, public_id: str) -> Response:
        """GET /archive/<id>: one issue as a web page (the "view in browser" link).

        ``?lang=uk,en`` (what a reader's link carries when the newsletter routes by
        language) shows that reader's edition: those languages' articles only.
        """
        try:
            languages = parse_link_languages(request.args.get("lang"))
        except GazetteError as error:
            return self.message(400, "This link does not work", str(error))
        with self.rt.sessions() as session:
            item = archived_issue(session, self.rt.send_context, public_id, languages)
        return self.page(
            "archive_issue", item=item, lang_query=lang_query(languages),
            **self.newsletter_context(item.newsletter_slug),
        )  # fmt: skip

    def archive_feed(self) -> Response:
        """GET /archive.xml: an Atom feed of the issues."""
        with self.rt.sessions() as session:
            issues = list_archive(session, self.rt.send_context)
        updated = (issues[0].date if issues else utcnow()).isoformat()
        body = self.rt.renderer.render_page(
            "archive", self.language(), suffix="xml", issues=issues,
            base_url=self.rt.settings.base_url, updated=updated,
            author=", ".join(sorted({i.newsletter_name for i in issues})) or "Gazette",
        )  # fmt: skip
        return Response(body, mimetype="application/atom+xml")
