#!/usr/bin/env python3
"""What the exec shim (systemd-distribute-exec, systemd < 257) costs per start,
outside systemd: spawn -> exit of /bin/true directly, and through the shim
with one listening socket queued on fd 0 as the activator sends it. The C
versions of the shim (shim-cost.c) split the cost into "one more execve" and
"the Rust binary's start-up and dynamic loading". Run from the checkout root
after `cargo build --release`:

    gcc -O2 -o target/shim-cost-dyn bench/experiments/shim-cost.c
    gcc -O2 -static -o target/shim-cost-static bench/experiments/shim-cost.c
    python3 bench/experiments/shim-cost.py
"""
import os, socket, time, subprocess, statistics
shims = {"direct": None, "rust shim": "target/release/systemd-distribute-exec", "C dynamic": "target/shim-cost-dyn", "C static": "target/shim-cost-static"}
srv = "/bin/true"; N = 300
def run(sh):
    lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(a, [b"x"], [lst.fileno()])
    argv = [os.path.abspath(sh), srv] if sh else [srv]
    t = time.perf_counter()
    p = subprocess.Popen(argv, stdin=b.fileno(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True); p.wait()
    d = time.perf_counter() - t
    for s in (a, b, lst): s.close()
    assert p.returncode == 0, (sh, p.returncode)
    return d
res = {k: [] for k in shims}
keys = list(shims)
for i in range(N):
    for k in (keys if i % 2 == 0 else keys[::-1]):
        res[k].append(run(shims[k]))
base = statistics.median(res["direct"])
for k in keys:
    v = sorted(res[k]); print("%-10s p50 %5.0f µs  p90 %5.0f µs  extra p50 %+5.0f µs" % (k, v[len(v)//2]*1e6, v[int(len(v)*.9)]*1e6, (statistics.median(v)-base)*1e6))
