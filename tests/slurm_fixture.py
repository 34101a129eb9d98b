"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd on this machine.

Nothing is installed here: ``.ci/run`` installs Debian's ``slurm-wlm`` and ``munge`` where it
can (apt and root). Where ``sbatch`` or the daemons are missing, or they do not come up, the
tests that use :func:`slurm_cluster` are skipped with the reason.

Everything lives under one temporary directory: a private munge key and socket (the
machine's own munged, if any, is left alone), ``slurm.conf`` with free ports, state, spool
and logs. ``SLURM_CONF`` points the client commands (``sbatch``, ``squeue``, ``scancel``,
and ``srun`` inside jobs, which inherit the environment) at it.

Accounting is off (``accounting_storage/none``), so ``sacct`` has nothing to report: vadpipe
follows its tasks through ``squeue`` and submitit's result files (see vadpipe/distribute/executors.py),
which is what lets this cluster do without slurmdbd and a database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun")
CPUS = 4  # advertised whatever the machine has (config_overrides): a 4-task array starts at once
START_TIMEOUT_S = 60


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)


class LocalSlurm:
    """munged + slurmctld + slurmd for one node (this host), all files under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.logs = self.root / "log"
        self._procs: list[tuple[str, subprocess.Popen]] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ------------------------------------------------------------------ set-up
    def write_config(self) -> None:
        for d in ("state", "spool", "log", "munge"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        ctld_port, slurmd_port = _free_ports(2)
        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=vadpipe-test",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    f"SlurmctldPort={ctld_port}",
                    f"SlurmdPort={slurmd_port}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"StateSaveLocation={self.root / 'state'}",
                    f"SlurmdSpoolDir={self.root / 'spool'}",
                    f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
                    f"SlurmdPidFile={self.root / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.logs / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.logs / 'slurmd.log'}",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    f"PlugStackConfig={self.root / 'plugstack.conf'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SchedulerType=sched/builtin",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmdParameters=config_overrides",  # trust CPUs/RealMemory below, never drain
                    "KillWait=2",  # scancel: SIGTERM, then SIGKILL 2 s later
                    "InactiveLimit=0",
                    "MailProg=/bin/true",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={_memory_mb()} State=UNKNOWN",
                    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _munge_key(self) -> Path:
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            key.chmod(0o600)
        return key

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.stdout", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        self._procs.append((name, proc))
        return proc

    def start(self) -> None:
        self.write_config()
        m = self.root / "munge"
        self._spawn(
            "munged",
            [_which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
             f"--key-file={self._munge_key()}", f"--pid-file={m / 'munged.pid'}",
             f"--log-file={self.logs / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"],
        )
        self._wait_for(lambda: self.munge_socket.exists(), "munged socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait_for(self._node_idle, "the node to be idle in sinfo")

    def _node_idle(self) -> bool:
        for name, proc in self._procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.logs}")
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {self.logs}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ tear-down
    def stop(self) -> None:
        """Cancel whatever is left in the queue, then stop the daemons (last started first)."""
        if any(name == "slurmctld" and p.poll() is None for name, p in self._procs):
            subprocess.run(["scancel", "--partition=debug"], env=self.env, capture_output=True)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.queue():
                time.sleep(0.5)
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in sorted(self.logs.glob("*.log"))
        )

    def queue(self) -> list[str]:
        """``JOBID|STATE`` of every pending or running job (array tasks one per line)."""
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], env=self.env, capture_output=True, text=True)
        return out.stdout.split()


def missing_slurm() -> str | None:
    """Why a local Slurm cannot run here, or None."""
    missing = [name for name in DAEMONS if _which(name) is None]
    if missing:
        return (
            f"Slurm not installed ({', '.join(missing)} missing): .ci/run installs slurm-wlm and munge "
            "with apt when it runs as root"
        )
    if os.geteuid() != 0:
        return "the local Slurm test cluster runs slurmd as root (SlurmdUser=root); not root here"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node Slurm; ``SLURM_CONF`` is set for this module's tests."""
    reason = missing_slurm()
    if reason:
        pytest.skip(reason)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:  # installed but broken: say so, do not hide it
        cluster.stop()
        pytest.fail(f"local Slurm did not start: {exc}\n{cluster.log_tail()}")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
