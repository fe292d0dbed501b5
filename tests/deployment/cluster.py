"""A throw-away Airflow deployment on 127.0.0.1, for the deployment tests and ``scripts/deployment.sh``.

What runs (each in its own process group, on a free port, everything under one temp directory):

* PostgreSQL (Debian's ``postgresql``): a cluster made by ``initdb`` in the temp dir, as the ``postgres``
  system user when we are root (postgres refuses to run as root); Airflow's metadata DB.
* Redis (Debian's ``redis-server``), no persistence: the Celery broker.
* Airflow (the ``.venv``'s): ``db migrate``, then the api-server, scheduler, dag-processor, triggerer and
  two Celery workers (``worker1``, ``worker2``: distinct Celery node names *and* task-instance hostnames).
* The API sandbox (``python -m airflow_provider_auralytik.sandbox``) on fixed past data, and a moto S3
  server holding the lake bucket.

``Deployment.up()`` waits for every part with a timeout and stops all of it if anything fails;
``down()`` stops every process group (SIGTERM, then SIGKILL) and removes the temp dir. From a shell::

    bash scripts/deployment.sh up       # prints the UI URL and an env file to `source`
    bash scripts/deployment.sh status
    bash scripts/deployment.sh down

Tests use the session's ``deployment`` fixture (``tests/deployment/conftest.py``), which is this class,
and ``lake`` (``lake.py``: the S3 bucket, read as a reader would). A new deployment test goes in
``tests/deployment/``, marked ``deployment``: it drives runs with :meth:`Deployment.trigger` (a run for
any past data interval), :meth:`~Deployment.wait_run`, :meth:`~Deployment.task_instances`, ``airflow(...)``
for the CLI (e.g. ``backfill create``) and :meth:`~Deployment.start_sandbox` for the API's behaviour, and
takes days of ``SANDBOX_DATA`` no other test uses (``test_deployment.py`` uses 2026-03-01 to 03-08: add
days for more), since all tests share one deployment and one lake.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
SITE = Path(__file__).resolve().parent / "site"  # airflow_local_settings.py (policy) + hostname callable
STATE_POINTER = Path(
    os.environ.get("AURALYTIK_DEPLOYMENT_STATE", Path(tempfile.gettempdir()) / "auralytik-deployment.json")
)

WORKERS = ("worker1", "worker2")
AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", *WORKERS)
BUCKET = "auralytik-lake"
EXPORT_ROOT = f"s3://{BUCKET}/auralytik"
DAG_IDS = ("auralytik_daily_export", "auralytik_sliced_export")
# Fixed past data: nothing here depends on today's date. 8 days: each test takes its own days.
SANDBOX_DATA: dict[str, Any] = {"seed": 11, "start": "2026-03-01", "days": 8, "per_day": 40}
SANDBOX_KEY = "deployment-sandbox-key"
_AWS_KEY = "testing"

T = TypeVar("T")


class DeploymentError(RuntimeError):
    """A part of the deployment did not start, or a wait ran out of time."""


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Call ``check`` until it returns something truthy; raise :class:`DeploymentError` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except DeploymentError:
            raise  # a part died: waiting longer will not help
        except Exception as exc:  # a part still starting fails in many ways; report the last one
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise DeploymentError(f"Timed out after {timeout:.0f} s waiting for {what}{detail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a reused id owned by someone else: not ours any more
        return False
    return True


def _running(process: Any) -> bool:
    import psutil

    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _die_with_parent() -> None:
    """In a child started by a test run: get SIGTERM if the test process dies (Linux prctl)."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian keeps them in /usr/lib/postgresql/<major>/bin, off the PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return str(candidates[-1])
    found = shutil.which(name)
    if not found:
        raise DeploymentError(f"{name} not found: install PostgreSQL (Debian: apt-get install -y postgresql)")
    return found


@dataclass
class Service:
    """One started process group, and where its output goes.

    Stopping it reaches every descendant too: Airflow runs each task in a process group of its own
    (the supervisor's ``setpgid``), so a signal to the worker's group alone would leave the task running.
    """

    name: str
    pid: int
    log: str
    stop_signal: int = signal.SIGTERM
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _signalled: list[Any] = field(default_factory=list, repr=False, compare=False)

    def _tree(self) -> list[Any]:
        import psutil

        try:
            leader = psutil.Process(self.pid)
            return [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        if self.popen is not None:
            self.popen.poll()  # reap a dead leader, or its group never looks empty
        return _group_alive(self.pid) or any(_running(p) for p in self._signalled)

    def signal(self, signum: int) -> None:
        """``signum`` to the group, and to every descendant that moved to a group of its own. Once
        each: Airflow's components take a second SIGTERM as "force exit now"."""
        import psutil

        tree = self._tree()
        self._signalled.extend(tree)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if os.getpgid(process.pid) != self.pid:
                    process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> None:
        """``stop_signal`` to the whole tree, SIGKILL what is left after ``timeout`` s; waits until gone."""
        if not self.alive():
            return
        if not self._signalled:  # down() may have signalled it already, with the others
            self.signal(self.stop_signal)
        try:
            wait_for(f"{self.name} to stop", lambda: not self.alive(), timeout, 0.2)
        except DeploymentError:
            self.kill()

    def kill(self) -> None:
        """SIGKILL to the whole tree (as if its machine died); waits until gone."""
        self.signal(signal.SIGKILL)
        wait_for(f"{self.name} to die", lambda: not self.alive(), 30, 0.2)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "log": self.log, "stop_signal": int(self.stop_signal)}


class Deployment:
    """The running deployment. Build with :meth:`up` (or :meth:`load` for one started by the script)."""

    def __init__(self, base: Path, ports: dict[str, int], sandbox: dict[str, Any], secrets_: dict[str, str]) -> None:
        self.base = base
        self.ports = ports
        self.sandbox_options = sandbox  # CLI options of the running sandbox (beyond SANDBOX_DATA)
        self.secrets = secrets_
        self.services: dict[str, Service] = {}
        # Detached (scripts/deployment.sh up): the processes outlive the Python process that starts them.
        # Attached (tests): they get SIGTERM if the test process dies, however it dies.
        self.detached = False

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def up(
        cls,
        base: Path | None = None,
        *,
        timeout: float = 600.0,
        detached: bool = False,
        log: Callable[[str], None] = print,
    ) -> Deployment:
        """Start everything and wait until it is ready; on any failure stop what started, then raise."""
        base = Path(base or tempfile.mkdtemp(prefix="auralytik-deployment-"))
        base.mkdir(parents=True, exist_ok=True)
        ports = {
            name: free_port()
            for name in ("postgres", "redis", "s3", "sandbox", "api", "worker1-logs", "worker2-logs", "trigger-logs")
        }
        from cryptography.fernet import Fernet

        keys = {"fernet": Fernet.generate_key().decode(), "jwt": secrets.token_hex(32), "api": secrets.token_hex(16)}
        deployment = cls(base, ports, {}, keys)
        deployment.detached = detached
        try:
            deployment._start_all(timeout, log)
        except BaseException:
            log(deployment.log_tails())
            deployment.down()
            raise
        return deployment

    def _start_all(self, timeout: float, log: Callable[[str], None]) -> None:
        started = time.monotonic()

        def stage(name: str) -> None:
            log(f"deployment: {name} ({time.monotonic() - started:.1f} s)")

        (self.base / "logs").mkdir(exist_ok=True)
        (self.base / "airflow").mkdir(exist_ok=True)
        self._write_env_file()
        stage("starting postgres, redis, moto S3, sandbox")
        self._init_postgres()
        self._start("postgres", self._postgres_cmd(), stop_signal=signal.SIGINT)  # SIGINT: fast shutdown
        self._start("redis", self._redis_cmd())
        self._start("s3", [self._bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["s3"])])
        self.start_sandbox()
        wait_for("postgres", self._create_database, 120)
        wait_for("redis", lambda: self._redis_ping(), 60)
        wait_for("moto S3", self._create_bucket, 120)
        stage("airflow db migrate")
        self.airflow("db", "migrate", timeout=timeout)
        stage("starting the api-server, scheduler, dag-processor, triggerer and two Celery workers")
        for name in AIRFLOW_SERVICES:
            self.start_airflow(name)
        wait_for("the api-server, scheduler, dag-processor and triggerer to be healthy", self._healthy, timeout, 2)
        for worker in WORKERS:
            self.wait_worker_ready(worker, timeout)
        wait_for("the dag-processor to parse the example DAGs", self._dags_parsed, timeout, 2)
        stage("ready")

    def down(self, *, remove: bool = True) -> None:
        """Stop every process group, then remove the temp dir. Airflow's components are signalled
        together (each finishes its shutdown in parallel), then the broker, DB, lake and sandbox."""
        errors: list[str] = []
        services = list(self.services.values())
        airflow = [s for s in services if s.name in AIRFLOW_SERVICES]
        for batch in (airflow, [s for s in services if s not in airflow]):
            for service in batch:
                if service.alive():
                    service.signal(service.stop_signal)
            for service in batch:
                try:
                    service.stop()
                except DeploymentError as exc:  # pragma: no cover - go on stopping the others
                    errors.append(str(exc))
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)
        if errors:  # pragma: no cover
            raise DeploymentError("; ".join(errors))

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every part's output (what a failure report shows)."""
        out = []
        for service in self.services.values():
            with contextlib.suppress(OSError):
                tail = Path(service.log).read_text(errors="replace").splitlines()[-lines:]
                out.append(f"----- {service.name} ({service.log})\n" + "\n".join(tail))
        return "\n".join(out)

    def status(self) -> dict[str, bool]:
        return {name: service.alive() for name, service in self.services.items()}

    # ------------------------------------------------------------------ state file (scripts/deployment.sh)

    def save(self, path: Path) -> None:
        state = {
            "base": str(self.base),
            "ports": self.ports,
            "sandbox": self.sandbox_options,
            "secrets": self.secrets,
            "services": [s.to_json() for s in self.services.values()],
        }
        path.write_text(json.dumps(state, indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        state = json.loads(path.read_text())
        deployment = cls(Path(state["base"]), state["ports"], state["sandbox"], state["secrets"])
        deployment.detached = True
        for item in state["services"]:
            deployment.services[item["name"]] = Service(**item)
        return deployment

    # ------------------------------------------------------------------ processes

    def _bin(self, name: str) -> str:
        return str(Path(sys.executable).parent / name)

    def _start(
        self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM
    ) -> Service:
        log_path = self.base / "logs" / f"{name}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                list(cmd),
                env=env or self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                preexec_fn=os.setsid if self.detached else _die_with_parent,
            )
        service = Service(name, popen.pid, str(log_path), stop_signal, popen)
        self.services[name] = service
        return service

    def stop_service(self, name: str, *, kill: bool = False) -> None:
        """Stop one part (``kill=True``: SIGKILL to its whole process group, as if its machine died)."""
        if kill:
            self.services[name].kill()
        else:
            self.services[name].stop()

    def start_airflow(self, name: str) -> Service:
        env = self.env()
        if name in WORKERS:
            env["AURALYTIK_DEPLOYMENT_HOSTNAME"] = name  # the task instances' hostname (site/auralytik_host.py)
            env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(self.ports[f"{name}-logs"])
            args = ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "2"]
            args += ["--pid", str(self.base / f"{name}.pid")]
        elif name == "api-server":
            args = ["api-server", "--host", "127.0.0.1", "--port", str(self.ports["api"]), "--workers", "1"]
        else:
            args = [name]
        return self._start(name, [self._bin("airflow"), *args], env=env)

    def restart(self, name: str, *, kill: bool = False) -> Service:
        """Stop (SIGTERM; ``kill=True``: SIGKILL, a crash) and start again one Airflow component."""
        self.stop_service(name, kill=kill)
        return self.start_airflow(name)

    def wait_worker_ready(self, worker: str, timeout: float = 300) -> None:
        log = Path(self.services[worker].log)
        pattern = re.compile(rf"{worker}@\S+ ready", re.IGNORECASE)

        def ready() -> bool:
            if not self.services[worker].alive():
                raise DeploymentError(f"{worker} exited; see {log}")
            return bool(pattern.search(log.read_text(errors="replace")))

        wait_for(f"Celery {worker} to be ready", ready, timeout, 1)

    def airflow(self, *args: str, timeout: float = 180) -> str:
        """Run an ``airflow`` CLI command against the deployment; its output (raises on failure)."""
        result = subprocess.run(
            [self._bin("airflow"), *args],
            env=self.env(),
            cwd=self.base,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise DeploymentError(
                f"airflow {shlex.join(args)} exited {result.returncode}: {(result.stderr or result.stdout)[-3000:]}"
            )
        return result.stdout

    # ------------------------------------------------------------------ environment

    def env(self) -> dict[str, str]:
        """The environment of every Airflow process (the same for all: the config is in variables)."""
        pg = f"postgresql+psycopg2://airflow@127.0.0.1:{self.ports['postgres']}/airflow"
        s3 = f"http://127.0.0.1:{self.ports['s3']}"
        api = f"http://127.0.0.1:{self.ports['api']}"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
        settings = {
            "AIRFLOW_HOME": str(self.base / "airflow"),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__FERNET_KEY": self.secrets["fernet"],
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "auralytik_host.hostname",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "2",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.ports['postgres']}/airflow",
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__SECRET_KEY": self.secrets["api"],
            "AIRFLOW__API_AUTH__JWT_SECRET": self.secrets["jwt"],
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports["trigger-logs"]),
            # Sensors wait in the triggerer unless a DAG says otherwise (the sensor honours this default).
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
            # Runs only when triggered or backfilled: no run for "yesterday" by the wall clock.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A task whose worker died is failed (then retried) after 20 s without heartbeat, not 5 min.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A task the dead worker had taken but not started stays "queued" until this (default 10 min).
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "90",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW_VAR_AURALYTIK_EXPORT_ROOT": EXPORT_ROOT,
            "AIRFLOW_CONN_AURALYTIK_DEFAULT": json.dumps(
                {"conn_type": "auralytik", "host": self.sandbox_url, "password": SANDBOX_KEY}
            ),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": _AWS_KEY,
                    "password": _AWS_KEY,
                    "extra": {"endpoint_url": s3, "region_name": "us-east-1"},
                }
            ),
            "AWS_ACCESS_KEY_ID": _AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": _AWS_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": s3,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            # site/: the cluster policy (short poke and retry intervals) and the hostname callable.
            "PYTHONPATH": os.pathsep.join([str(SITE), str(REPO)]),
            "AURALYTIK_DEPLOYMENT_POKE_INTERVAL": "2",
            "AURALYTIK_DEPLOYMENT_RETRY_DELAY": "3",
        }
        return {**keep, **settings}

    def _write_env_file(self) -> None:
        path = self.base / "env.sh"
        env = self.env()
        lines = [
            f"export {k}={shlex.quote(v)}"
            for k, v in sorted(env.items())
            if k not in os.environ or env[k] != os.environ[k]
        ]
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)

    # ------------------------------------------------------------------ PostgreSQL, Redis, S3

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        """Run as the ``postgres`` system user when we are root: PostgreSQL refuses root."""
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def _init_postgres(self) -> None:
        data = self.base / "pgdata"
        data.mkdir()
        if os.geteuid() == 0:
            import pwd

            user = pwd.getpwnam("postgres")
            self.base.chmod(0o755)  # the postgres user goes through it to its data dir
            os.chown(data, user.pw_uid, user.pw_gid)
        cmd = [_pg_bin("initdb"), "-D", str(data), "-U", "airflow", "-A", "trust", "-E", "UTF8", "--no-sync"]
        result = subprocess.run(self._as_postgres(cmd), capture_output=True, text=True, timeout=180, cwd=self.base)
        if result.returncode != 0:
            raise DeploymentError(f"initdb failed: {result.stderr[-2000:]}")

    def _postgres_cmd(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.ports["postgres"]),
            "unix_socket_directories": "",
            "fsync": "off",  # a throw-away cluster: speed over durability
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        options = [arg for k, v in settings.items() for arg in ("-c", f"{k}={v}")]
        return self._as_postgres([_pg_bin("postgres"), "-D", str(self.base / "pgdata"), *options])

    def connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.ports["postgres"], user="airflow", dbname="airflow")

    def _create_database(self) -> bool:
        import psycopg2

        if not self.services["postgres"].alive():
            raise DeploymentError(f"postgres exited; see {self.services['postgres'].log}")
        conn = psycopg2.connect(host="127.0.0.1", port=self.ports["postgres"], user="airflow", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
                if cur.fetchone() is None:
                    cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()
        return True

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata DB (what the tests read Airflow's state with)."""
        conn = self.connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(query, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def _redis_cmd(self) -> list[str]:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(redis).exists():
            raise DeploymentError("redis-server not found: install it (Debian: apt-get install -y redis-server)")
        port = str(self.ports["redis"])
        return [
            redis,
            "--port",
            port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.base),
        ]

    def _redis_ping(self) -> bool:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=self.ports["redis"], socket_timeout=2).ping())

    def s3_client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.ports['s3']}",
            region_name="us-east-1",
            aws_access_key_id=_AWS_KEY,
            aws_secret_access_key=_AWS_KEY,
        )

    def _create_bucket(self) -> bool:
        if not _tcp_open(self.ports["s3"]):
            return False
        client = self.s3_client()
        if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
            client.create_bucket(Bucket=BUCKET)
        return True

    # ------------------------------------------------------------------ the sandbox API

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sandbox']}/v1"

    def _sandbox_cmd(self, options: dict[str, Any]) -> list[str]:
        merged = {**SANDBOX_DATA, **options}
        args = [sys.executable, "-m", "airflow_provider_auralytik.sandbox", "--host", "127.0.0.1"]
        args += ["--port", str(self.ports["sandbox"]), "--api-key", SANDBOX_KEY]
        for key, value in merged.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        return args

    def start_sandbox(self, **options: Any) -> None:
        """(Re)start the sandbox on its port with the same data and these behaviour options
        (e.g. ``complete_within=3600`` keeps every conversation active for the test's length,
        ``latency_ms=...`` slows every request). The connection stays valid: same URL, same key."""
        if "sandbox" in self.services:
            self.services["sandbox"].stop()
        options = {**_default_sandbox_options(), **options}
        self.sandbox_options = options
        service = self._start("sandbox", self._sandbox_cmd(options))
        port = self.ports["sandbox"]

        def listening() -> bool:
            if not service.alive():
                raise DeploymentError(f"the sandbox exited; see {service.log}")
            return _tcp_open(port)

        wait_for("the sandbox", listening, 60, 0.2)

    def sandbox_truth(self) -> Any:
        """An unstarted :class:`Sandbox` with the deployment's data, every conversation completed:
        the ground truth (``conversations_in``, ``get_conversation``, ``messages``)."""
        from airflow_provider_auralytik.sandbox import Sandbox, SandboxConfig

        return Sandbox(SandboxConfig(**SANDBOX_DATA, api_key=SANDBOX_KEY))

    # ------------------------------------------------------------------ the REST API (what tests drive runs with)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """A JSON call to the api-server's ``/api/v2`` (every user is admin in this deployment)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports['api']}/api/v2/{path.lstrip('/')}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise DeploymentError(f"{method} /api/v2/{path}: {exc.code} {exc.read()[:2000]!r}") from exc

    def trigger(
        self, dag_id: str, run_id: str, start: datetime, end: datetime, logical_date: datetime | None = None
    ) -> dict[str, Any]:
        """Trigger a run of ``dag_id`` for the data interval ``[start, end)``. The logical date (default
        ``start``) is unique per DAG: give another one to run the same interval again as a new run.
        (``airflow dags trigger`` cannot: it derives the interval from the current time.)"""
        body = {
            "dag_run_id": run_id,
            "logical_date": (logical_date or start).isoformat(),
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
        }
        return dict(self.api("POST", f"dags/{dag_id}/dagRuns", body))

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (mapped ones one per index), as the REST API shows them."""
        answer = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")
        return list(answer["task_instances"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        suffix = "" if map_index < 0 else f"/{map_index}"
        return dict(self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}"))

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Every try of one task instance, oldest first (hostname, state, try_number of each)."""
        suffix = "" if map_index < 0 else f"/{map_index}"
        answer = self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}/tries")
        return sorted(answer["task_instances"], key=lambda t: t["try_number"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait until the run ends; return it if it succeeded, else raise with its failed tasks' logs."""

        def ended() -> dict[str, Any] | None:
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in ("success", "failed") else None

        run = wait_for(f"run {dag_id}/{run_id} to end", ended, timeout, 1)
        if run["state"] != "success":
            raise DeploymentError(f"run {dag_id}/{run_id} {run['state']}:\n{self.task_logs(dag_id, run_id)}")
        return run

    def task_log_paths(self, dag_id: str, run_id: str, task_id: str = "*") -> list[Path]:
        logs = self.base / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        return sorted(logs.glob(f"task_id={task_id}/**/attempt=*.log"))

    def task_logs(self, dag_id: str, run_id: str, lines: int = 40) -> str:
        """The last lines of every attempt's log of a run (for failure reports)."""
        out = []
        for path in self.task_log_paths(dag_id, run_id):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"----- {path.relative_to(self.base)}\n" + "\n".join(tail))
        return "\n".join(out)

    # ------------------------------------------------------------------ readiness

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['api']}/api/v2/monitor/health", timeout=5) as r:
            return dict(json.load(r))

    def _healthy(self) -> bool:
        for name in AIRFLOW_SERVICES:
            if not self.services[name].alive():
                raise DeploymentError(f"{name} exited; see {self.services[name].log}")
        health = self.health()
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(p) or {}).get("status") == "healthy" for p in parts)

    def _dags_parsed(self) -> bool:
        errors = self.api("GET", "importErrors")["import_errors"]
        if errors:
            raise DeploymentError(
                f"the DAGs do not import: {errors[0]['filename']}: {errors[0]['stack_trace'][-1500:]}"
            )
        rows = self.sql("SELECT dag_id FROM dag WHERE dag_id = ANY(%s) AND NOT is_paused", list(DAG_IDS))
        return len(rows) == len(DAG_IDS)


def _default_sandbox_options() -> dict[str, Any]:
    """A rate limit when this sandbox has one (``--rate-limit``), so the hook's pacing is exercised too."""
    from airflow_provider_auralytik.sandbox.__main__ import build_parser

    options = {a for action in build_parser()._actions for a in action.option_strings}
    return {"rate_limit": 20} if "--rate-limit" in options else {}


# ---------------------------------------------------------------------- command line


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/deployment.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--state", type=Path, default=STATE_POINTER, help="state file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "up":
        if args.state.exists():
            print(
                f"A deployment is already up ({args.state}); run `scripts/deployment.sh down` first.", file=sys.stderr
            )
            return 1
        deployment = Deployment.up(detached=True)
        deployment.save(args.state)
        print(f"Airflow UI:   http://127.0.0.1:{deployment.ports['api']}")
        print(f"Sandbox API:  {deployment.sandbox_url}  (key {SANDBOX_KEY})")
        print(f"S3 (moto):    http://127.0.0.1:{deployment.ports['s3']}  bucket {BUCKET}")
        print(f"Logs:         {deployment.base / 'logs'}")
        print(f"CLI:          source {deployment.base / 'env.sh'} && airflow dags list")
        return 0
    if not args.state.exists():
        print(f"No deployment is up ({args.state} does not exist).", file=sys.stderr)
        return 0 if args.command == "down" else 1
    deployment = Deployment.load(args.state)
    if args.command == "status":
        for name, alive in deployment.status().items():
            print(f"{name:14} {'running' if alive else 'STOPPED'}  pid {deployment.services[name].pid}")
        with contextlib.suppress(Exception):
            print(json.dumps(deployment.health(), indent=2))
        return 0 if all(deployment.status().values()) else 1
    deployment.down()
    args.state.unlink()
    print("Deployment stopped and removed.")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
