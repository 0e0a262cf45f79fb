"""The Ray executor: the loop's tasks on a pool of Ray actors (the in-process one is
:class:`autocompress.searching.LocalExecutor`; both have the interface
:func:`autocompress.searching.drive` uses). A task is a candidate config and a stage; a
model or a data set never travels.

The Ray executor keeps one actor per worker (``num_gpus=1`` each on CUDA, or the
fraction ``execution.gpus_per_worker``; one CPU each otherwise). Each actor builds its
:class:`~autocompress.engine.worker.Worker` once. An actor that dies (its process
killed, its node lost) costs the search its share of the work, not the search: the
task it was running is sent again at once to a surviving worker (up to
``max_retries`` times; after that the task completes with an error and the search goes
on), and a replacement actor is asked of Ray without waiting for it. Until Ray places
it (a cluster that lost a node may have no room for it until a node joins) the search
goes on with the workers it has; the replacement takes tasks once it has built its
worker. Only a search left with no worker at all for ``start_timeout`` seconds fails.
The retries and replacements are counted and reported through ``on_event``. Ray's own
actor restarts are not used, because the driver must know of every retry to count it
and to bound it per candidate.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

from autocompress.engine.worker import Worker
from autocompress.errors import AutocompressError, UserInputError
from autocompress.searching import Completion, Task, TaskOutcome, describe, execute

log = logging.getLogger("autocompress")

EventHook = Callable[[str, str], None]  # (kind, message)
WorkerHook = Callable[..., None]  # (name, state=, task=, pid=, node=)


def refuse_local_workers(field: str, workers: int, cpus: int) -> None:
    """A local Ray gets this machine's CPUs and one actor takes one: more workers are
    refused before Ray starts (its start alone takes seconds)."""
    if workers > cpus:
        raise UserInputError(
            f"{field}: {workers} workers need {workers} CPUs, but this machine has {cpus}; lower {field}, or add "
            "nodes to a cluster and join it (execution.ray_address, --ray-address)")


def connect_ray(address: str | None, local_cpus: int | None = None, *, local_logs: bool = True,
                workers: int = 0, field: str = "execution.workers"):
    """``(ray, started)``: Ray joined at ``address`` (a cluster), or inside a Ray Job the
    cluster it runs on, or else a local Ray of ``local_cpus`` CPUs (this machine's by
    default) started now, even when a cluster runs on this machine (``ray.init()`` alone
    would join the last one ``ray start`` made); ``started`` says whether this call started
    it (and so whoever called it shuts it down). ``local_logs`` false keeps a local Ray's
    actor logs out of this process's output (Ray Train's controller polls the state API,
    which a local Ray without its dashboard does not serve, and says so every second).
    ``workers`` more than a local Ray's CPUs are refused (as ``field``) before it starts."""
    import ray

    if ray.is_initialized():
        return ray, False
    options: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address:
        check_reachable(address)
        options["address"] = address
    elif os.environ.get("RAY_ADDRESS"):
        pass  # inside a Ray Job (the service's cluster mode): join the cluster it runs on
    else:  # a local Ray sized to this machine
        cpus = local_cpus or os.cpu_count() or 1
        refuse_local_workers(field, workers, cpus)
        options.update(address="local", include_dashboard=False, num_cpus=cpus, log_to_driver=local_logs)
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise UserInputError(
            f"execution.ray_address: cannot connect to Ray at {address!r}: {error} (a cluster with token "
            "authentication also needs RAY_AUTH_MODE=token here, and RAY_AUTH_TOKEN unless the token is "
            "in ~/.ray/auth_token)") from None
    return ray, True


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``host:port`` address whose port takes no connection is refused now: ``ray.init``
    would retry a stopped head's address for many minutes before it gave up."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # 'auto', a Ray Client address, or a form Ray itself will judge
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        raise UserInputError(
            f"execution.ray_address: cannot connect to Ray at {address!r}: nothing answers there ({error}); "
            "is the cluster's head running? (`ray status --address ADDRESS` on a node of the cluster says)") from None


class RayExecutor:
    """A pool of Ray actors, each holding a :class:`Worker`."""

    name = "ray"
    WAITING_SAY_AFTER = 60.0  # seconds a replacement waits for room before the search says so

    def __init__(self, spec_data: dict, spec_dir: str | None, *, workers: int, device: str, address: str | None,
                 proxy: bool, run_dir: str, max_retries: int = 2, start_timeout: float = 600.0,
                 on_event: EventHook | None = None, on_worker: WorkerHook | None = None, actor_class=None,
                 local_cpus: int | None = None, gpus_per_worker: float = 1.0):
        import ray

        self.ray = ray
        self.spec_data, self.spec_dir, self.proxy, self.run_dir = spec_data, spec_dir, proxy, run_dir
        self.max_retries = max_retries
        self.start_timeout = start_timeout
        self.on_event = on_event or (lambda kind, message: None)
        self.on_worker = on_worker or (lambda *a, **k: None)
        self._started_ray = self._local = False
        self.local_cpus = local_cpus or os.cpu_count() or 1  # what a local Ray may use (benchmarks simulate more)
        self._connect(address, workers)
        # auto: GPU actors when the cluster has GPUs (this process may run on a head without any)
        self.gpu = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        self.gpu_share = gpus_per_worker if self.gpu else 0.0
        self._check_resources(workers)
        self._actor_class = ray.remote(actor_class or _RayWorker).options(
            num_cpus=1, num_gpus=self.gpu_share, max_restarts=0, max_concurrency=2)
        self.actors: dict[str, object] = {}  # every worker the search has: started, or starting
        self.generation: dict[str, int] = {}
        self.starting: dict[str, tuple[object, float]] = {}  # worker -> (its info() ref, when it was asked for)
        self.running: dict[object, tuple[Task, str, int]] = {}  # object ref -> (task, worker, attempt)
        self.busy_workers: set[str] = set()
        self.queued: list[tuple[Task, int]] = []  # tasks sent again after their worker died, waiting for one
        self._cancelled: list[Completion] = []  # queued tasks cancelled before they ran: completed at the next wait
        self._failed_starts: dict[str, int] = {}
        self._said_waiting: set[str] = set()
        self._probed_on: dict[str, str] = {}  # candidate id -> worker that probed it (its model is cached there)
        try:
            for index in range(workers):
                self._spawn(f"worker-{index}")
            for name in list(self.actors):  # the first workers must all start: a failure here is the run's
                ref, _since = self.starting.pop(name)
                self._started(name, self._first_info(name, ref))
        except BaseException:
            self.shutdown()
            raise

    def _connect(self, address: str | None, workers: int) -> None:
        self.ray, self._started_ray = connect_ray(address, self.local_cpus, workers=workers)
        self._local = self._started_ray and not address and not os.environ.get("RAY_ADDRESS")

    def _check_resources(self, workers: int) -> None:
        ray = self.ray
        resources = ray.cluster_resources()
        kind, have = ("GPU", resources.get("GPU", 0)) if self.gpu else ("CPU", resources.get("CPU", 0))
        need = workers * self.gpu_share if self.gpu else workers
        if have < need:
            if self._started_ray:
                ray.shutdown()
            where = "this machine has" if self._local else "the Ray cluster has"
            share = f" ({self.gpu_share:g} each)" if self.gpu and self.gpu_share != 1 else ""
            raise UserInputError(
                f"execution.workers: {workers} workers need {need:g} {kind}s{share}, but {where} {have:g}; "
                f"lower the workers (execution.workers, --workers), or add nodes to a cluster and join it (execution.ray_address, --ray-address)"
            )

    def _spawn(self, name: str) -> None:
        """Ask Ray for the worker's actor; it is ready when its ``info()`` returns."""
        self.generation[name] = self.generation.get(name, -1) + 1
        actor = self._actor_class.remote(
            self.spec_data, self.spec_dir, proxy=self.proxy, device="cuda" if self.gpu else "cpu", run_dir=self.run_dir)
        self.actors[name] = actor
        self.starting[name] = (actor.info.remote(), time.monotonic())
        self.on_worker(name, state="starting")

    def _first_info(self, name: str, ref) -> dict:
        try:
            return self.ray.get(ref, timeout=self.start_timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise AutocompressError(f"{name} did not start within {self.start_timeout:.0f} s "
                                    "(not enough resources on the Ray cluster?)") from None
        except self.ray.exceptions.RayError as error:
            raise AutocompressError(f"{name} could not start: {_cause(error)}") from None

    def _started(self, name: str, info: dict) -> None:
        self._failed_starts.pop(name, None)
        self._said_waiting.discard(name)
        self.on_worker(name, state="idle", pid=info["pid"], node=info["node"])
        if self.generation[name] > 0:
            self.on_event("worker-replaced", f"{name} replaced (generation {self.generation[name]}, "
                                             f"on {info['node']}, pid {info['pid']})")

    def _start_settled(self, name: str, ref) -> None:
        """A replacement's ``info()`` came back: it takes tasks, or it failed to start
        (its node lost too, say) and is asked for again, up to ``max_retries`` times in a
        row; then the search goes on without it."""
        del self.starting[name]
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            failures = self._failed_starts[name] = self._failed_starts.get(name, 0) + 1
            message = f"{name} could not start: {_cause(error).splitlines()[0]}"
            if failures > self.max_retries:
                del self.actors[name]
                self.on_worker(name, state="lost")
                self.on_event("worker-lost", f"{message} ({failures} times in a row); the search goes on without it")
                if not self.actors:
                    raise AutocompressError(f"every Ray worker is lost; the last: {message}") from None
                return
            log.warning("%s; asking Ray for it again", message)
            self._spawn(name)
            return
        self._started(name, info)

    def _check_starting(self) -> None:
        """Replacements Ray has not placed yet: said once after a minute while other workers
        go on; the search fails only when no worker has started for ``start_timeout``."""
        now = time.monotonic()
        ready = len(self.actors) - len(self.starting)
        for name, (_ref, since) in self.starting.items():
            waited = now - since
            if ready == 0 and waited > self.start_timeout:
                raise AutocompressError(f"{name} did not start within {self.start_timeout:.0f} s and no other "
                                        "worker is left (not enough resources on the Ray cluster?)")
            if ready and waited > min(self.WAITING_SAY_AFTER, self.start_timeout) and name not in self._said_waiting:
                self._said_waiting.add(name)
                self.on_worker(name, state="waiting")
                self.on_event("worker-waiting", f"{name} has waited {waited:.0f} s for room on the Ray cluster; "
                                                f"the search goes on with {ready} worker{'s' if ready > 1 else ''}")
                log.warning("%s waits for room on the Ray cluster; going on with %d worker(s)", name, ready)

    # ------------------------------------------------------------------ tasks

    def _idle(self) -> list[str]:
        return [n for n in self.actors if n not in self.busy_workers and n not in self.starting]

    def free(self) -> int:
        """Workers that would take a new task now (tasks sent again go first)."""
        return max(0, len(self._idle()) - len(self.queued))

    def _pick(self, task: Task) -> str:
        idle = self._idle()
        preferred = self._probed_on.get(task.candidate.id)
        return preferred if preferred in idle else idle[0]

    def submit(self, task: Task, attempt: int = 1, worker: str | None = None) -> None:
        name = worker or self._pick(task)
        ref = self.actors[name].run.remote(task.stage, task.candidate.to_dict(), task.shard)
        self.running[ref] = (task, name, attempt)
        self.busy_workers.add(name)
        self.on_worker(name, state="busy", task=describe(task))

    def _dispatch(self) -> None:
        while self.queued and self._idle():
            task, attempt = self.queued.pop(0)
            self.submit(task, attempt)

    def wait(self, timeout: float | None = None) -> list[Completion]:
        done, self._cancelled = self._cancelled, []
        self._dispatch()
        starting = {ref: name for name, (ref, _since) in self.starting.items()}
        refs = [*self.running, *starting]
        if not refs:
            return done
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=0 if done else timeout)
        if ready:  # collect whatever else is ready too
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref in starting:
                self._start_settled(starting[ref], ref)
                continue
            task, name, attempt = self.running.pop(ref)
            self.busy_workers.discard(name)
            try:
                outcome = self.ray.get(ref)
            except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnavailableError) as error:
                done.extend(self._worker_died(task, name, attempt, error))
                continue
            except self.ray.exceptions.RayError as error:  # the task raised past the worker's own handling
                outcome = TaskOutcome(error=f"{type(error).__name__}: {_cause(error)}")
            if task.stage == "probe":
                self._probed_on[task.candidate.id] = name
            self.on_worker(name, state="idle")
            done.append(Completion(task, outcome, name, attempt))
        self._check_starting()
        self._dispatch()  # a task sent again goes to a surviving worker at once
        return done

    def _worker_died(self, task: Task, name: str, attempt: int, error: Exception) -> list[Completion]:
        self.on_event("worker-died", f"{name} died while running {describe(task)} (attempt {attempt}): "
                                     f"{_cause(error).splitlines()[0]}")
        log.warning("%s died while running %s; replacing it", name, describe(task))
        try:
            self.ray.kill(self.actors[name])
        except Exception:  # already gone
            pass
        self._spawn(name)  # placed when the cluster has room; the search does not wait for it
        self._probed_on = {c: w for c, w in self._probed_on.items() if w != name}
        if attempt <= self.max_retries:
            self.on_event("retry", f"{describe(task)}: attempt {attempt + 1} of {self.max_retries + 1}")
            self.queued.append((task, attempt + 1))
            return []
        message = f"WorkerDied: the worker died {attempt} times running this task"
        self.on_event("failed", f"{describe(task)}: {message}")
        return [Completion(task, TaskOutcome(error=message), name, attempt)]

    def cancel(self, tasks: list[Task]) -> None:
        """Cancel running tasks whose results are no longer wanted (shards of a validation
        stopped early): each ends at its next batch, its worker free for the next task; one
        still waiting to be sent again completes at the next wait without running."""
        keys = {task.key for task in tasks}
        for ref, (task, _name, _attempt) in list(self.running.items()):
            if task.key in keys:
                try:
                    self.ray.cancel(ref)
                except Exception as error:  # finished meanwhile, or an older Ray: it runs to its end
                    log.debug("cancelling %s: %s", describe(task), error)
        kept = []
        for task, attempt in self.queued:
            if task.key in keys:
                self._cancelled.append(Completion(task, TaskOutcome(error="cancelled"), "", attempt))
            else:
                kept.append((task, attempt))
        self.queued = kept

    def baseline(self):
        name = next(n for n in self.actors if n not in self.starting)
        try:
            return self.ray.get(self.actors[name].baseline.remote())
        except self.ray.exceptions.RayError as error:
            raise AutocompressError(f"the baseline evaluation failed on {name}: {_cause(error)}") from None

    def shutdown(self) -> None:
        for actor in self.actors.values():
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors.clear()
        self.starting.clear()
        self.running.clear()
        self.queued.clear()
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()


class _RayWorker:
    """The actor: a :class:`Worker` built inside the actor's process."""

    def __init__(self, spec_data: dict, spec_dir: str | None, *, proxy: bool, device: str, run_dir: str):
        # one CPU per actor (num_cpus=1): one intra-op thread, so actors do not fight over cores
        self.worker = Worker.from_frozen(spec_data, spec_dir, proxy=proxy, device=device, threads=1, run_dir=run_dir)
        self.worker.should_stop = self._cancelled  # a shard of a validation decided without it ends early

    def info(self) -> dict:
        """The worker's process, and its node: the host, and Ray's node id (several nodes may
        share a host)."""
        import ray

        info = self.worker.info()
        return {**info, "node": f"{info['node']} (Ray node {ray.get_runtime_context().get_node_id()[:12]})"}

    def baseline(self):
        return self.worker.baseline()

    def run(self, stage: str, candidate: dict, shard: tuple[int, int] | None = None) -> TaskOutcome:
        return execute(self.worker, stage, candidate, shard)

    @staticmethod
    def _cancelled() -> bool:
        """Whether the driver cancelled the task this actor runs (ray.cancel sets a flag a
        threaded actor's task reads; Ray before 2.4x has no flag: the shard runs to its end)."""
        import ray

        is_canceled = getattr(ray.get_runtime_context(), "is_canceled", None)
        return bool(is_canceled()) if is_canceled is not None else False


def _cause(error: Exception) -> str:
    cause = getattr(error, "cause", None)
    return str(cause if cause is not None else error)
