"""
What the operators share: the base of those that call the API, and how an export reports what it wrote.

* :class:`AuralytikTaskMixin`: the hook of ``auralytik_conn_id``, and templates that may name the run's data
  interval (the export operators, the catch-up and the sensor); :class:`AuralytikBaseOperator` adds the
  ``asset_alias`` outlet (the exports and the catch-up).
* :func:`storage_url`, :func:`export_summary`: the URL and the small XCom summary of a written destination
  (the exports, the sliced-export combine and the catch-up).
* :func:`register_asset_alias`, :func:`emit_asset_event`: the ``asset_alias`` parameter (the exports, the
  combine and the catch-up).
* :data:`MAX_CONCURRENCY`: the most ``max_concurrency`` the messages export and the catch-up's re-exports
  take (the default, ``DEFAULT_MAX_CONCURRENCY``, is the connection's, in the package root).

No operator module imports another one for these. Importing this module is cheap (no hook client, no I/O).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_auralytik._compat import Asset, AssetAlias, BaseOperator
from airflow_provider_auralytik.conversations.window import explain_missing_data_interval
from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
from airflow_provider_auralytik.output.manifest import MANIFEST_NAME

if TYPE_CHECKING:
    import jinja2

    from airflow_provider_auralytik._compat import Context, ObjectStoragePath

#: More conversations fetched at once only trips the API's rate limit (and exhausts sockets).
MAX_CONCURRENCY = 256


class AuralytikTaskMixin:
    """
    What every task of this provider that calls the API has: :attr:`hook`, built on first use from
    ``auralytik_conn_id`` (so constructing the task stays cheap), and templates that explain, in one line,
    a run without a data interval instead of failing on ``None`` inside Jinja. Mixed into
    :class:`AuralytikBaseOperator` and the sensor, before their Airflow base class.
    """

    auralytik_conn_id: str

    def render_template_fields(self, context: Context, jinja_env: jinja2.Environment | None = None) -> None:
        """Render as Airflow does; ``destination="...date={{ data_interval_start | ds }}"`` in a run without
        a data interval fails with a one-line explanation (see
        :func:`~airflow_provider_auralytik.conversations.window.explain_missing_data_interval`)."""
        with explain_missing_data_interval():
            super().render_template_fields(context, jinja_env)  # type: ignore[misc]  # the Airflow base class's, next in the MRO

    @cached_property
    def hook(self) -> AuralytikHook:
        """The hook of ``auralytik_conn_id``; a subclass overrides this to pass its own options."""
        return AuralytikHook(self.auralytik_conn_id)


class AuralytikBaseOperator(AuralytikTaskMixin, BaseOperator):
    """
    Base of the operators that call the Auralytik API (the exports and the catch-up): the
    :class:`AuralytikTaskMixin` and the ``asset_alias`` outlet.

    :param auralytik_conn_id: Connection of type ``auralytik``.
    :param asset_alias: Name of an ``AssetAlias`` the operator emits to (see :func:`emit_asset_event`).
    """

    def __init__(
        self,
        *,
        auralytik_conn_id: str = AuralytikHook.default_conn_name,
        asset_alias: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.auralytik_conn_id = auralytik_conn_id
        self.asset_alias = asset_alias
        register_asset_alias(self, asset_alias)


def storage_url(path: ObjectStoragePath) -> str:
    """``s3://bucket/key``-style URL of a destination (``str()`` would embed the connection id)."""
    return f"{path.protocol or 'file'}://{path.path}"


def export_summary(url: str, manifest: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The small XCom an export returns: where it wrote, how many files, the counts. Never data.

    :param url: The destination's :func:`storage_url`.
    :param manifest: The committed manifest.
    :param extra: More keys for the summary (before the counts), e.g. ``slices=4``.
    """
    return {
        "destination": url,
        "manifest": f"{url}/{MANIFEST_NAME}",
        "files": len(manifest["files"]),
        **extra,
        **manifest["counts"],
    }


def register_asset_alias(operator: BaseOperator, asset_alias: str | None) -> None:
    """Declare the ``AssetAlias`` an operator emits to (see :func:`emit_asset_event`); nothing for ``None``.

    :param operator: The operator, in its constructor.
    :param asset_alias: The operator's ``asset_alias`` parameter.
    """
    if asset_alias:
        operator.outlets = [*operator.outlets, AssetAlias(name=asset_alias)]


def emit_asset_event(context: Context, asset_alias: str | None, summary: dict[str, Any], window: Any) -> None:
    """Record an asset event for the written destination on the alias; nothing for ``None``.

    :param context: The task's context (its ``outlet_events``).
    :param asset_alias: The operator's ``asset_alias`` parameter.
    :param summary: The :func:`export_summary`: its ``destination`` is the asset's URI, its integer values
        (the counts) go into the event's extra.
    :param window: The manifest's ``{"date_from": …, "date_to": …}``, also in the extra (which stays flat).
    """
    if asset_alias:
        extra = {key: value for key, value in summary.items() if isinstance(value, int)}
        context["outlet_events"][AssetAlias(name=asset_alias)].add(
            Asset(uri=summary["destination"]), extra={**window, **extra}
        )
