"""
The errors a caller of this provider may want to catch, in one place.

The API errors are defined here, below every module that raises or catches them: the hook raises
them, the domain (:mod:`~airflow_provider_auralytik.conversations`) catches them without importing
the hook. ``airflow_provider_auralytik.hooks.auralytik`` re-exports them under their published names.

The domain's own errors are defined with their rules and re-exported here for readers:

- :class:`~airflow_provider_auralytik.conversations.window.EmptyWindowError`,
  :class:`~airflow_provider_auralytik.conversations.window.CreatedAtError`: a window or a
  ``createdAt`` that cannot be used;
- :class:`~airflow_provider_auralytik.conversations.listing.ListingError`,
  :class:`~airflow_provider_auralytik.conversations.listing.CrowdedInstantError`: the API's answers
  cannot give an exact listing;
- :class:`~airflow_provider_auralytik.conversations.pii.PiiLeakError`: masked messages still hold
  contact details.
"""

from __future__ import annotations

from airflow_provider_auralytik._compat import AirflowException
from airflow_provider_auralytik.conversations.listing import CrowdedInstantError, ListingError
from airflow_provider_auralytik.conversations.pii import PiiLeakError
from airflow_provider_auralytik.conversations.window import CreatedAtError, EmptyWindowError

__all__ = [
    "AuralytikApiError",
    "AuralytikAuthError",
    "AuralytikNotFoundError",
    "AuralytikUnavailableError",
    "CreatedAtError",
    "CrowdedInstantError",
    "EmptyWindowError",
    "ListingError",
    "PiiLeakError",
]


class AuralytikApiError(AirflowException):
    """The API answered with an error, or could not be reached within the retry budget.

    :param message: What went wrong and what to do, in one line (never the API key).
    :param status: The HTTP status of the answer, if there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuralytikAuthError(AuralytikApiError):
    """401/403: the API key is missing, wrong, or lacks the ``conversations:read`` scope."""


class AuralytikNotFoundError(AuralytikApiError):
    """404: the conversation (or the API path) does not exist."""


class AuralytikUnavailableError(AuralytikApiError):
    """Transient faults (5xx, dropped connections, timeouts) outlived ``max_retries``, or 429s
    outlasted ``rate_limit_max_wait``."""
