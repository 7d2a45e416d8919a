"""Reports about sent mail that come back by mail: bounces, delays, complaints, auto-replies.

``reports`` reads one message into a Report, ``formats`` holds the readers of each
format (RFC 3464, RFC 5965, RFC 3834, flufl.bounce for the rest), ``policy`` decides
what a report means for a reader, ``processing`` applies it to the database once, and
``mailboxes`` walks a Maildir.
"""
