"""The sidecar processes of the fleet benchmark: one directory, config, log and port pair per
instance; started in batches and waited for on their admin `/readyz`; stopped by process group.

Also what is read from `/proc` about them (RSS, CPU, their TCP connections to the database) and
from their logs (when a new credential snapshot was published, which errors they logged).
"""

import datetime
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PUBLISHED = "credentials: snapshot published"
# `[2026-12-03T09:12:01.123Z INFO  sidecar::…] …` (env_logger, UTC, milliseconds).
TIMESTAMP = re.compile(rb"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z ")
# Log lines that explain an instance the database refused or lost, counted per instance.
TROUBLE = {
    "too many clients": re.compile(rb"too many clients", re.I),
    "LISTEN failed, polling": re.compile(rb"polling every .* until it works"),
    "database error": re.compile(rb"^\[\S+ ERROR "),
}

ROUTE_YAML = """\
routes:
  - name: r
    path_prefix: /r
    upstream: "https://127.0.0.1:9/v1"
    provider: openai
    credential: fleet-key
"""


class Ports:
    """Distinct TCP ports on 127.0.0.1 below the kernel's ephemeral range (so a sidecar's own
    outgoing connections cannot take one before it binds), each bindable when handed out."""

    def __init__(self, first):
        self.next = first

    def take(self):
        while self.next < 32768:
            port = self.next
            self.next += 1
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
        raise RuntimeError("ran out of ports below 32768; lower --base-port")


def config_yaml(directory, port, admin_port, credentials_yaml, extra_yaml=""):
    """One instance's config (see README "Configuration reference")."""
    return f"""\
server:
  threads: 1
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  pid_file: {directory}/sidecar.pid
  upgrade_sock: {directory}/upgrade.sock
listeners:
  - address: "127.0.0.1:{port}"
admin:
  address: "127.0.0.1:{admin_port}"
log:
  level: info
credentials:
{credentials_yaml}{ROUTE_YAML}{extra_yaml}"""


class Instance:
    """One sidecar process, in its own directory and process group."""

    def __init__(self, name, workdir, ports, role):
        self.name = name
        self.role = role  # "direct", "serving" or "reader"
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = ports.take()
        self.admin_port = ports.take()
        self.config = os.path.join(self.dir, "sidecar.yaml")
        self.log_path = os.path.join(self.dir, "sidecar.log")
        self.proc = None
        self.ready_at = None
        self._log = None
        self._offset = 0

    def write_config(self, credentials_yaml, extra_yaml=""):
        with open(self.config, "w") as f:
            f.write(config_yaml(self.dir, self.port, self.admin_port, credentials_yaml,
                                extra_yaml))

    def start(self, binary, env):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, "-c", self.config], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.dir,
                                     start_new_session=True)
        self.started_at = time.monotonic()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def ready(self):
        """`/readyz` answers 200."""
        try:
            url = f"http://127.0.0.1:{self.admin_port}/readyz"
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def signal(self, signum):
        if self.alive():
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    # --- its log ---

    def mark_log(self):
        """From now on, `published_since_mark` only looks at lines written after this call."""
        try:
            self._offset = os.path.getsize(self.log_path)
        except OSError:
            self._offset = 0

    def published_since_mark(self, marker=PUBLISHED):
        """Wall time (seconds since the epoch) of the first line containing `marker` written
        since `mark_log`, or None. Lines read without a match are not read again."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return None
        end = data.rfind(b"\n") + 1  # complete lines only
        needle = marker.encode()
        for line in data[:end].splitlines():
            if needle in line:
                m = TIMESTAMP.match(line)
                if m:
                    stamp = datetime.datetime.fromisoformat(m.group(1).decode())
                    return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        self._offset += end
        return None

    def trouble(self):
        """Which of `TROUBLE`'s patterns its whole log contains, and the first such line."""
        found, first = [], None
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return found, first
        for kind, pattern in TROUBLE.items():
            for line in lines:
                if pattern.search(line):
                    found.append(kind)
                    first = first or line.decode(errors="replace")[:300]
                    break
        return found, first

    def last_log_line(self):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().splitlines()
            return lines[-1].decode(errors="replace")[:300] if lines else "(empty log)"
        except OSError:
            return "(no log)"

    # --- /proc ---

    def rss_kib(self):
        return self._status_kib("VmRSS:")

    def peak_rss_kib(self):
        """The most resident memory the process has had (VmHWM), KiB."""
        return self._status_kib("VmHWM:")

    def _status_kib(self, field):
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith(field):
                        return int(line.split()[1])
        except (OSError, AttributeError):
            pass
        return 0

    def cpu_ms(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS
        except (OSError, AttributeError, IndexError):
            return 0.0

    def socket_inodes(self):
        inodes = set()
        try:
            fd_dir = f"/proc/{self.proc.pid}/fd"
            for fd in os.listdir(fd_dir):
                try:
                    target = os.readlink(os.path.join(fd_dir, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except (OSError, AttributeError):
            pass
        return inodes


def established_to(port):
    """inode → local port of every ESTABLISHED TCP connection to `port` (IPv4 and IPv6)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                    if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
                        out[int(inode)] = int(local.rsplit(":", 1)[1], 16)
        except OSError:
            pass
    return out


def database_ports(instances, db_port):
    """name → the local ports of the instance's connections to the database."""
    connections = established_to(db_port)
    return {i.name: sorted(connections[n] for n in i.socket_inodes() if n in connections)
            for i in instances if i.alive()}


def start_batched(instances, binary, env, batch, timeout_s, log=print, counted=0, total=None):
    """Starts `instances` `batch` at a time; after each batch waits (at most `timeout_s`) until
    each answers `/readyz` 200 or exits. Instances not ready by then keep running and are left
    out of the wait; returns the ones that were never ready. `counted` and `total` only shape
    the progress lines (when one fleet is started in several calls)."""
    total = total or counted + len(instances)
    not_ready = []
    for first in range(0, len(instances), batch):
        group = instances[first:first + batch]
        for instance in group:
            instance.start(binary, env)
        deadline = time.monotonic() + timeout_s
        waiting = list(group)
        while waiting and time.monotonic() < deadline:
            still = []
            for instance in waiting:
                if not instance.alive():
                    continue  # exited: reported below
                if instance.ready():
                    instance.ready_at = time.monotonic()
                else:
                    still.append(instance)
            waiting = still
            if waiting:
                time.sleep(0.1)
        late = [i for i in group if i.ready_at is None]
        not_ready += late
        up = len(group) - len(late)
        log(f"    started {counted + first + len(group)}/{total} "
            f"({up} of this batch ready" + (f", {len(late)} not ready" if late else "") + ")")
    return not_ready


def stop_all(instances, timeout_s=15.0):
    """SIGINT (the sidecar's immediate stop) to every process group, then SIGKILL to whatever
    is still there after `timeout_s`."""
    for instance in instances:
        instance.signal(signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(i.alive() for i in instances):
        time.sleep(0.05)
    for instance in instances:
        if instance.alive():
            instance.signal(signal.SIGKILL)
    for instance in instances:
        if instance.proc is not None:
            try:
                instance.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        instance.close_log()


def wait_published(instances, since_wall, limit_s):
    """Polls the logs of `instances` (marked before the change) until each has published a
    snapshot or `limit_s` passed. Returns name → seconds from `since_wall` (None: never)."""
    found = {}
    deadline = time.monotonic() + limit_s
    pending = list(instances)
    while pending and time.monotonic() < deadline:
        still = []
        for instance in pending:
            stamp = instance.published_since_mark()
            if stamp is None:
                still.append(instance)
            else:
                found[instance.name] = stamp - since_wall
        pending = still
        if pending:
            time.sleep(0.05)
    for instance in pending:
        found[instance.name] = None
    return found
