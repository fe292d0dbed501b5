"""Export output: where it goes, how records become part files, how a run commits them, how to read them back.

One job per module:

* :mod:`~airflow_provider_auralytik.output.destination`: check and open a ``destination`` (before any request).
* :mod:`~airflow_provider_auralytik.output.parts`: part names, JSON Lines and Parquet encoding, hashing.
* :mod:`~airflow_provider_auralytik.output.writer`: :class:`PartWriter`, records into a run's parts.
* :mod:`~airflow_provider_auralytik.output.snapshot`: run tokens, the atomic commit, cleanup after it.
* :mod:`~airflow_provider_auralytik.output.manifest`: the manifest's name, header and serialisation.
* :mod:`~airflow_provider_auralytik.output.reader`: ``read_manifest`` / ``iter_records``.

The layout and the guarantees readers get are in ``docs/output.md``. Importing this package is cheap.
"""
