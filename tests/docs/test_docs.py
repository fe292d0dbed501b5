"""
The docs are tested: every ```python block in ``docs/*.md`` runs, and the docs agree with the code.

How a Python sample runs (``test_python_sample``, one test per block, id ``<page>-<n>``):

* as its own file, with ``runpy`` in a fresh namespace, under ``__name__ == "__main__"``, so a sample's
  ``if __name__ == "__main__": dag.test(...)`` really runs that DAG (every ``dag.test()`` must end in a
  successful run, and every DAG a sample builds must serialise as the scheduler would store it);
* with ``AIRFLOW_CONN_AURALYTIK_DEFAULT`` pointing at a local API sandbox holding the data the docs use
  (the one getting-started.md starts: ``--start 2026-03-01 --days 3 --per-day 40``);
* with ``HOME`` set to a directory shared by the samples of one page, so ``~/auralytik-exports/...`` is a
  fresh, throw-away place, and a sample can read what an earlier sample of the same page wrote, as a
  reader following the page would (earlier samples of the page run first if they have not yet);
* with ``AIRFLOW_CONN_AWS_DEFAULT`` pointing at a moto S3 server, and the buckets the sample names
  created there, when the sample uses ``s3://``.

A block preceded by ``<!-- docs-test: build-only: <reason> -->`` is only built: it runs under another
``__name__`` (no ``dag.test()``), and must build at least one operator. That is for the GCS and Azure
recipes: their providers, filesystems and credentials are not available here, and building the DAG
touches none of them (an operator only stores its destination URL; storage is resolved in ``execute``).

Other checks: ``python -m airflow_provider_auralytik.sandbox`` command lines in the docs parse with the
real CLI parser and use only flags its ``--help`` lists; JSON blocks and ``AIRFLOW_CONN_*`` JSON parse; no
sample holds a real-looking secret; relative links resolve; every operator/sensor/trigger/hook parameter
is documented, with the right default and "templated" flag.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import os
import re
import runpy
import shlex
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import sandbox_connection

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = sorted(DOCS.glob("*.md"))

#: The sandbox getting-started.md tells readers to start: ``--start 2026-03-01 --days 3 --per-day 40``.
SANDBOX = {"start": "2026-03-01", "days": 3, "per_day": 40}

_FENCE_RE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<info>[^`\s]*)[^`]*$")
_MARKER_RE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<mode>[a-z-]+)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")
_MODES = ("run", "build-only")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a docs page."""

    page: Path
    lang: str
    line: int  # 1-based line of the opening fence
    code: str
    index: int = 0  # among the page's blocks of the same language
    mode: str = "run"
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.stem}-{self.index}"

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def parse_blocks(page: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of a page, with the ``docs-test`` marker on the line before it, if any."""
    lines = (page.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    counts: dict[str, int] = {}
    i = 0
    while i < len(lines):
        match = _FENCE_RE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang, start = match["fence"], match["info"].lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER_RE.match(previous)
        mode, reason = (marker["mode"], marker["reason"] or "") if marker else ("run", "")
        index = counts.get(lang, 0)
        counts[lang] = index + 1
        code = textwrap.dedent("\n".join(body)) + "\n"
        blocks.append(Block(page, lang, start + 1, code, index, mode, reason))
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in parse_blocks(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.lang == "python"]
BASH_BLOCKS = [block for block in ALL_BLOCKS if block.lang in ("bash", "sh", "shell", "console")]


# ---------------------------------------------------------------------------------------------
# Running a sample
# ---------------------------------------------------------------------------------------------


@dataclass
class PageState:
    """What the samples of one page share: a HOME, and which samples already ran."""

    home: Path
    samples: Path
    done: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)


def _bundle_config(folder: Path) -> str:
    return json.dumps(
        [
            {
                "name": "auralytik-docs",
                "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(folder)},
            }
        ]
    )


def _dags_in(namespace: dict[str, Any]) -> list[Any]:
    from airflow.sdk import DAG

    return [value for value in namespace.values() if isinstance(value, DAG)]


def _operators_in(namespace: dict[str, Any]) -> list[Any]:
    from airflow.sdk import BaseOperator

    found = [value for value in namespace.values() if isinstance(value, BaseOperator)]
    for dag in _dags_in(namespace):
        found.extend(dag.tasks)
    return found


def _serialise(dag: Any) -> None:
    """Serialise a DAG the way the DAG processor stores it (fails on what the scheduler could not load)."""
    from airflow.serialization import serialized_objects

    serializer: Any = getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG
    serializer.to_dict(dag)


def run_sample(block: Block, folder: Path) -> dict[str, Any]:
    """
    Run one sample as a file of its own in ``folder`` (a DAG bundle, for ``dag.test()``); return its namespace.

    ``run`` samples execute as ``__main__`` and every ``dag.test()`` they call must succeed;
    ``build-only`` samples execute under another name and must build at least one operator.
    """
    from airflow.sdk import DAG

    if block.mode not in _MODES:
        raise AssertionError(f"{block.where}: unknown docs-test mode {block.mode!r} (use one of {_MODES})")
    if block.mode == "build-only" and not block.reason:
        raise AssertionError(f"{block.where}: a build-only sample must say why: <!-- docs-test: build-only: why -->")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{block.page.stem.replace('-', '_')}_line{block.line}.py"
    path.write_text(block.code, encoding="utf-8")

    runs: list[tuple[str, Any]] = []
    original_test = DAG.test

    def recording_test(self: Any, *args: Any, **kwargs: Any) -> Any:
        run = original_test(self, *args, **kwargs)
        runs.append((self.dag_id, run))
        return run

    bundles_var = "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"
    previous = os.environ.get(bundles_var)
    os.environ[bundles_var] = _bundle_config(folder)  # dag.test() finds the DAG in this bundle
    DAG.test = recording_test  # type: ignore[method-assign]  # record the samples' runs
    try:
        namespace = runpy.run_path(str(path), run_name="__main__" if block.mode == "run" else "docs_sample")
    finally:
        DAG.test = original_test  # type: ignore[method-assign]  # restore it
        if previous is None:
            os.environ.pop(bundles_var, None)
        else:
            os.environ[bundles_var] = previous

    for dag_id, run in runs:
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert str(run.state) == "success", f"{block.where}: dag.test() of {dag_id!r} ended {run.state}: {states}"
    for dag in _dags_in(namespace):
        _serialise(dag)
    if block.mode == "build-only":
        assert _operators_in(namespace), f"{block.where}: a build-only sample must build at least one operator"
    return namespace


@pytest.fixture(scope="session")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PageState]:
    states: dict[str, PageState] = {}
    for page in PAGES:
        root = tmp_path_factory.mktemp(f"docs-{page.stem}")
        (root / "home").mkdir()
        states[page.stem] = PageState(home=root / "home", samples=root / "samples")
    return states


@pytest.fixture
def docs_env(make_sandbox: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The environment a reader of the docs has: the sandbox as the default Auralytik connection."""
    sandbox = make_sandbox(**SANDBOX)
    monkeypatch.setenv("AIRFLOW_CONN_AURALYTIK_DEFAULT", sandbox_connection(sandbox))
    return sandbox


@contextlib.contextmanager
def restored_environ() -> Iterator[None]:
    """Undo what samples do to ``os.environ`` themselves (the connection page sets variables)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _provide_s3(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """``aws_default`` -> the moto server, with every bucket the sample names."""
    from tests.fixtures.s3 import S3_CONN_ID, clear_filesystem_caches

    server = request.getfixturevalue("s3_server")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", os.environ[f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"])
    for bucket in sorted(set(re.findall(r"s3://([a-z0-9][a-z0-9.-]+)", code))):
        if bucket not in {b["Name"] for b in server.client.list_buckets()["Buckets"]}:
            server.client.create_bucket(Bucket=bucket)
    clear_filesystem_caches()
    request.addfinalizer(clear_filesystem_caches)


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_sample(
    block: Block,
    pages: dict[str, PageState],
    docs_env: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = pages[block.page.stem]
    earlier = [b for b in PYTHON_BLOCKS if b.page == block.page and b.index < block.index and b.mode == "run"]
    todo = [b for b in earlier if b.index not in state.done | state.failed] + [block]
    code = "".join(b.code for b in todo)
    monkeypatch.setenv("HOME", str(state.home))
    monkeypatch.chdir(state.home)
    if "s3://" in code:
        _provide_s3(request, monkeypatch, code)
    if ".test(" in code:
        request.getfixturevalue("airflow_db")
    with restored_environ():
        for b in todo[:-1]:  # earlier samples of the page not run yet (e.g. under -k): as a reader would
            if b.index in state.failed:
                continue
            try:
                run_sample(b, state.samples / b.id)
            except Exception:  # reported by its own test; this sample may not depend on it
                state.failed.add(b.index)
            else:
                state.done.add(b.index)
        try:
            run_sample(block, state.samples / block.id)
        except Exception:
            state.failed.add(block.index)
            if state.failed - {block.index}:
                print(f"Note: earlier samples of {block.page.name} failed: {sorted(state.failed - {block.index})}")
            raise
        state.done.add(block.index)


# -- the runner itself can fail --------------------------------------------------------------


def _block(code: str, mode: str = "run", reason: str = "") -> Block:
    return Block(Path("broken.md"), "python", 1, textwrap.dedent(code), 0, mode, reason)


def test_a_sample_that_raises_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        run_sample(_block("raise RuntimeError('boom')\n"), tmp_path)


def test_a_sample_that_does_not_compile_fails(tmp_path: Path) -> None:
    with pytest.raises(SyntaxError):
        run_sample(_block("def broken(:\n"), tmp_path)


def test_a_build_only_sample_must_build_an_operator_and_say_why(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="at least one operator"):
        run_sample(_block("x = 1\n", "build-only", "no operator here"), tmp_path)
    with pytest.raises(AssertionError, match="must say why"):
        run_sample(_block("x = 1\n", "build-only"), tmp_path)


def test_a_failed_dag_run_fails_the_sample(tmp_path: Path, airflow_db: None, docs_env: Any) -> None:
    code = """
        from datetime import datetime, timezone

        from airflow.sdk import DAG, task

        START = datetime(2026, 1, 1, tzinfo=timezone.utc)

        with DAG(dag_id="docs_broken_sample", schedule=None, start_date=START) as dag:

            @task
            def fail() -> None:
                raise RuntimeError("this task fails")

            fail()

        if __name__ == "__main__":
            dag.test()
        """
    with restored_environ(), pytest.raises(AssertionError, match="docs_broken_sample"):
        run_sample(_block(code), tmp_path)


def test_the_parser_finds_markers_and_blocks() -> None:
    text = textwrap.dedent(
        """
        # Page

        ```python
        print("run me")
        ```

        <!-- docs-test: build-only: needs the google provider -->

        ```python
        x = 1
        ```

        ```bash
        echo hi
        ```
        """
    )
    blocks = parse_blocks(Path("page.md"), text)
    assert [(b.lang, b.index, b.mode, b.reason) for b in blocks] == [
        ("python", 0, "run", ""),
        ("python", 1, "build-only", "needs the google provider"),
        ("bash", 0, "run", ""),
    ]
    assert blocks[0].code == 'print("run me")\n'


def test_every_page_with_samples_is_found() -> None:
    pages_with_samples = {b.page.stem for b in PYTHON_BLOCKS}
    expected = {"getting-started", "connection", "operators", "sensor", "hook", "output", "recipes"}
    assert expected <= pages_with_samples, f"no Python samples found in {sorted(expected - pages_with_samples)}"


# ---------------------------------------------------------------------------------------------
# Shell blocks: sandbox command lines, connection JSON
# ---------------------------------------------------------------------------------------------

_SANDBOX_MODULE = "airflow_provider_auralytik.sandbox"
_SHELL_STOP = {"&", "&&", "|", "||", ";"}


def _shell_lines(block: Block) -> Iterator[str]:
    """Logical lines of a shell block (backslash continuations joined)."""
    yield from block.code.replace("\\\n", " ").splitlines()


def _sandbox_commands() -> list[tuple[str, list[str]]]:
    commands = []
    for block in BASH_BLOCKS:
        for line in _shell_lines(block):
            if f"-m {_SANDBOX_MODULE}" not in line:
                continue
            tokens = shlex.split(line, comments=True)
            args = tokens[tokens.index(_SANDBOX_MODULE) + 1 :]
            cut = next((i for i, t in enumerate(args) if t in _SHELL_STOP or t[:1] in "<>" or t[:2] == "2>"), None)
            commands.append((block.where, args[:cut]))
    return commands


def test_docs_start_the_sandbox() -> None:
    assert _sandbox_commands(), "the docs show how to start the sandbox"


@pytest.mark.parametrize(("where", "args"), _sandbox_commands(), ids=lambda v: str(v))
def test_sandbox_command_lines_use_real_flags(where: str, args: list[str]) -> None:
    from airflow_provider_auralytik.sandbox.__main__ import build_parser

    parser = build_parser()
    help_text = parser.format_help()  # what --help prints
    for token in args:
        flag = token.split("=", 1)[0]
        if flag.startswith("--"):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"{where}: {flag} is not in --help"
    try:
        parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{where}: `python -m {_SANDBOX_MODULE} {shlex.join(args)}` does not parse")


def test_the_samples_run_against_the_sandbox_getting_started_starts() -> None:
    """The counts printed in the docs (40 conversations a day …) hold for the sandbox readers start."""
    from airflow_provider_auralytik.sandbox.__main__ import build_parser

    started = [args for where, args in _sandbox_commands() if where.startswith("getting-started.md") and args]
    assert started, "getting-started.md starts the sandbox with explicit data flags"
    args = build_parser().parse_args(started[0])
    assert (str(args.start), args.days, args.per_day) == (SANDBOX["start"], SANDBOX["days"], SANDBOX["per_day"])


def test_the_sandbox_flag_table_is_complete_and_real() -> None:
    from airflow_provider_auralytik.sandbox.__main__ import build_parser

    real = {opt for action in build_parser()._actions for opt in action.option_strings if opt.startswith("--")}
    real.discard("--help")
    text = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\|\s*`(--[a-z0-9-]+)", text, flags=re.MULTILINE))
    assert documented - real == set(), "flags documented that the sandbox does not have"
    assert real - documented == set(), "sandbox flags missing from the table in getting-started.md"


def test_json_blocks_parse() -> None:
    for block in ALL_BLOCKS:
        if block.lang == "json":
            try:
                json.loads(block.code)
            except ValueError as exc:
                pytest.fail(f"{block.where}: invalid JSON: {exc}")


def test_connection_json_in_shell_blocks_parses() -> None:
    found = 0
    for block in BASH_BLOCKS:
        for line in _shell_lines(block):
            match = re.match(r"\s*export\s+AIRFLOW_CONN_[A-Z0-9_]+=(.*)$", line)
            if not match:
                continue
            (value,) = shlex.split(match[1], comments=True)
            if value.startswith("{"):
                assert "conn_type" in json.loads(value), f"{block.where}: a JSON connection needs conn_type"
                found += 1
    assert found, "the docs show at least one JSON connection"


# ---------------------------------------------------------------------------------------------
# No real-looking secrets
# ---------------------------------------------------------------------------------------------

#: Values a sample may use where a secret goes.
_PLACEHOLDER_RE = re.compile(r"^(sandbox-key|<[^>]*>|\$\{?[A-Z_][A-Z0-9_]*\}?|\{\{.*\}\}|\*+|testing|)$")
_SECRET_ASSIGN_RE = re.compile(
    r"""(?ix)["']?\b(password|api[_-]?key|secret|client_secret|token|sas_token|account_key|private_key|
    connection_string)\b["']?\s*[:=]\s*["']([^"']*)["']"""
)
_URI_SECRET_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]*:([^@\s/'\"]+)@")
_BEARER_RE = re.compile(r"Bearer\s+([^\s\"'`]+)")
_AWS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_TOKEN_RE = re.compile(r"[A-Za-z0-9+/_=-]{24,}")


def _looks_random(token: str) -> bool:
    return bool(re.search(r"[a-z]", token) and re.search(r"[A-Z]", token) and re.search(r"\d", token))


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[f"{b.page.stem}-{b.lang or 'text'}-{b.line}" for b in ALL_BLOCKS])
def test_no_real_looking_secrets(block: Block) -> None:
    code = block.code
    assert not _AWS_KEY_RE.search(code), f"{block.where}: an AWS access key id"
    for name, value in _SECRET_ASSIGN_RE.findall(code):
        assert _PLACEHOLDER_RE.match(value), f"{block.where}: {name} = {value!r} is not a placeholder"
    for value in _URI_SECRET_RE.findall(code):
        assert _PLACEHOLDER_RE.match(value), f"{block.where}: a URI holds the secret {value!r}"
    for value in _BEARER_RE.findall(code):
        assert _PLACEHOLDER_RE.match(value.rstrip(".,")), f"{block.where}: Bearer {value!r}"
    for token in _TOKEN_RE.findall(code):
        assert not _looks_random(token), f"{block.where}: {token!r} looks like a key"


def test_the_secret_check_can_fail() -> None:
    # A made-up key of the live-key shape, assembled here so the repository holds no such literal.
    fake_live_key = "sk_" + "live_" + "9fQ2xLm7Rt5Vb8Nw3Kp6Zd1"
    leaky = Block(Path("leaky.md"), "bash", 1, f'"password": "{fake_live_key}"\n')
    with pytest.raises(AssertionError):
        test_no_real_looking_secrets(leaky)


# ---------------------------------------------------------------------------------------------
# Links
# ---------------------------------------------------------------------------------------------

_LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, flags=re.MULTILINE)}


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in _LINK_RE.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        assert resolved.exists(), f"{page.name}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.name}: no heading for #{anchor} in {resolved.name}"


def test_the_index_links_every_page() -> None:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {target.partition("#")[0] for target in _LINK_RE.findall(text)}
    missing = [p.name for p in PAGES if p.name != "index.md" and p.name not in linked]
    assert not missing, f"docs/index.md does not link {missing}"


# ---------------------------------------------------------------------------------------------
# Parameters: every one documented, with its default and whether it is templated
# ---------------------------------------------------------------------------------------------


def _documented_classes() -> dict[str, list[Any]]:
    from airflow_provider_auralytik.hooks.auralytik import AuralytikHook
    from airflow_provider_auralytik.operators.catch_up import AuralytikCatchUpOperator
    from airflow_provider_auralytik.operators.export import (
        AuralytikExportConversationsOperator,
        AuralytikExportMessagesOperator,
    )
    from airflow_provider_auralytik.operators.slices import AuralytikCombineSlicesOperator, plan_window_slices
    from airflow_provider_auralytik.sensors.conversations import AuralytikConversationsCompletedSensor
    from airflow_provider_auralytik.triggers.conversations import AuralytikConversationsCompletedTrigger

    hook_methods = [
        AuralytikHook.list_conversations,
        AuralytikHook.get_conversation,
        AuralytikHook.get_messages,
        AuralytikHook.test_connection,
    ]
    return {
        "operators.md": [
            AuralytikExportConversationsOperator,
            AuralytikExportMessagesOperator,
            AuralytikCombineSlicesOperator,
            plan_window_slices,
            AuralytikCatchUpOperator,
        ],
        "sensor.md": [AuralytikConversationsCompletedSensor, AuralytikConversationsCompletedTrigger],
        "hook.md": [AuralytikHook, *hook_methods],
    }


def _own_parameters(obj: Any) -> dict[str, inspect.Parameter]:
    """Parameters of a function, or of the ``__init__`` of a class and its bases in this provider (not Airflow's)."""
    functions = [obj]
    if inspect.isclass(obj):
        functions = [
            vars(klass)["__init__"]
            for klass in obj.__mro__
            if klass.__module__.startswith("airflow_provider_auralytik.") and "__init__" in vars(klass)
        ]
    params: dict[str, inspect.Parameter] = {}
    for function in functions:
        for name, param in inspect.signature(function).parameters.items():
            if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                params.setdefault(name, param)
    return params


def _parameter_rows(text: str) -> dict[str, dict[str, str]]:
    """Rows of the page's parameter tables (first header cell "parameter" or "extra"), by name."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if header is None:
            header = [c.lower() for c in cells] if cells and cells[0].lower() in ("parameter", "extra") else []
            continue
        if not header or set(cells[0]) <= {"-", ":", " "}:
            continue
        name = re.match(r"`([a-z_]+)`", cells[0])
        if name:
            rows.setdefault(name[1], dict(zip(header, cells, strict=False)))
    return rows


@pytest.mark.parametrize("page", ["operators.md", "sensor.md", "hook.md"])
def test_every_parameter_is_documented(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    for obj in _documented_classes()[page]:
        for name in _own_parameters(obj):
            in_signature = re.search(rf"[(,]\s*{name}\s*[=,)]", text)  # `method(a, name=None)`
            assert f"`{name}`" in text or in_signature, f"{page}: {obj.__qualname__}({name}) is not documented"


@pytest.mark.parametrize("page", ["operators.md", "sensor.md"])
def test_documented_defaults_and_templating_match_the_code(page: str) -> None:
    rows = _parameter_rows((DOCS / page).read_text(encoding="utf-8"))
    assert rows, f"{page}: no parameter table found"
    templated: set[str] = set()
    params: dict[str, inspect.Parameter] = {}
    for obj in _documented_classes()[page]:
        templated |= set(getattr(obj, "template_fields", ()))
        for name, param in _own_parameters(obj).items():
            params.setdefault(name, param)  # the first class documented wins (its table comes first)
    for name, row in rows.items():
        if name not in params:
            continue  # an inherited Airflow parameter (mode, timeout, ...)
        if "templated" in row:
            says = row["templated"].lower().startswith("yes")
            assert says == (name in templated), f"{page}: `{name}` templated is {name in templated}, docs say {says}"
        default = params[name].default
        cell = row.get("default", "")
        if default is inspect.Parameter.empty:
            assert "required" in cell.lower(), f"{page}: `{name}` is required, docs say default {cell!r}"
            continue
        code = re.match(r"`([^`]*)`", cell)
        if code is None:
            continue
        try:
            value = ast.literal_eval(code[1])
        except (ValueError, SyntaxError):
            continue  # described in words, e.g. "[operators] default_deferrable"
        assert value == default, f"{page}: `{name}` defaults to {default!r}, docs say {code[1]}"


def test_connection_extras_and_defaults_match_the_code() -> None:
    from dataclasses import fields

    from airflow_provider_auralytik.hooks.auralytik import HookSettings

    rows = _parameter_rows((DOCS / "connection.md").read_text(encoding="utf-8"))
    for f in fields(HookSettings):
        if f.name in ("base_url", "api_key"):
            continue
        assert f.name in rows, f"connection.md: extra {f.name!r} is not in the extras table"
        code = re.match(r"`([^`]*)`", rows[f.name].get("default", ""))
        assert code is not None, f"connection.md: extra {f.name!r} has no default"
        assert ast.literal_eval(code[1]) == f.default, f"connection.md: {f.name} defaults to {f.default}"


# ---------------------------------------------------------------------------------------------
# Statements in the prose that the code decides
# ---------------------------------------------------------------------------------------------


def test_hook_md_lists_every_error_class() -> None:
    from airflow_provider_auralytik.hooks import auralytik

    tree = re.search(r"```text\n(AuralytikApiError.*?)```", (DOCS / "hook.md").read_text(), flags=re.DOTALL)
    assert tree, "hook.md shows the error classes as a tree"
    listed = set(re.findall(r"\b(Auralytik\w+Error)\b", tree.group(1)))
    defined = {
        name
        for name, value in vars(auralytik).items()
        if isinstance(value, type) and issubclass(value, auralytik.AuralytikApiError)
    }
    assert listed == defined


def test_documented_progress_interval_is_the_code() -> None:
    import inspect

    from airflow_provider_auralytik.utils.progress import Progress

    interval = inspect.signature(Progress).parameters["interval"].default
    text = "\n".join(page.read_text() for page in sorted(DOCS.glob("*.md")))
    said = set(re.findall(r"every (\d+) s while running", text))
    assert said == {f"{interval:g}"}


def test_docs_cite_nothing_outside_the_repository() -> None:
    for page in [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"]:
        assert "shared/" not in page.read_text(), f"{page.name} cites a file that is not in the repository"
