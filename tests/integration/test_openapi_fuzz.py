"""Property-based fuzzing of every operation in the OpenAPI schema: no input may cause a 5xx.

schemathesis generates requests from ``/openapi.json`` (valid and invalid ones: odd strings, NUL
bytes, huge numbers, wrong types, random multipart bodies) and sends them in process to the app in
its distributed configuration (a real PostgreSQL, which refuses NUL bytes in text, and a real
Redis broker; no worker, so submitted jobs stay queued), authenticated with an admin token. Path
ids are half the time those of real objects (a model, a scan set and an assessment made first),
so the handlers behind a successful lookup are fuzzed too.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require

try:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, seed, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation.modes import GenerationMode
except ImportError:  # pragma: no cover - reported by the fixture below (skip locally, fail in CI)
    schemathesis = None  # type: ignore[assignment]

# deeper runs by hand: BRAINMIA_FUZZ_EXAMPLES=300 BRAINMIA_FUZZ_SEED=7 pytest tests/integration/test_openapi_fuzz.py
MAX_EXAMPLES = int(os.environ.get("BRAINMIA_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("BRAINMIA_FUZZ_SEED", "0"))
timings: dict[str, float] = {}


@pytest.fixture(scope="module")
def fuzz_target(redis_server: str, postgres_cluster: Any, tmp_path_factory: pytest.TempPathFactory,
                tiny_model: Path, small_archive: Path) -> Iterator[dict[str, Any]]:
    """The app (distributed settings, in process), an admin token and the ids of real objects."""
    require(schemathesis is not None, "schemathesis is not installed (pip install schemathesis)")
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.auth import create_token
    from backend.db.migrate import upgrade_database
    from backend.db.session import session_scope
    from backend.settings import Settings

    url = postgres_cluster.create_database("brainmia_fuzz")
    upgrade_database(url)
    root = tmp_path_factory.mktemp("fuzz")
    app = create_app(
        Settings(data_dir=root / "data", database_url=url, broker_url=f"{redis_server}/63", session_secret="fuzz", device="cpu"),
        start_jobs=False,
    )
    with session_scope(app.state.sessionmaker) as session:
        token = create_token(session, "fuzzer", "acme", admin=True)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app, headers=headers) as client:
        with open(tiny_model, "rb") as fh:
            model = client.post("/api/v1/models", files={"file": ("model.pt", fh)},
                                data={"metadata": Path(f"{tiny_model}.json").read_text()})
        assert model.status_code == 201, model.text
        with open(small_archive, "rb") as fh:
            scans = client.post("/api/v1/scan-sets", files={"archive": ("cohort.tar.gz", fh)})
        assert scans.status_code == 201, scans.text
        job = client.post("/api/v1/assessments", json={"model_id": model.json()["id"], "scan_set_id": scans.json()["id"],
                                                       "options": {"repeats": 1}})
        assert job.status_code in (200, 201, 202), job.text
    ids = {"model_id": model.json()["id"], "scan_set_id": scans.json()["id"], "assessment_id": job.json()["id"]}
    try:
        yield {"app": app, "headers": headers, "ids": ids}
    finally:
        app.state.engine.dispose()


def _run_operation(operation: Any, mode: Any, target: dict[str, Any], failures: list[str], counts: dict[str, int]) -> None:
    """Send ``MAX_EXAMPLES`` generated requests of one mode to one operation; record 5xx answers."""

    # deterministic (the same requests in every run with one seed), and no shrinking: the first 5xx
    # is reported as found
    @seed(SEED)
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        params = case.path_parameters or {}
        rng = random.Random(json.dumps(params, sort_keys=True, default=str))
        for name in list(params):
            if name in target["ids"] and rng.random() < 0.5:
                params[name] = target["ids"][name]
        counts["requests"] += 1
        case.call_and_validate(headers=target["headers"], checks=[not_a_server_error])

    started = time.monotonic()
    try:
        run()
    except Unsatisfiable:
        pass  # nothing invalid can be generated for this operation (no parameters, no body)
    except Exception as exc:  # noqa: BLE001 - collected: every operation is fuzzed, then all 5xx are reported
        failures.append(f"{operation.method.upper()} {operation.path} ({mode}): {type(exc).__name__}: {exc}")
    counts["seconds"] += time.monotonic() - started
    timings[f"{operation.method.upper()} {operation.path} {mode}"] = time.monotonic() - started


def test_no_input_causes_a_server_error(fuzz_target: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_target["app"])
    failures: list[str] = []
    counts: dict[str, float] = {"requests": 0, "operations": 0, "seconds": 0.0}
    for result in schema.get_all_operations():
        operation = result.ok()
        counts["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_operation(operation, mode, fuzz_target, failures, counts)
    for key, value in sorted(timings.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{value:6.1f} s {key}")
    print(f"\nschemathesis: {counts['requests']:.0f} requests to {counts['operations']} operations, {len(failures)} with a 5xx")
    assert counts["operations"] >= 10
    assert not failures, "server errors:\n\n" + "\n\n".join(failures)


HOSTILE_TEXT = ["a\x00b", "\x00", "x" * 5000, "名前 🧠", "../../etc/passwd", "' OR 1=1 --", "\r\n\t"]


def test_valid_uploads_with_hostile_text_fields(fuzz_target: dict[str, Any], tiny_model: Path, small_archive: Path) -> None:
    """What random bodies cannot reach: a valid model or archive whose text fields are hostile."""
    from fastapi.testclient import TestClient

    metadata = Path(f"{tiny_model}.json").read_text()
    client = TestClient(fuzz_target["app"], headers=fuzz_target["headers"], raise_server_exceptions=False)
    answers: list[str] = []
    for text in HOSTILE_TEXT:
        with open(tiny_model, "rb") as fh:
            model = client.post("/api/v1/models", files={"file": (f"m{text[:50]}.pt", fh)}, data={"metadata": metadata, "name": text})
        with open(small_archive, "rb") as fh:
            scans = client.post("/api/v1/scan-sets", files={"archive": (f"c{text[:50]}.tar.gz", fh)}, data={"name": text})
        answers += [f"POST /api/v1/models name={text[:12]!r}: {model.status_code} {model.text[:120]}",
                    f"POST /api/v1/scan-sets name={text[:12]!r}: {scans.status_code} {scans.text[:120]}"]
    errors = [a for a in answers if ": 5" in a]
    assert not errors, "server errors:\n" + "\n".join(errors)
