#!/usr/bin/env python3
"""The tiernet VM suite: real 802.1Q trunks between QEMU/KVM virtual machines.

One VM per gateway of the topology (NICs named as the topology says: eth1 trunk, eth0
uplink, eth3 untagged port, ...) and one "hosts" VM that plays the switch and every host:
it bridges the gateways' trunks (a VLAN-transparent Linux bridge, so transit VLANs pass
between gateways), puts one network namespace per segment on a tagged sub-interface of that
switch (or on the untagged port's NIC), and an "internet" namespace on the uplink NIC.

VMs are linked point to point by QEMU's UDP socket netdevs on 127.0.0.1 only; they have no
other network (-nic none). The harness drives each VM through a command channel on its second
serial port (a UNIX socket here), and writes one JSON report:

  - the gateways' state after the agent's first apply (ip -j -d link/addr/route, nft -j);
  - the probe truth table across the tagged trunk, before and after drift, each cell with
    the answer of `tiernet reach` (computed here, before boot) and the observed result;
  - the VLAN drift cases, whether each was reverted by the running agent and how fast.

Standard library only. Exit status 0 when the run completed (the report says what it saw:
the Rust test tests/vm.rs asserts on it), 1 when the run itself failed (report["error"]).
"""

import argparse
import base64
import ipaddress
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
T0 = time.monotonic()


def log(msg):
    print(f"[vm {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class HarnessError(Exception):
    pass


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


# --- what to probe ---------------------------------------------------------------------

def read_conf(path):
    conf = {"gateways": [], "sources": [], "destinations": [], "extra": [], "drift": [], "drift-gateway": None}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            key, _, value = line.partition(":")
            words = value.split()
            if key in ("gateways", "sources", "destinations"):
                conf[key] += words
            elif key in ("extra", "drift"):
                conf[key].append(words)
            elif key == "drift-gateway":
                conf[key] = value.strip()
            else:
                raise HarnessError(f"{path}:{n}: unknown key {key!r}")
    return conf


def reach(tiernet, topology, today, src, dst, port=None):
    cmd = [tiernet, "reach", topology, "--from", src, "--to", dst, "--today", today, "--output", "json"]
    if port:
        cmd += ["--port", port]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise HarnessError(f"tiernet reach --from {src} --to {dst} {port or ''}: {r.stderr.strip()}")
    try:
        return json.loads(r.stdout)
    except json.JSONDecodeError as e:
        raise HarnessError(f"tiernet reach --from {src} --to {dst}: not JSON ({e}): {r.stdout[:300]}")


def expected_cells(tiernet, topology, today, conf):
    queries = []
    for s in conf["sources"]:
        for d in conf["destinations"]:
            if s != d:
                queries += [(s, d, None), (s, d, "icmp")]
    queries += [tuple(x) for x in conf["extra"]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda q: (q, reach(tiernet, topology, today, *q)), queries))
    cells, seen = [], set()
    for (s, d, _), entries in answers:
        for e in entries:
            proto, _, port = e["traffic"].partition("/")
            key = (s, d, e["traffic"])
            if e["src"] == e["dst"] or key in seen:
                continue
            seen.add(key)
            cells.append({
                "id": len(cells), "src": s, "dst": d, "src_ip": e["src"], "dst_ip": e["dst"],
                "traffic": e["traffic"], "proto": proto, "port": port or "-",
                "expected": bool(e["allowed"]), "reason": e.get("reason", ""),
                "gateways": [h["gateway"] for h in e.get("hops", [])],
            })
    return cells


# --- the virtual lab's layout, from the compiled state ----------------------------------

def render(tiernet, topology, today, gateway):
    out = sh([tiernet, "render", topology, "--gateway", gateway, "--format", "json", "--today", today])
    return json.loads(out)


class Layout:
    """VMs, their NICs, the point-to-point links, and the hosts VM's configuration."""

    def __init__(self, states, cells):
        self.vms = {}  # name -> list of (nic name, mac)
        self.links = []  # ((vm, nic), (vm, nic))
        self.segments = {}  # ns name -> dict(net, router, attach)
        hosts_nics = []
        trunks = []
        for g, (gw, st) in enumerate(sorted(states.items())):
            nics = []
            for link in st["links"]:
                kind = link["kind"]
                dev = kind["parent"] if kind["type"] == "vlan" else link["name"]
                if dev not in nics:
                    nics.append(dev)
            self.vms[gw] = [(n, f"52:54:00:7e:{g:02x}:{i:02x}") for i, n in enumerate(nics)]
            for n in nics:
                is_trunk = any(l["kind"]["type"] == "vlan" and l["kind"]["parent"] == n for l in st["links"])
                peer = f"t{len(trunks)}" if is_trunk else f"p{len(hosts_nics) - len(trunks)}"
                if is_trunk:
                    trunks.append(peer)
                hosts_nics.append(peer)
                self.links.append(((gw, n), ("hosts", peer)))
                for link in st["links"]:
                    kind, zone = link["kind"], link["zone"]
                    on_this = (kind["type"] == "vlan" and kind["parent"] == n) or link["name"] == n
                    if not on_this or zone["type"] == "transit":
                        continue
                    iface = ipaddress.ip_interface(link["addresses"][0])
                    attach = ("vlan", kind["id"]) if kind["type"] == "vlan" else ("nic", peer)
                    if zone["type"] == "segment":
                        self.segments[zone["segment"]] = {"net": iface.network, "router": str(iface.ip), "attach": attach}
                    elif zone["type"] == "uplink":
                        via = next(r["via"] for r in st["routes"] if ipaddress.ip_network(r["destination"]).prefixlen == 0)
                        self.segments["internet"] = {"net": iface.network, "router": str(iface.ip), "attach": attach,
                                                     "own": f"{via}/{iface.network.prefixlen}"}
        self.vms["hosts"] = [(n, f"52:54:00:7e:ff:{i:02x}") for i, n in enumerate(hosts_nics)]
        self.trunks = trunks
        for c in cells:
            c["ns"] = self.ns_of(c["src_ip"])
            c["dst_ns"] = self.ns_of(c["dst_ip"])

    def ns_of(self, ip):
        a = ipaddress.ip_address(ip)
        for name, seg in self.segments.items():
            if name != "internet" and a in seg["net"]:
                return name
        if "internet" not in self.segments:
            raise HarnessError(f"{ip} is in no segment and no gateway has an uplink")
        return "internet"

    def hosts_conf(self, cells):
        lines = [f"switch br-trunk {' '.join(self.trunks)}"]
        addrs, listens = {}, set()
        for c in cells:
            addrs.setdefault(c["ns"], set()).add(c["src_ip"])
            addrs.setdefault(c["dst_ns"], set()).add(c["dst_ip"])
            if c["proto"] in ("tcp", "udp"):
                listens.add((c["dst_ns"], c["proto"], int(c["port"])))
        for name, seg in sorted(self.segments.items()):
            if name not in addrs:
                continue
            kind, what = seg["attach"]
            lines.append(f"ns {name} vlan br-trunk {what}" if kind == "vlan" else f"ns {name} nic {what}")
            if "own" in seg:
                lines.append(f"addr {name} {seg['own']}")
            for ip in sorted(addrs[name], key=ipaddress.ip_address):
                plen = seg["net"].prefixlen if ipaddress.ip_address(ip) in seg["net"] else 32
                lines.append(f"addr {name} {ip}/{plen}")
            lines.append(f"route {name} {seg['router']}")
        lines += [f"listen {ns} {proto} {port}" for ns, proto, port in sorted(listens)]
        return "\n".join(lines) + "\n"


# --- QEMU ---------------------------------------------------------------------------------

def choose_accel(requested, qemu, kernel, workdir):
    """KVM when it can run a stock kernel, else software emulation (TCG), and why."""
    if requested:
        return requested, "requested"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not accessible"
    if os.path.exists("/sys/module/kvm_pvm"):
        return "tcg", "/dev/kvm is provided by kvm_pvm (PVM), which cannot run a stock Debian kernel"
    console = os.path.join(workdir, "kvm-probe.console")
    p = subprocess.Popen([qemu, "-accel", "kvm", "-cpu", "host", "-m", "128", "-nodefaults", "-no-user-config",
                          "-display", "none", "-nic", "none", "-no-reboot", "-kernel", kernel,
                          "-append", "console=ttyS0 panic=-1", "-serial", f"file:{console}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and p.poll() is None:
            with open(console, errors="replace") if os.path.exists(console) else open(os.devnull) as f:
                if "Linux version" in f.read():
                    return "kvm", "KVM boots the kernel"
            time.sleep(0.2)
    finally:
        p.kill()
        p.wait()
    return "tcg", "KVM did not get a kernel to print its banner within 20 s"


def free_udp_ports(n):
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class VM:
    def __init__(self, name, workdir, qemu, accel, kernel, initrd, nics, netdevs, mem):
        self.name = name
        self.sock = os.path.join(workdir, f"{name}.ctl")
        self.console = os.path.join(workdir, f"{name}.console")
        cmdline = f"console=ttyS0 loglevel=4 panic=-1 no_timer_check rdinit=/init tiernet.role={name} tiernet.nics=" + ",".join(
            f"{mac}={nic}" for nic, mac in nics)
        self.argv = [
            qemu, "-name", name, "-machine", "pc", "-accel", accel, "-cpu", "host" if accel == "kvm" else "max",
            "-smp", "1", "-m", str(mem), "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
            "-no-reboot", "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-serial", f"file:{self.console}",
            "-chardev", f"socket,id=ctl,path={self.sock},server=on,wait=off", "-serial", "chardev:ctl",
        ]
        for i, ((nic, mac), (local, remote)) in enumerate(zip(nics, netdevs)):
            self.argv += ["-netdev", f"socket,id=n{i},udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}",
                          "-device", f"virtio-net-pci,netdev=n{i},mac={mac}"]
        self.proc = None
        self.conn = None
        self.buf = b""
        self.seq = 0

    def start(self):
        self.stderr = open(self.console + ".qemu", "w")
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=subprocess.STDOUT)

    def _connect(self, deadline):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name}: qemu exited ({self.proc.returncode}): {self.tail(self.console + '.qemu')}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.sock)
                self.conn = s
                return
            except OSError:
                s.close()
                time.sleep(0.05)
        raise HarnessError(f"{self.name}: no command channel")

    def _line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.conn.settimeout(min(left, 1.0))
            try:
                data = self.conn.recv(65536)
            except socket.timeout:
                if self.proc.poll() is not None:
                    raise HarnessError(f"{self.name}: VM stopped: {self.tail(self.console)}")
                continue
            if not data:
                raise HarnessError(f"{self.name}: command channel closed: {self.tail(self.console)}")
            self.buf += data
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode(errors="replace")

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        if not self.conn:
            self._connect(deadline)
        try:
            while True:
                self.conn.sendall(b"HELLO\n")
                try:
                    while not self._line(min(deadline, time.monotonic() + 3)).startswith("@@READY"):
                        pass
                    return
                except TimeoutError:
                    if time.monotonic() >= deadline:
                        raise
        except TimeoutError:
            raise HarnessError(f"{self.name}: not booted after {timeout:.0f}s: {self.tail(self.console)}")

    def run(self, script, timeout, check=True):
        self.seq += 1
        sid = str(self.seq)
        payload = base64.b64encode(script.encode()).decode()
        self.conn.sendall(f"RUN {sid} {payload}\n".encode())
        deadline = time.monotonic() + timeout
        out, inside = [], False
        try:
            while True:
                line = self._line(deadline)
                if line == f"@@BEGIN {sid}":
                    inside = True
                elif line.startswith(f"@@END {sid} "):
                    rc = int(line.split()[2])
                    break
                elif inside:
                    out.append(line)
        except TimeoutError:
            raise HarnessError(f"{self.name}: `{script.strip()[:120]}` did not finish in {timeout:.0f}s")
        text = "\n".join(out).rstrip("\n")
        if check and rc != 0:
            raise HarnessError(f"{self.name}: `{script.strip()[:120]}` exited {rc}: {text[-3000:]}")
        return rc, text

    def cpu_s(self):
        """CPU time the VM's QEMU process has used (user + system), in seconds."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError, AttributeError):
            return 0.0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                if self.conn:
                    self.conn.sendall(f"RUN 0 {base64.b64encode(b'poweroff -f').decode()}\n".encode())
                self.proc.wait(timeout=5)
            except Exception:
                pass
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.conn:
            self.conn.close()

    @staticmethod
    def tail(path, n=40):
        try:
            with open(path, errors="replace") as f:
                return "\n" + "".join(f.readlines()[-n:])
        except OSError:
            return "(no output)"


# --- the run ------------------------------------------------------------------------------

def build_initrd(base_dir, workdir, agent, topology, files):
    stage = os.path.join(workdir, "overlay")
    os.makedirs(os.path.join(stage, "vm"))
    os.makedirs(os.path.join(stage, "usr/bin"))
    guest = os.path.join(HERE, "guest")
    for f in os.listdir(guest):
        shutil.copy(os.path.join(guest, f), os.path.join(stage, "vm", f))
    shutil.move(os.path.join(stage, "vm", "init"), os.path.join(stage, "init"))
    os.chmod(os.path.join(stage, "init"), 0o755)
    shutil.copy(topology, os.path.join(stage, "vm", "topology.yaml"))
    for name, text in files.items():
        with open(os.path.join(stage, "vm", name), "w") as f:
            f.write(text)
    # Debug builds carry ~150 MB of debug info: the VMs get a stripped copy.
    dest = os.path.join(stage, "usr/bin/tiernet-agent")
    if shutil.which("strip"):
        sh(["strip", "-o", dest, agent])
    else:
        shutil.copy(agent, dest)
    for line in sh(["ldd", agent]).splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 and parts[2].startswith("/") else (
            parts[0] if parts and parts[0].startswith("/") else None)
        if lib:
            dest = os.path.join(stage, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(os.path.realpath(lib), dest)
    overlay = os.path.join(workdir, "overlay.cpio")
    names = subprocess.run(["find", ".", "-mindepth", "1"], cwd=stage, capture_output=True, text=True, check=True).stdout
    with open(overlay, "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=stage, input=names.encode(), stdout=out, check=True)
    initrd = os.path.join(workdir, "initrd")
    with open(initrd, "wb") as out:
        for part in (os.path.join(base_dir, "base.cpio"), overlay):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    return initrd


def probe(hosts, cells, slow):
    # Blocked cells cost the connect timeout; allowed ones return at once but, under TCG, the
    # replies can take seconds: so a short connect timeout, a long one for the data, and many
    # cells in parallel (16 per namespace, the namespaces side by side).
    connect_s, data_s, parallel = (2, 5, 16) if slow == 1 else (3, 15, 16)
    t = time.monotonic()
    seen = run_cells(hosts, cells, connect_s, data_s, parallel, slow)
    # A connection that did not happen where one was expected is tried once more, a few at a
    # time: under load (TCG, 100 probes at once) a handshake can miss the connect timeout. A
    # connection that did happen is never retried: no load makes a blocked cell pass.
    again = [c for c in cells if c["expected"] and not seen[c["id"]]]
    if again:
        second = run_cells(hosts, again, connect_s * 2, data_s, 4, slow)
    table = []
    for c in cells:
        cell = dict(c, observed=seen[c["id"]])
        if c in again:
            cell["observed"], cell["retried"] = second[c["id"]], True
        table.append(cell)
    return table, time.monotonic() - t


def run_cells(hosts, cells, connect_s, data_s, parallel, slow):
    text = "".join(f"{c['id']} {c['ns']} {c['proto']} {c['src_ip']} {c['dst_ip']} {c['port']}\n" for c in cells)
    cpu = hosts.cpu_s()
    script = (f"cat >/tmp/cells.txt <<'EOF'\n{text}EOF\ns=$(cut -d' ' -f1 /proc/uptime)\n"
              f"sh /vm/probe.sh {connect_s} {data_s} {parallel} /tmp/cells.txt\n"
              "echo \"probe_s $s $(cut -d' ' -f1 /proc/uptime)\"\n")
    t = time.monotonic()
    _, out = hosts.run(script, timeout=300 * slow)
    for line in out.splitlines():
        if line.startswith("probe_s "):
            a, b = map(float, line.split()[1:])
            log(f"{len(cells)} cells: {b - a:.1f}s inside the VM, {time.monotonic() - t:.1f}s here, "
                f"{hosts.cpu_s() - cpu:.1f} CPU s")
    seen = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            seen[int(parts[0])] = parts[1] == "1"
    missing = [c["id"] for c in cells if c["id"] not in seen]
    if missing:
        raise HarnessError(f"probe results missing for cells {missing[:10]}: {out[-2000:]}")
    return seen


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiernet", default=os.path.join(ROOT, "target/debug/tiernet"))
    ap.add_argument("--agent", default=os.path.join(ROOT, "target/debug/tiernet-agent"))
    ap.add_argument("--topology", default=os.path.join(ROOT, "topologies/clinical-research.yaml"))
    ap.add_argument("--agent-topology", help="give the agents this topology instead (to show the suite failing)")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="an extra argument for tiernet-agent, e.g. --agent-arg=--mode=observe")
    ap.add_argument("--conf", default=os.path.join(HERE, "reference.conf"))
    ap.add_argument("--cache", default=os.path.join(ROOT, "target/vm-cache"))
    ap.add_argument("--report", default=os.path.join(ROOT, "target/vm-report.json"))
    ap.add_argument("--today", default=time.strftime("%Y-%m-%d"))
    ap.add_argument("--accel", default=os.environ.get("TIERNET_VM_ACCEL"), choices=["kvm", "tcg"])
    ap.add_argument("--keep", action="store_true", help="keep the work directory (consoles, initrd)")
    ap.add_argument("--cells-only", metavar="FILE",
                    help="only write the probe cells with their expectations (vagrant/e2e.sh) and exit")
    args = ap.parse_args()
    if args.cells_only:
        conf = read_conf(args.conf)
        cells = expected_cells(args.tiernet, args.topology, args.today, conf)
        Layout({gw: render(args.tiernet, args.topology, args.today, gw) for gw in conf["gateways"]}, cells)
        with open(args.cells_only, "w") as f:
            for c in cells:
                f.write(f"{c['id']} {c['ns']} {c['proto']} {c['src_ip']} {c['dst_ip']} {c['port']} "
                        f"{int(c['expected'])} {c['src']} {c['dst']} {c['traffic']}\n")
        return 0

    report = {"version": 1, "today": args.today, "topology": os.path.relpath(args.topology, ROOT),
              "timings": {}, "gateways": {}, "probes": {}, "drift": [], "error": None}
    timings = report["timings"]
    vms = {}
    workdir = tempfile.mkdtemp(prefix="tiernet-vm-")
    report["workdir"] = workdir
    try:
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            raise HarnessError("qemu-system-x86_64 is not installed: run scripts/install-deps.sh (package qemu-system-x86)")
        for b in (args.tiernet, args.agent):
            if not os.access(b, os.X_OK):
                raise HarnessError(f"{b} is not built (cargo build --bins)")

        t = time.monotonic()
        r = subprocess.run(["bash", os.path.join(HERE, "build-image.sh"), args.cache], capture_output=True, text=True)
        if r.returncode != 0:
            raise HarnessError(f"building the VM image failed: {r.stderr.strip()[-3000:]}")
        base = r.stdout.strip().splitlines()[-1]
        timings["image_s"] = round(time.monotonic() - t, 2)
        with open(os.path.join(base, "kernel-release")) as f:
            report["kernel"] = f.read().strip()
        kernel = os.path.join(base, "vmlinux" if os.path.exists(os.path.join(base, "vmlinux")) else "vmlinuz")
        accel, why = choose_accel(args.accel, qemu, kernel, workdir)
        slow = 1 if accel == "kvm" else 4
        report["accel"], report["accel_reason"] = accel, why
        log(f"image {base} ({timings['image_s']}s), accel {accel}: {why}")

        t = time.monotonic()
        conf = read_conf(args.conf)
        cells = expected_cells(args.tiernet, args.topology, args.today, conf)
        states = {}
        for gw in conf["gateways"]:
            states[gw] = render(args.tiernet, args.topology, args.today, gw)
        layout = Layout(states, cells)
        report["rendered"] = states
        timings["expectations_s"] = round(time.monotonic() - t, 2)
        log(f"{len(cells)} probe cells from tiernet reach, gateways {sorted(states)} ({timings['expectations_s']}s)")

        dgw = conf["drift-gateway"]
        links_conf = ""
        for link in states[dgw]["links"]:
            k = link["kind"]
            parent, vid = (k["parent"], k["id"]) if k["type"] == "vlan" else ("-", "-")
            links_conf += f"{link['name']} {parent} {vid} {' '.join(link['addresses'])}\n"
        files = {"hosts.conf": layout.hosts_conf(cells), "links.conf": links_conf}
        initrd = build_initrd(base, workdir, args.agent, args.agent_topology or args.topology, files)

        ports = free_udp_ports(2 * len(layout.links))
        netdevs = {name: [None] * len(nics) for name, nics in layout.vms.items()}
        for i, ((a, an), (b, bn)) in enumerate(layout.links):
            pa, pb = ports[2 * i], ports[2 * i + 1]
            netdevs[a][[n for n, _ in layout.vms[a]].index(an)] = (pa, pb)
            netdevs[b][[n for n, _ in layout.vms[b]].index(bn)] = (pb, pa)
        t = time.monotonic()
        for name, nics in layout.vms.items():
            vms[name] = VM(name, workdir, qemu, accel, kernel, initrd, nics, netdevs[name],
                           768 if name == "hosts" else 384)
            vms[name].start()
        for vm in vms.values():
            vm._connect(time.monotonic() + 10)
        for vm in vms.values():
            vm.wait_ready(60 * slow)
        timings["boot_s"] = round(time.monotonic() - t, 2)
        log(f"booted {sorted(vms)} in {timings['boot_s']}s")

        # Agents (standalone), then the hosts.
        t = time.monotonic()
        for gw in states:
            extra = " ".join(shlex.quote(a) for a in args.agent_arg)
            _, out = vms[gw].run(f"sh /vm/agent-start.sh {gw} {args.today} {30 * slow} {extra}\n", timeout=40 * slow)
            report["gateways"][gw] = {"agent_start": out}
        timings["agents_ready_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        vms["hosts"].run("sh /vm/hosts-setup.sh\n", timeout=60 * slow)
        timings["hosts_setup_s"] = round(time.monotonic() - t, 2)
        log(f"agents ready in {timings['agents_ready_s']}s, hosts set up in {timings['hosts_setup_s']}s")

        for gw in states:
            _, out = vms[gw].run("sh /vm/gw-state.sh\n", timeout=30 * slow)
            report["gateways"][gw]["state"] = json.loads(out)

        report["probes"]["before_drift"], dt = probe(vms["hosts"], cells, slow)
        timings["probe_before_s"] = round(dt, 2)
        bad = sum(c["observed"] != c["expected"] for c in report["probes"]["before_drift"])
        log(f"probe table: {len(cells)} cells, {bad} differ from tiernet reach ({dt:.1f}s)")

        for case in conf["drift"]:
            _, out = vms[dgw].run(f"TIMEOUT_S={10 * slow} sh /vm/drift.sh {' '.join(case)}\n", timeout=30 * slow, check=False)
            try:
                result = json.loads(out.strip().splitlines()[-1])
            except (json.JSONDecodeError, IndexError):
                result = {"case": case[0], "error": f"no JSON from drift.sh: {out[-1500:]}"}
            result["gateway"] = dgw
            report["drift"].append(result)
            log(f"drift {' '.join(case)}: restored={result.get('restored')} latency={result.get('latency_ms')} ms")
        _, out = vms[dgw].run("cat /run/tiernet/drift.jsonl 2>/dev/null; true\n", timeout=10 * slow)
        report["agent_drift_records"] = [json.loads(l) for l in out.splitlines() if l.strip().startswith("{")]
        _, out = vms[dgw].run("sh /vm/gw-state.sh\n", timeout=30 * slow)
        report["gateways"][dgw]["state_after_drift"] = json.loads(out)

        report["probes"]["after_drift"], dt = probe(vms["hosts"], cells, slow)
        timings["probe_after_s"] = round(dt, 2)
        bad = sum(c["observed"] != c["expected"] for c in report["probes"]["after_drift"])
        log(f"probe table after drift: {bad} cells differ ({dt:.1f}s)")
        for gw in states:
            _, out = vms[gw].run("tail -n 30 /run/agent.log; kill -0 $(cat /run/agent.pid) && echo agent-alive\n",
                                 timeout=10 * slow, check=False)
            report["gateways"][gw]["agent_alive"] = out.rstrip().endswith("agent-alive")
            report["gateways"][gw]["agent_log_tail"] = out.splitlines()[:-1]
    except HarnessError as e:
        report["error"] = str(e)
        log(f"error: {e}")
        for name, vm in vms.items():
            if vm.conn and name != "hosts":
                try:
                    _, out = vm.run("tail -n 40 /run/agent.log 2>/dev/null; true\n", timeout=10, check=False)
                    report.setdefault("agent_logs", {})[name] = out
                except Exception:
                    pass
        report["consoles"] = {name: VM.tail(vm.console, 30) for name, vm in vms.items()}
    finally:
        for vm in vms.values():
            vm.stop()
        report["timings"]["total_s"] = round(time.monotonic() - T0, 2)
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
        log(f"report: {args.report} (total {report['timings']['total_s']}s)")
        if args.keep or report["error"]:
            log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if report["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
