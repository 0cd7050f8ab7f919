"""Integration fixtures: a real Redis, a real PostgreSQL, and BrainMIA's API and workers as processes.

Nothing here uses services already running on the machine: ``redis-server`` and PostgreSQL are
started on free ports in temporary folders and stopped at the end of the session. A missing binary
skips the tests locally and fails them in CI (``tests.conftest.require``); ``scripts/setup.sh
--test`` installs both on Debian/Ubuntu when run as root.

The distributed stack of one test (:class:`Stack`) gets its own database and Redis database
number, and its processes share one ``BRAINMIA_DATA_DIR``, as the API and the workers of a
deployment share a volume.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, require

START_TIMEOUT_S = 90.0


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceDied(AssertionError):
    """A process that a wait depends on has exited (stops the wait at once)."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2,
             diagnostics: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout`` s.

    Exceptions of ``predicate`` are retried, except :class:`ServiceDied`, which ends the wait.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ServiceDied:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    extra = f"\nlast error: {last_error!r}" if last_error else ""
    if diagnostics is not None:
        extra += "\n" + diagnostics()
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{extra}")


def _pg_bindir() -> Path | None:
    """The folder of PostgreSQL's server binaries (PATH first, then Debian's versioned folders)."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0),
    )
    return Path(candidates[-1]).parent if candidates else None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server that forks workers is measured whole)."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Service:
    """A process started for a test, in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None, log: Path,
                 cwd: Path, user: str | None = None):
        self.name = name
        self.argv = argv
        self.log = log
        self._log_fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        kwargs: dict[str, Any] = {}
        if user is not None:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        self.popen = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=self._log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, **kwargs,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 6000) -> str:
        """The end of the process's output (for failure messages)."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"--- {self.name} ({state}), {self.log}:\n{text[-chars:]}"

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process and every process it started."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group, as if its machine died, and reap it."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Ask the process group to stop, kill it after ``timeout`` seconds."""
        if self.alive():
            self.signal_group(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait(timeout=30)
        else:
            self.signal_group(signal.SIGKILL)  # children left behind by a dead leader
        self._log_fh.close()


# -- Redis and PostgreSQL --------------------------------------------------------------------


def start_redis(exe: str, port: int, folder: Path) -> Service:
    """A ``redis-server`` without persistence on ``port``, started and answering PING.

    Raises:
        ServiceDied: it exited before answering (its log tail is in the message).
    """
    import redis

    service = Service(
        "redis-server",
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--databases", "64", "--daemonize", "no"],
        env=None, log=folder / "redis.log", cwd=folder,
    )
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{port}", socket_timeout=1)

        def answers() -> bool:
            if not service.alive():
                raise ServiceDied(f"redis-server exited\n{service.tail()}")
            return bool(client.ping())

        wait_for(answers, 30, "redis-server to answer", diagnostics=service.tail)
        client.close()
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private ``redis-server`` on a free port; yields ``redis://127.0.0.1:<port>`` (no db number)."""
    exe = shutil.which("redis-server")
    require(exe is not None, "redis-server is not installed (scripts/setup.sh --test installs it when run as root)")
    port = free_port()
    service = start_redis(str(exe), port, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        service.stop()


class PostgresServer:
    """A private PostgreSQL cluster (trust authentication, no fsync: test data only)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        # not under pytest's tmp folder: that one is private to root and PostgreSQL refuses root
        self.base = Path(tempfile.mkdtemp(prefix="brainmia-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self.data = self.base / "data"
        self.service: Service | None = None

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        initdb = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync", "--locale=C"],
            cwd=self.base, capture_output=True, text=True, **self._as_user(),
        )
        if initdb.returncode != 0:
            raise AssertionError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        log = self.base / "postgres.log"  # opened by this process: writable whoever owns the folder
        self.service = Service(
            "postgres",
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.base),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            env=None, log=log, cwd=self.base, user=self.user,
        )
        wait_for(self._accepts, START_TIMEOUT_S, "PostgreSQL to accept connections", diagnostics=self.service.tail)

    def _as_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        entry = pwd.getpwnam(self.user)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _connect(self, dbname: str = "postgres") -> Any:
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname,
                               autocommit=True, connect_timeout=2)

    def _accepts(self) -> bool:
        assert self.service is not None
        if not self.service.alive():
            raise ServiceDied(f"postgres exited\n{self.service.tail()}")
        with self._connect() as conn:
            conn.execute("SELECT 1")
        return True

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", name), name
        with self._connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def url(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(signal.SIGINT)  # fast shutdown
        shutil.rmtree(self.base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on a free port (runs as ``postgres`` when the tests run as root)."""
    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL server binaries (initdb, postgres) not found "
                                "(scripts/setup.sh --test installs them when run as root)")
    assert bindir is not None
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster: PostgresServer) -> str:
    """The URL (``postgresql+psycopg://...``) of a database ``brainmia`` on the private server."""
    return postgres_cluster.create_database("brainmia")


# -- BrainMIA processes ----------------------------------------------------------------------


def cli_argv(*args: str) -> list[str]:
    """``brainmia <args>`` with this interpreter (no reliance on the console script being on PATH)."""
    return [sys.executable, "-m", "backend.cli", *args]


def base_env() -> dict[str, str]:
    """The environment of BrainMIA subprocesses: this one without any BRAINMIA_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["BRAINMIA_DEVICE"] = "cpu"
    return env


class Stack:
    """One distributed deployment: a database, a Redis database, an API process and workers.

    Attributes:
        root: folder of this stack (its data dir, logs and the processes' working folder).
        env: the environment every process of the stack gets (``BRAINMIA_*`` included).
        url: the API's base URL once started.
        token: an administrator token (after :meth:`create_token`).
    """

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.env = env
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.api: Service | None = None
        self.workers: list[Service] = []
        self.url = ""
        self.token = ""
        self._worker_count = itertools.count(1)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["BRAINMIA_DATA_DIR"])

    def run_cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``brainmia <args>`` to completion in the stack's environment; fail on a non-zero exit."""
        done = subprocess.run(cli_argv(*args), env=self.env, cwd=self.root, capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"brainmia {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
        return done

    def migrate(self) -> None:
        """``brainmia admin migrate``: create the schema in the empty database."""
        self.run_cli("admin", "migrate")

    def create_token(self, name: str = "ci", org: str = "acme", admin: bool = True) -> str:
        """``brainmia admin create-token``; returns the token it printed."""
        args = ["admin", "create-token", "--name", name, "--org", org] + (["--admin"] if admin else [])
        done = self.run_cli(*args)
        found = re.search(r"bmia_[A-Za-z0-9_\-]+", done.stdout + done.stderr)
        assert found, f"no token in the output of create-token:\n{done.stdout}\n{done.stderr}"
        return found.group(0)

    def start_api(self, wait: bool = True, timeout: float = START_TIMEOUT_S) -> Service:
        """``brainmia serve`` on a free port; with ``wait``, returns once ``/ready`` answers 200."""
        port = free_port()
        self.api = Service("api", cli_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
                           env=self.env, log=self.logs / "api.log", cwd=self.root)
        self.url = f"http://127.0.0.1:{port}"
        if wait:
            wait_for_ready(self.url, timeout, self.api)
        return self.api

    def start_worker(self, wait: bool = True, timeout: float = START_TIMEOUT_S) -> Service:
        """``brainmia worker``; with ``wait``, returns once it answers a Celery ping."""
        n = next(self._worker_count)
        worker = Service(f"worker-{n}", cli_argv("worker", "--hostname", f"worker{n}@%h"), env=self.env,
                         log=self.logs / f"worker-{n}.log", cwd=self.root)
        self.workers.append(worker)
        if wait:
            alive = sum(w.alive() for w in self.workers)

            def answers() -> bool:
                if not worker.alive():
                    raise ServiceDied(f"{worker.name} exited\n{worker.tail()}")
                return self.ping_workers() >= alive

            wait_for(answers, timeout, f"{worker.name} to answer a ping", interval=0.5, diagnostics=self.diagnostics)
        return worker

    def ping_workers(self) -> int:
        """How many workers answer a Celery ping on the stack's broker."""
        from celery import Celery

        app = Celery("brainmia-test-ping", broker=self.env["BRAINMIA_BROKER_URL"])
        try:
            return len(app.control.ping(timeout=1.0) or [])
        finally:
            app.close()

    def client(self, token: str | None = None, timeout: float = 60.0) -> httpx.Client:
        """An HTTP client for the API, authenticated with ``token`` (default: the admin token)."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def diagnostics(self) -> str:
        """The logs of every process of the stack (for failure messages)."""
        services = ([self.api] if self.api else []) + self.workers
        return "\n".join(s.tail() for s in services)

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.api is not None:
            self.api.stop()


def wait_for_ready(url: str, timeout: float = START_TIMEOUT_S, service: Service | None = None) -> dict[str, Any]:
    """Wait until ``GET <url>/ready`` answers 200 (database and broker reachable); returns its body."""

    def ready() -> dict[str, Any] | None:
        if service is not None and not service.alive():
            raise ServiceDied(f"{service.name} exited\n{service.tail()}")
        response = httpx.get(f"{url}/ready", timeout=5)
        return response.json() if response.status_code == 200 else None

    return wait_for(ready, timeout, f"{url}/ready", interval=0.3,
                    diagnostics=service.tail if service is not None else None)


_stack_numbers = itertools.count(1)


@pytest.fixture()
def make_stack(redis_server: str, postgres_cluster: PostgresServer, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """A factory of started distributed stacks, stopped at the end of the test.

    ``make_stack(workers=1, start=True, **settings)``: a fresh database and Redis database,
    ``brainmia admin migrate``, an admin token, then (``start``) the API and ``workers`` worker
    processes. Keyword ``settings`` become ``BRAINMIA_<NAME>`` variables of every process
    (``heartbeat_timeout_s=5``...).
    """
    import redis

    stacks: list[Stack] = []

    def make(workers: int = 1, start: bool = True, **settings: Any) -> Stack:
        n = next(_stack_numbers)
        db_index = n % 64
        redis.Redis.from_url(f"{redis_server}/{db_index}").flushdb()
        root = tmp_path / f"stack{n}"
        env = base_env() | {
            "BRAINMIA_DATABASE_URL": postgres_cluster.create_database(f"brainmia_stack{n}"),
            "BRAINMIA_BROKER_URL": f"{redis_server}/{db_index}",
            "BRAINMIA_DATA_DIR": str(root / "data"),
            "BRAINMIA_SESSION_SECRET": "integration-tests",
        }
        env |= {f"BRAINMIA_{key.upper()}": str(value) for key, value in settings.items()}
        stack = Stack(root, env)
        stacks.append(stack)
        stack.migrate()
        stack.token = stack.create_token()
        if start:
            stack.start_api()
            for _ in range(workers):
                stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture()
def stack(make_stack: Callable[..., Stack]) -> Stack:
    """A started distributed stack with one worker."""
    return make_stack()


# -- inputs ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16-subject synthetic cohort on the tiny 8 mm grid; returns its manifest."""
    from tests.conftest import TINY_SHAPE, TINY_VOXEL
    from worker.engine.synth import CohortSpec, generate_cohort

    out = tmp_path_factory.mktemp("small_cohort")
    return generate_cohort(out, CohortSpec(n_subjects=16, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=5))


@pytest.fixture(scope="session")
def small_archive(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small cohort packed as ``.tar.gz`` (manifest.csv at the top, scans/ beside it)."""
    import tarfile

    path = tmp_path_factory.mktemp("archives") / "cohort.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for item in sorted(small_cohort.parent.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(small_cohort.parent)))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny BrainAge3D as TorchScript with its sidecar metadata."""
    import torch

    from tests.conftest import TINY_CHANNELS, save_tiny_model
    from worker.engine.models import BrainAge3D

    torch.manual_seed(0)
    return save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0, age_scale=10.0),
                           tmp_path_factory.mktemp("tiny_model") / "model.pt")
