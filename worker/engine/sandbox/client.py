"""The supervisor's side of the model host: start it, hand it a model and batches, stop it.

::

    with ModelHost(limits, device="cpu", should_stop=job.should_stop) as host:
        model = host.load(path, overrides)          # a HostedModel: metadata, format, digest, layers
        table = extract_features(model, manifest)   # each batch is computed in the host

Every call waits on the host in slices, checking ``should_stop`` (cancel, delete, shutdown) and
a wall-clock limit; either kills the host's whole process group at once, so a model that loops
or allocates is stopped within a second of the request, and the caller (not the model) decides
what the job becomes. The host's stderr (where the model's own prints and errors go) is copied to
this process's log, cut to a few lines, and never into an answer.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BrainMIAError, InputError, ModelError
from ..models.metadata import ModelMetadata, resolve_metadata
from .protocol import ProtocolError, channel, read_message, write_message

logger = logging.getLogger(__name__)

WAIT_SLICE_S = 0.2
START_TIMEOUT_S = 120.0


class HostStopped(BrainMIAError):
    """The host was stopped because the caller asked (``should_stop``)."""


@dataclass(frozen=True)
class HostLimits:
    """Limits of one model host.

    Attributes:
        call_timeout_s: wall-clock limit of one call (loading and checking a model, one batch).
        memory_bytes: address-space limit of the host.
        cpu_s: total CPU-time limit of the host (None: none; the wall clock still applies).
        threads: torch threads in the host.
        max_model_bytes: largest model file handed to the host.
        private: folders the host must not be able to read (the data folder): the host refuses
            to start if its confinement would leave one readable.
        white_box: the host will compute gradients (False: it only loads and checks models, and
            starts about 2 s sooner; a gradient request is then refused).
    """

    call_timeout_s: float = 600.0
    memory_bytes: int = 8 << 30
    cpu_s: int | None = None
    threads: int = 1
    max_model_bytes: int = 4 << 30
    private: tuple[str, ...] = ()
    white_box: bool = True


@dataclass
class HostedModel:
    """A model loaded in a :class:`ModelHost`: what the engine needs of it, without the module.

    Attributes:
        host: the host holding it.
        path: the file it came from (only its name is shown anywhere).
        metadata: its resolved metadata.
        format: its format (``torchscript``, ``export``, ...).
        sha256: digest of the file.
        aliases: ``first_conv`` / ``last_conv`` / ``output`` -> module path.
        paths: its parametrised modules' paths.
        weights_note: what was done to the weights' names to fit the architecture, or None.
        gradient_method: the per-sample gradient method the host used for the latest white-box
            batch (None before one, or while it is still timing the methods).
    """

    host: ModelHost
    path: Path
    metadata: ModelMetadata
    format: str
    sha256: str
    aliases: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    generation: int = 0
    weights_note: str | None = None
    gradient_method: str | None = None

    def provenance(self) -> dict[str, Any]:
        """The model part of a report's provenance (as :meth:`LoadedModel.provenance`)."""
        return {"path": self.path.name, "sha256": self.sha256, "format": self.format,
                "architecture": self.metadata.arch, "metadata": json.loads(self.metadata.model_dump_json()),
                **({"weights_note": self.weights_note} if self.weights_note else {})}

    def computer(self, device: str) -> HostedModel:
        """Itself: batches are computed in the host (on the host's device)."""
        if device != self.host.device:
            raise InputError(f"the model host runs on {self.host.device}, not {device}")
        return self

    def compute(self, x: Any, ages: Any, white_box: bool, layers: list[str],
                method: str | None = None) -> dict[str, np.ndarray]:
        """The feature values of one batch, computed in the host (``method``: the gradient method;
        the one in use is kept in :attr:`gradient_method`)."""
        if self.generation != self.host.generation:
            raise ModelError(self.path.name, "this model is no longer loaded in its host")
        if white_box and not self.host.limits.white_box:
            raise ModelError(self.path.name, "this model host was started for checks only (no gradients)")
        n = int(x.shape[0])
        answer, values = self.host.call(
            {"op": "features", "white_box": bool(white_box), "layers": list(layers),
             "method": None if method is None else str(method)},
            {"x": np.ascontiguousarray(x.numpy(), dtype=np.float32),
             "ages": np.ascontiguousarray(ages.numpy(), dtype=np.float32)},
            what=f"one batch of {n} scans", name=self.path.name)
        for key, value in values.items():
            if value.ndim not in (1, 2) or value.shape[0] != n:
                raise ModelError(self.path.name, f"the model host answered {key} with shape {value.shape}")
        from ..features.methods import JACOBIAN_METHODS

        used = answer.get("method")
        self.gradient_method = str(used) if used in JACOBIAN_METHODS else None
        return values


class ModelHost:
    """One confined model host process (see :mod:`.host`), used from one thread.

    Args:
        limits: its limits.
        device: where it runs the model (``cpu``, ``cuda``, ``cuda:1``).
        should_stop: polled while waiting; True kills the host and raises :class:`HostStopped`.
    """

    def __init__(self, limits: HostLimits | None = None, device: str = "cpu",
                 should_stop: Callable[[], bool] | None = None):
        self.limits = limits or HostLimits()
        self.device = device
        self.should_stop = should_stop
        self.generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self._in: Any = None
        self._stderr_thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ModelHost:
        """Start the host and wait until it is confined and ready.

        Raises:
            ModelError: the host could not be confined (no Landlock) or did not start.
        """
        to_host_r, to_host_w = os.pipe()
        from_host_r, from_host_w = os.pipe()
        config = {"device": self.device, "memory_bytes": self.limits.memory_bytes, "cpu_s": self.limits.cpu_s,
                  "threads": self.limits.threads, "private": list(self.limits.private),
                  "white_box": self.limits.white_box}
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}  # no secrets inherited
        env.update(OMP_NUM_THREADS=str(self.limits.threads), MKL_NUM_THREADS=str(self.limits.threads))
        if not self.device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = ""
        command = [sys.executable, "-m", "worker.engine.sandbox.host", str(to_host_r), str(from_host_w),
                   json.dumps(config)]
        try:
            self._proc = subprocess.Popen(command, pass_fds=(to_host_r, from_host_w), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                          cwd="/", start_new_session=True)
        finally:
            os.close(to_host_r)
            os.close(from_host_w)
        self._out, self._in = channel(to_host_w, "wb"), channel(from_host_r, "rb")
        self._stderr_thread = threading.Thread(target=self._copy_stderr, name="model-host-stderr", daemon=True)
        self._stderr_thread.start()
        answer, _ = self._exchange(None, None, START_TIMEOUT_S, "starting the sandbox", "model host")
        if answer.get("op") != "ready":
            self.kill()
            raise ModelError("model host", f"the sandbox did not start: {answer.get('reason')}")
        return self

    def _copy_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        lines = 0
        for raw in self._proc.stderr:
            lines += 1
            if lines <= 200:
                logger.warning("model host %d: %s", self._proc.pid, raw.decode(errors="replace").rstrip()[:500])

    def kill(self) -> None:
        """Kill the host's process group now (idempotent)."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            logger.error("model host %d did not die", self._proc.pid)
        for fh in (self._out, self._in):
            try:
                if fh is not None:
                    fh.close()
            except OSError:
                pass
        self._out = self._in = None
        self.generation += 1

    def close(self) -> None:
        """Ask the host to finish, then make sure it has."""
        if self._proc is not None and self._proc.poll() is None and self._out is not None:
            try:
                self._exchange({"op": "close"}, None, 10.0, "closing", "model host")
            except (ModelError, HostStopped):
                pass
        self.kill()
        self._proc = None

    def __enter__(self) -> ModelHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls ---------------------------------------------------------------------------------

    def _exchange(self, header: dict[str, Any] | None, arrays: dict[str, np.ndarray] | None, timeout: float,
                  what: str, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Send a request (None: only read) and wait for the answer, killing the host on stop or timeout."""
        if self._proc is None or self._out is None:
            raise ModelError(name, "the model host is not running")
        result: dict[str, Any] = {}

        def talk() -> None:
            try:
                if header is not None:
                    write_message(self._out, header, arrays)
                result["answer"] = read_message(self._in)
            except (EOFError, OSError, ProtocolError, ValueError) as exc:
                result["error"] = exc

        thread = threading.Thread(target=talk, name="model-host-call", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while thread.is_alive():
            thread.join(WAIT_SLICE_S)
            if not thread.is_alive():
                break
            if self.should_stop is not None and self.should_stop():
                self.kill()
                thread.join(5)
                raise HostStopped(f"{name}: stopped during {what}")
            if time.monotonic() > deadline:
                self.kill()
                thread.join(5)
                raise ModelError(name, f"{what} took longer than {timeout:g} s; the model was stopped")
        if "answer" in result:
            return result["answer"]
        try:  # the channel closed: the host has ended, or is about to
            code = self._proc.wait(timeout=5) if isinstance(result.get("error"), EOFError) else self._proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        self.kill()
        if code is not None and code < 0:
            why = {signal.SIGXCPU: "its CPU-time limit", signal.SIGKILL: "a limit or a crash",
                   signal.SIGSEGV: "a crash", signal.SIGSYS: "a forbidden system call"}.get(-code, "a signal")
            raise ModelError(name, f"the model process was stopped by signal {-code} ({why}) during {what}")
        raise ModelError(name, f"the model process ended during {what} (exit status {code})")

    def call(self, header: dict[str, Any], arrays: dict[str, np.ndarray] | None, *, what: str,
             name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """One request; the answer's header and arrays.

        Raises:
            ModelError: the model failed, was refused, or exceeded a limit (the reason says which).
            InputError: the request was invalid (e.g. its metadata).
            HostStopped: ``should_stop`` asked for it.
        """
        answer, values = self._exchange(header, arrays, self.limits.call_timeout_s, what, name)
        if answer.get("ok"):
            return answer, values
        kind, reason = answer.get("kind"), str(answer.get("reason") or "failed")[:1000]
        if kind == "memory":
            raise ModelError(name, f"{what} needs more than {self.limits.memory_bytes >> 20} MB of memory; "
                             "the model was stopped")
        if kind == "input":
            raise InputError(reason)
        raise ModelError(name, reason)

    def load(self, path: Path | str, overrides: dict[str, Any] | None = None, *, device: str | None = None,
             check: bool = True) -> HostedModel:
        """Load ``path`` (its sidecar and ``overrides`` resolved here) in the host; the previous
        model of this host is dropped.

        Raises:
            ModelError / InputError: as :func:`worker.engine.models.load_model`.
        """
        path = Path(path)
        if device is not None and device != self.device:
            raise InputError(f"the model host runs on {self.device}, not {device}")
        if not path.is_file():
            raise ModelError(path.name, "model file not found")
        size = path.stat().st_size
        if size > self.limits.max_model_bytes:
            raise ModelError(path.name, f"the file is {size >> 20} MB, more than {self.limits.max_model_bytes >> 20} MB")
        metadata = resolve_metadata(path, overrides)
        data = np.fromfile(path, dtype=np.uint8)
        header = {"op": "load", "name": path.name, "metadata": json.loads(metadata.model_dump_json()),
                  "check": check}
        self.generation += 1
        answer, _ = self.call(header, {"file": data}, what="loading and running the model once", name=path.name)
        return HostedModel(host=self, path=path, metadata=metadata, format=str(answer["format"]),
                           sha256=str(answer["sha256"]), aliases={str(k): str(v) for k, v in answer["aliases"].items()},
                           paths=[str(p) for p in answer["paths"]], generation=self.generation,
                           weights_note=str(answer["weights_note"])[:300] if answer.get("weights_note") else None)
