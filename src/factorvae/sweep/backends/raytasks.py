"""Ray (``factorvae sweep --ray ADDRESS``): one Ray task per unit (a trial or a group). ``out``
must be on storage every node sees (a shared file system). ``local`` starts an instance on
127.0.0.1 only, without dashboard or usage statistics."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from factorvae.errors import UserError
from factorvae.sweep.backends.base import Backend, dirs, failure
from factorvae.sweep.trial import run_group


#: a Ray instance this process starts stays on this machine (loopback only):
#: - Ray's single-machine mode (its default on macOS and Windows): every Ray process binds to
#:   127.0.0.1, instead of all interfaces and the address a UDP "connect" to 8.8.8.8 finds;
#: - no usage statistics;
#: - an HTTP proxy that refuses at once on loopback: Ray's usage module asks the cloud metadata
#:   servers (169.254.169.254, metadata.google.internal) for the cloud it runs on even when
#:   statistics are off, and a local instance has no HTTP to do beyond this machine.
_REFUSE = "http://127.0.0.1:9"
_LOOPBACK = "127.0.0.1,localhost,::1"
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                 "http_proxy": _REFUSE, "https_proxy": _REFUSE, "HTTP_PROXY": _REFUSE, "HTTPS_PROXY": _REFUSE,
                 "no_proxy": _LOOPBACK, "NO_PROXY": _LOOPBACK}


@contextlib.contextmanager
def _local_ray_env():
    """LOCAL_RAY_ENV while a local Ray instance starts (its processes inherit it)."""
    old = {k: os.environ.get(k) for k in LOCAL_RAY_ENV}
    os.environ.update(LOCAL_RAY_ENV)
    constants = sys.modules.get("ray._private.ray_constants")
    cluster = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if cluster is not None:  # Ray was imported before the variable was set: it read it at import
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if cluster is not None:
            constants.ENABLE_RAY_CLUSTER = cluster


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """An explicit ``host:port`` (or ``ray://host:port``) must answer within seconds; Ray itself
    waits a minute or more in silence before giving up on an address where nothing listens."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port: Ray's own parsing reports it
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise UserError(f"--ray {address}: no Ray cluster answers at {host}:{port} "
                        f"({e.strerror or type(e).__name__})") from None


class RayBackend(Backend):
    """One Ray task per unit, ``cpus`` CPUs (default 1) and ``gpus`` GPUs each."""

    name = "ray"

    def __init__(self, address: str, cpus: float | None = None, gpus: float = 0):
        self.address, self.cpus, self.gpus = address, cpus, gpus
        self.refs: dict = {}
        self.started = False

    def describe(self) -> str:
        return f"Ray ({self.address})"

    def check(self) -> None:
        if self.address not in ("local", "auto"):  # before Ray's slow import and its minute of silence
            _check_reachable(self.address)

    def submit(self, units, out: Path) -> None:
        address = self.address
        if importlib.util.find_spec("ray") is None:
            raise UserError("--ray needs Ray: pip install 'factorvae[ray]'")
        with _local_ray_env() if address == "local" else contextlib.nullcontext():
            import ray  # optional (pip install 'factorvae[ray]'), and slow to import

            if not ray.is_initialized():
                if address not in ("local", "auto"):
                    _check_reachable(address)
                try:
                    if address == "local":  # a new instance on this machine, even if a cluster runs here
                        ray.init(address="local", include_dashboard=False, log_to_driver=False,
                                 _node_ip_address="127.0.0.1")
                    else:
                        ray.init(address=address, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as e:
                    raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({type(e).__name__}: {e})") from None
                self.started = True
        self.ray, self.out = ray, out
        cpus = float(self.cpus) if self.cpus else 1.0
        remote = ray.remote(num_cpus=cpus, num_gpus=float(self.gpus or 0), max_retries=0)(run_group)
        self.refs = {remote.remote(unit, dirs(out.resolve(), unit), max(1, int(math.floor(cpus)))): unit
                     for unit in units}

    def collect(self) -> Iterator[dict]:
        ray, refs = self.ray, self.refs
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for r in ready:
                unit = refs.pop(r)
                try:
                    results = ray.get(r)
                except Exception as e:  # noqa: BLE001 - worker crashed, node lost, ...
                    for t in unit:
                        yield failure(t, self.out, f"Ray task failed: {type(e).__name__}: {str(e)[:2000]}")
                    continue
                yield from results

    def cancel(self) -> None:
        for ref in list(self.refs):
            with contextlib.suppress(Exception):  # already finished or lost
                self.ray.cancel(ref, force=True)
        self.refs = {}

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False
