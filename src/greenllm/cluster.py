"""Study groups on a Ray cluster (imported only with ``greenllm run --cluster``).

The runner hands this module *jobs*: a worker function named as ``"module:attr"`` (so Ray
imports it on the node instead of pickling code), its payload, the artifacts it needs (greenllm
checkpoint folders) and the Ray resources that select its node. Each remote job is a Ray
streaming-generator task: the worker function gets an ``emit`` callback, and every record it
emits (a step, an evaluation, a window, a bench result, a log line) reaches the driver as
soon as it is produced; the driver, the only writer of the store, commits it at once.

- **Placement:** a job for a device asks for ``{<label>: 1, "greenllm_meter": 1}``. Every
  device node carries one ``greenllm_meter`` unit, so two energy windows never overlap on one
  node, even when the node has two device labels (a Jetson's CPU and GPU).
- **Artifacts** travel through Ray's object store as uncompressed tar archives (``ray.put``
  once each, extracted on the node with tarfile's ``data`` filter), or by path when the output
  directory is on a file system every node mounts at the same path (``shared_out``).
- **Faults:** Ray's own task retries are off (``max_retries=0``): a retried generator would
  replay from the payload's old snapshot. Instead, when a node dies (``NodeDiedError`` and the
  other system errors), the driver takes a new snapshot of what the store now holds and
  submits the job again; it waits in Ray's queue until a node with that resource is back, and
  resumes after the last finished window (a rerun never duplicates a result: every store
  write is keyed). An error in greenllm's own code (a ``GreenLLMError`` on the node) is not
  retried.
- **Local jobs** (a device ``via: local`` in a cluster run) run in a driver thread with the
  same record stream, so one loop commits everything.
"""

from __future__ import annotations

import io
import os
import queue
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GreenLLMError, require

METER_RESOURCE = "greenllm_meter"
_DONE = object()


@dataclass
class Job:
    """One unit of remote work (a study group, or a model's compression)."""

    name: str  # for messages: "smollm2 @ orin"
    fn: str  # "module:attr", called as fn(payload, emit, artifacts_dir)
    payload: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)  # name -> checkpoint folder
    label: str | None = None  # Ray resource label; None = run in a driver thread
    resnapshot: Callable[[], dict[str, Any]] | None = None  # fresh store snapshot for a retry
    attempts: int = 0


def _resolve(fn: str) -> Callable[..., Any]:
    import importlib

    mod, _, attr = fn.partition(":")
    return getattr(importlib.import_module(mod), attr)


def pack_dir(path: Path) -> bytes:
    """A folder as an uncompressed tar (safetensors do not compress)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(path), arcname=".")
    return buf.getvalue()


def unpack_dir(data: bytes, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return dest


def _run_on_node(fn: str, payload: dict[str, Any], refs: dict[str, Any], shared: dict[str, str]):
    """The body of the Ray task (a generator): fetch artifacts, run ``fn`` in a thread, yield
    its records as they come."""
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="greenllm-cell-"))
    try:
        arts = tmp / "artifacts"
        arts.mkdir()
        for name, ref in refs.items():
            unpack_dir(ray.get(ref), arts / name)
        for name, path in shared.items():
            os.symlink(path, arts / name)
        q: queue.Queue = queue.Queue()
        err: list[BaseException] = []

        def work():
            try:
                node = {
                    "ray_node_id": ray.get_runtime_context().get_node_id(),
                    "hostname": os.uname().nodename,
                }
                _resolve(fn)({**payload, "node": node, "work_dir": str(tmp)}, q.put, arts)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the task below
                err.append(exc)
            finally:
                q.put(_DONE)

        t = threading.Thread(target=work, name="greenllm-cell", daemon=True)
        t.start()
        while True:
            rec = q.get()
            if rec is _DONE:
                break
            yield rec
        t.join()
        if err:
            raise err[0]
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


class RayCluster:
    """A connection to a Ray cluster for one study run."""

    def __init__(
        self,
        address: str = "ray",
        *,
        log: Callable[[str], None] = print,
        shared_out: bool = False,
        max_attempts: int = 4,
    ):
        self.ray = require("ray", "ray", "run a study on a Ray cluster (--cluster)")
        self.log, self.shared_out, self.max_attempts = log, shared_out, max_attempts
        self.address = address
        self._refs: dict[Path, Any] = {}
        self._task: Any = None
        self._owns = False

    # ---------------------------------------------------------------- connection
    def connect(self) -> None:
        ray = self.ray
        addr = self.address
        if addr in ("ray", "auto"):
            addr = os.environ.get("RAY_ADDRESS") or "auto"
        try:
            if not ray.is_initialized():
                ray.init(address=addr, log_to_driver=True, namespace="greenllm")
                self._owns = True
        except ConnectionError as exc:
            raise GreenLLMError(
                f"cannot reach a Ray cluster at {addr!r} ({exc}); start one with "
                "'ray start --head' (then join the devices, see docs/devices.md) or pass "
                "--cluster ray://HOST:10001"
            ) from None
        self._task = ray.remote(max_retries=0)(_run_on_node)

    def close(self) -> None:
        self._refs.clear()
        if self._owns:
            self.ray.shutdown()

    def missing_labels(self, labels: list[str]) -> list[str]:
        have = self.ray.cluster_resources()
        return [lab for lab in labels if lab not in have]

    # ---------------------------------------------------------------- jobs
    def _submit(self, job: Job):
        ray = self.ray
        refs, shared = {}, {}
        for name, path in job.artifacts.items():
            if self.shared_out:
                shared[name] = str(Path(path).resolve())
            else:
                if path not in self._refs:
                    self._refs[path] = ray.put(pack_dir(Path(path)))
                refs[name] = self._refs[path]
        job.attempts += 1
        opts = {"resources": {job.label: 1, METER_RESOURCE: 1}, "num_cpus": 0}
        return self._task.options(**opts).remote(job.fn, job.payload, refs, shared)

    def run_jobs(self, jobs: list[Job], apply: Callable[[Job, Any], None]) -> list[str]:
        """Run every job; ``apply(job, record)`` for each record as it arrives (in this
        thread, the only store writer). Returns the failures, one message per failed job."""
        ray = self.ray
        failures: list[str] = []
        local_q: queue.Queue = queue.Queue()
        threads: dict[str, Job] = {}
        gens: dict[Any, Job] = {}
        missing = self.missing_labels(sorted({j.label for j in jobs if j.label}))
        for lab in missing:
            self.log(f"no node has the resource {lab!r} yet: its cells wait for one to join")
        for job in jobs:
            if job.label is None:
                threads[job.name] = job
                self._start_thread(job, local_q)
            else:
                gens[self._submit(job)] = job
        while gens or threads:
            while True:  # everything the local threads produced so far
                try:
                    name, rec = local_q.get_nowait()
                except queue.Empty:
                    break
                job = threads[name]
                if rec is _DONE:
                    del threads[name]
                elif isinstance(rec, BaseException):
                    failures.append(f"{job.name}: {rec}")
                    if not isinstance(rec, GreenLLMError):
                        raise rec
                else:
                    apply(job, rec)
            if not gens:
                time.sleep(0.05)
                continue
            ready, _ = ray.wait(list(gens), num_returns=1, timeout=0.1)
            for g in ready:
                job = gens[g]
                try:
                    ref = next(g)
                except StopIteration:
                    del gens[g]
                    continue
                try:
                    rec = ray.get(ref)
                except GreenLLMError as exc:  # greenllm's own error on the node: final
                    del gens[g]
                    failures.append(f"{job.name}: {exc}")
                    continue
                except ray.exceptions.RayTaskError as exc:  # a bug on the node: final
                    del gens[g]
                    failures.append(f"{job.name}: {exc}")
                    continue
                except ray.exceptions.RayError as exc:  # the node or worker went away
                    del gens[g]
                    if job.attempts >= self.max_attempts:
                        failures.append(
                            f"{job.name}: gave up after {job.attempts} attempts ({exc})"
                        )
                        continue
                    self.log(
                        f"{job.name}: lost its node ({type(exc).__name__}); resubmitted, it "
                        f"resumes after the last stored window when a node with "
                        f"{job.label!r} is available"
                    )
                    if job.resnapshot is not None:
                        job.payload = {**job.payload, "snapshot": job.resnapshot()}
                    gens[self._submit(job)] = job
                    continue
                apply(job, rec)
        return failures

    @staticmethod
    def _start_thread(job: Job, q: queue.Queue) -> None:
        def work():
            try:
                arts = Path(job.payload["artifacts_dir"])
                _resolve(job.fn)(job.payload, lambda rec: q.put((job.name, rec)), arts)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop
                q.put((job.name, exc))
            finally:
                q.put((job.name, _DONE))

        threading.Thread(target=work, name=f"greenllm-{job.name}", daemon=True).start()


__all__ = ["RayCluster", "Job", "METER_RESOURCE", "pack_dir", "unpack_dir"]
