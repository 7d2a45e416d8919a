"""Events a mail provider reports by webhook, verified and read into bounce Reports.

One module per provider (``ses`` through SNS, ``postmark``, ``mailgun``), each turning a
request it has checked into Reports that ``gazette.bounces.processing`` applies, so the
policy stays in one place; ``events`` holds what they share, ``settings`` their settings.
Nothing here knows the web framework: gazette.web.webhooks is the thin view.
"""
