"""Generic helpers, not about conversations or output: each could serve another provider as it is.

- :mod:`~airflow_provider_auralytik.utils.concurrency`: an event-loop thread and an ordered async map.
- :mod:`~airflow_provider_auralytik.utils.progress`: the progress lines of a long task.
- :mod:`~airflow_provider_auralytik.utils.lineage`: OpenLineage dataset names of an API and of object storage.

The other names here are former import paths, kept working: ``utils.writer`` re-exports
:mod:`airflow_provider_auralytik.output`; ``utils.window``, ``utils.listing``, ``utils.completion``,
``utils.pii`` and ``utils.schemas`` forward to :mod:`airflow_provider_auralytik.conversations` and
``output.schemas`` with a ``DeprecationWarning``.
"""
