"""Newsletters: what a publisher sends, how it presents itself, the topics it offers."""
