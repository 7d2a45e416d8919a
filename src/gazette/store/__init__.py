"""The store: models, engines and sessions, migrations. The only package that knows SQL."""
