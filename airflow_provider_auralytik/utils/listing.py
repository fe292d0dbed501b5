"""Moved to :mod:`airflow_provider_auralytik.conversations.listing`; this path works until 1.0."""

from airflow_provider_auralytik.utils._moved import moved_to

__getattr__ = moved_to(__name__, "airflow_provider_auralytik.conversations.listing")
