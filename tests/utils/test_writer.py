"""The former home of the writer (utils/writer.py): a published import path, kept as re-exports."""

from __future__ import annotations

import importlib

import pytest

from airflow_provider_auralytik.utils import writer as former

HOMES = [
    "airflow_provider_auralytik.output.destination",
    "airflow_provider_auralytik.output.manifest",
    "airflow_provider_auralytik.output.parts",
    "airflow_provider_auralytik.output.reader",
    "airflow_provider_auralytik.output.snapshot",
    "airflow_provider_auralytik.output.writer",
]


@pytest.mark.parametrize("name", former.__all__)
def test_every_former_name_is_the_object_of_its_new_home(name):
    homes = [module for module in map(importlib.import_module, HOMES) if hasattr(module, name)]
    assert homes, f"{name} has no home in output/"
    assert all(getattr(module, name) is getattr(former, name) for module in homes)


def test_the_names_the_docs_import_from_it_still_work():
    from airflow_provider_auralytik.utils.writer import (  # noqa: F401  # what docs of version 0.1 published
        PartWriter,
        iter_records,
        read_manifest,
        resolve_destination,
    )
