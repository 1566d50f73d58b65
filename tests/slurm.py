"""A throw-away single-node SLURM for the tests marked `slurm`, as tests/postgres.py starts PostgreSQL: munged,
slurmctld and slurmd as root in a temporary folder, on free loopback ports, with `ProctrackType=proctrack/linuxproc`,
`TaskPlugin=task/none` and `SelectType=select/cons_tres`, one node with this machine's CPUs; optionally slurmdbd on
a throw-away MariaDB, for accounting (`sacct`). Clients find it through SLURM_CONF. `.ci/run` installs the
distribution's packages (slurmctld, slurmd, slurm-client, slurmdbd, munge, mariadb-server) when they are missing.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sinfo")
ACCOUNTING = ("slurmdbd", "sacctmgr", "mariadbd", "mariadb-install-db")


class Unavailable(Exception):
    pass


def _binary(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                       None)
    if not found:
        raise Unavailable(f"no {name}: install the distribution's slurmctld, slurmd, slurm-client and munge packages "
                          "(slurmdbd and mariadb-server for accounting)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`with Cluster(accounting=...) as env:` gives the environment (SLURM_CONF) that reaches the cluster."""

    def __init__(self, accounting: bool = False):
        if os.geteuid() != 0:
            raise Unavailable("the test SLURM runs its daemons as root")
        self.bin = {name: _binary(name) for name in DAEMONS + (ACCOUNTING if accounting else ())}
        self.accounting = accounting
        self.root = Path(tempfile.mkdtemp(prefix="vtbench-slurm-"))
        self.root.chmod(0o755)
        self.processes: list[subprocess.Popen] = []
        self.host = socket.gethostname().split(".")[0]
        self.env = dict(os.environ, SLURM_CONF=str(self.root / "slurm.conf"))

    # ---- the daemons --------------------------------------------------------------------------------------

    def _daemon(self, *command: str) -> None:
        log = open(self.root / f"{Path(command[0]).name}.out", "w")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True))

    def _run(self, *command: str, timeout: float = 30) -> str:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=self.env)
        if result.returncode:
            raise Unavailable(f"{' '.join(command)} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result.stdout

    def _wait(self, what: str, ready, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                files = sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.out"))
                logs = "; ".join(f"{p.name}: {p.read_text()[-300:]}" for p in files)
                raise Unavailable(f"{what} did not start within {timeout:.0f} s ({logs})")
            time.sleep(0.2)

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def _munge(self) -> None:
        key, self.munge_socket = self.root / "munge.key", self.root / "munge.socket"
        self._run(self.bin["mungekey"], "--create", f"--keyfile={key}")
        key.chmod(0o600)
        self._daemon(self.bin["munged"], "--foreground", "--force", f"--socket={self.munge_socket}",
                     f"--key-file={key}", f"--pid-file={self.root / 'munged.pid'}",
                     f"--log-file={self.root / 'munged.log'}", f"--seed-file={self.root / 'munged.seed'}")
        self._wait("munged", self.munge_socket.exists)

    def _mariadb(self) -> int:
        data, port = self.root / "mysql", _free_port()
        self._run(self.bin["mariadb-install-db"], f"--datadir={data}", "--user=root", "--auth-root-authentication-"
                  "method=normal", "--skip-test-db", timeout=120)
        self._daemon(self.bin["mariadbd"], f"--datadir={data}", "--user=root", f"--port={port}",
                     "--bind-address=127.0.0.1", f"--socket={self.root / 'mysql.socket'}", "--skip-grant-tables",
                     f"--pid-file={self.root / 'mysql.pid'}", f"--log-error={self.root / 'mysql.log'}",
                     "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin")
        self._wait("mariadbd", lambda: self._listening(port), timeout=60)
        return port

    def _slurmdbd(self, storage_port: int) -> int:
        port = _free_port()
        conf = self.root / "slurmdbd.conf"
        conf.write_text("\n".join([
            f"AuthInfo=socket={self.munge_socket}", "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={port}",
            "SlurmUser=root", f"PidFile={self.root / 'slurmdbd.pid'}", f"LogFile={self.root / 'slurmdbd.log'}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1", f"StoragePort={storage_port}",
            "StorageUser=root", "StorageLoc=slurm_acct_db", ""]))
        conf.chmod(0o600)
        self._daemon(self.bin["slurmdbd"], "-D")  # reads slurmdbd.conf beside SLURM_CONF
        self._wait("slurmdbd", lambda: self._listening(port))
        return port

    def _slurm_conf(self, dbd_port: int | None) -> None:
        cpus = os.cpu_count() or 1
        lines = [
            "ClusterName=vtbench", f"SlurmctldHost={self.host}(127.0.0.1)", f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}", f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}", f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}", f"SlurmctldLogFile={self.root / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SchedulerType=sched/backfill",
            "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2", "MailProg=/bin/true",
            "SchedulerParameters=sched_interval=1", "MessageTimeout=30", "KillWait=2", "InactiveLimit=0",
            "MinJobAge=5",
        ]
        if dbd_port:
            lines += ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=127.0.0.1",
                      f"AccountingStoragePort={dbd_port}",
                      f"AccountingStoragePass={self.munge_socket}"]  # the munge socket of connections to slurmdbd
        else:
            lines += ["AccountingStorageType=accounting_storage/none"]
        lines += [f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                  "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO", ""]
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        (self.root / "slurm.conf").write_text("\n".join(lines))

    def _node_idle(self) -> bool:
        result = subprocess.run([self.bin["sinfo"], "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                                env=self.env)
        return result.returncode == 0 and result.stdout.strip() == "idle"

    def start(self) -> dict:
        began = time.monotonic()
        try:
            self._munge()
            dbd_port = None
            if self.accounting:
                dbd_port = self._slurmdbd(self._mariadb())
            self._slurm_conf(dbd_port)
            if self.accounting:
                self._run(self.bin["sacctmgr"], "-i", "add", "cluster", "vtbench")
            self._daemon(self.bin["slurmctld"], "-D", "-i")
            self._daemon(self.bin["slurmd"], "-D")
            self._wait("the node", self._node_idle, timeout=60)
        except BaseException:
            self.stop()
            raise
        self.start_s = time.monotonic() - began
        return self.env

    def stop(self) -> None:
        sessions = {p.pid for p in self.processes}  # each daemon leads its session; job steps stay in slurmd's
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        for stat in Path("/proc").glob("[0-9]*/stat"):  # what the daemons left behind (slurmstepd, job tasks)
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) in sessions:  # the session id
                try:
                    os.kill(int(stat.parent.name), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> dict:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
