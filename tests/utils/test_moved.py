"""The 0.1 import paths of the modules that left ``utils/`` keep working, with a warning naming the new one."""

from __future__ import annotations

import importlib

import pytest

MOVED = [
    ("airflow_provider_auralytik.utils.window", "airflow_provider_auralytik.conversations.window", "DateWindow"),
    ("airflow_provider_auralytik.utils.listing", "airflow_provider_auralytik.conversations.listing", "WindowListing"),
    (
        "airflow_provider_auralytik.utils.completion",
        "airflow_provider_auralytik.conversations.completed_check",
        "check_window",
    ),
    ("airflow_provider_auralytik.utils.pii", "airflow_provider_auralytik.conversations.pii", "PiiGuard"),
    ("airflow_provider_auralytik.utils.schemas", "airflow_provider_auralytik.output.schemas", "CONVERSATIONS"),
]


@pytest.mark.parametrize(("old", "new", "name"), MOVED)
def test_an_old_path_gives_the_new_modules_object_and_names_it(old: str, new: str, name: str) -> None:
    importlib.import_module(new)  # first: importing Airflow may take over warnings.showwarning, and so the record
    with pytest.warns(DeprecationWarning, match=rf"{old} moved to {new}: import {name} from there"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", [old for old, _, _ in MOVED])
def test_a_name_the_new_module_lacks_is_an_attribute_error(old: str) -> None:
    module = importlib.import_module(old)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018  # the access is the test
