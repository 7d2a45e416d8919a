"""Readers: subscriptions, preferences, CSV lists, bounces and the notices sent to one reader."""
