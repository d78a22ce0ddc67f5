"""The gateway hop, side by side (scripts/bench-hop): what voxgate costs in front of a remote
speech provider, next to nginx doing the least a gateway can do.

An nginx answers POST /v1/audio/speech with a fixed 4-second clip (PCM on one port, MP3 on
another): the upstream stand-in. In front of it, on equal terms:
  - nginx as the reference proxy: a bearer check, then proxy_pass (keep-alive upstream);
  - voxgate with its production defaults (auth, per-address and per-account limits, quotas,
    audit), one `kind = "openai"` engine on the stand-in, limits raised so nothing is
    refused, the response cache off;
  - the floor of voxgate's own stack (--floor PATH: the `floor_relay` example, axum and
    reqwest with a constant bearer check and nothing else), so that what voxgate's security
    stack costs and what the HTTP stack under it costs are told apart;
  - optionally LiteLLM's proxy (LITELLM=/path/to/litellm: a throw-away virtualenv's binary).
wrk drives each at c=16 and c=64, rounds interleaved so drift hits everyone alike. Printed
per path and concurrency: req/s, p50 and p99 latency, the gateway's CPU per request (its
processes' utime+stime from /proc over the run, divided by the requests), its peak RSS,
and voxgate's ratios to nginx.

Paths: `pcm` (the client asks for PCM, the upstream sends PCM: a pure relay), `mp3` (the
client asks for MP3 and the upstream can send MP3: relayed by both), and `mp3-encoded` (the
same request to a voxgate engine with `relay = false`, which asks for PCM and encodes, as
every request did before the relay; nginx still relays the upstream's MP3).

Usage: hop.py VOXGATE_BIN WORK_DIR [--quick | --soak MINUTES] [--path pcm|mp3|mp3-encoded]
             [--floor FLOOR_RELAY_BIN]
  --path NAME: that path only.
  --floor BIN: with the floor relay too.
  --soak MINUTES: voxgate alone relaying PCM at c=64 for that long, RSS printed each minute
  (is memory flat under 64 streams?).
"""
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

BIN, WORK = sys.argv[1], sys.argv[2]
QUICK = "--quick" in sys.argv[3:]
SOAK = int(sys.argv[sys.argv.index("--soak") + 1]) if "--soak" in sys.argv else 0
ONLY = (sys.argv + [""])[sys.argv.index("--path") + 1] if "--path" in sys.argv else None
ROUNDS = 1 if QUICK else 3
SECS = 5 if QUICK else 10
CONCURRENCY = [16, 64]
TOKEN = "hop-bench-token"
LITELLM = os.environ.get("LITELLM", "")
FLOOR = (sys.argv + [""])[sys.argv.index("--floor") + 1] if "--floor" in sys.argv else None
CLIP_SECS = 4
# Streams an engine serves at once (`limits.engine_in_flight`): voxgate's default, and as many
# as the clients here (so nothing waits in the engine's queue).
DEFAULT_IN_FLIGHT = 8
ALL_IN_FLIGHT = 128
RATE = 24_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, headers=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def clip_pcm():
    """Four seconds of a gliding tone, 24 kHz 16-bit mono (what OpenAI's `pcm` is)."""
    out = bytearray()
    for n in range(RATE * CLIP_SECS):
        t = n / RATE
        sample = int(8000 * math.sin(2 * math.pi * (220 + 60 * t) * t))
        out += sample.to_bytes(2, "little", signed=True)
    return bytes(out)


# ------------------------------------------------------------------ processes

PROCS = []


def spawn(args, log, **kw):
    proc = subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, **kw)
    PROCS.append(proc)
    return proc


def stop_all():
    for proc in PROCS:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in PROCS:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def tree(pid):
    """pid and every descendant."""
    pids, frontier = [pid], [pid]
    while frontier:
        children = []
        for p in frontier:
            try:
                with open(f"/proc/{p}/task/{p}/children") as f:
                    children += [int(c) for c in f.read().split()]
            except OSError:
                pass
        pids += children
        frontier = children
    return pids


def cpu_ticks(pid):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_kib(pid, field):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def reset_peak(pid):
    """Starts a new peak-RSS measurement (VmHWM) for pid's tree: writing 5 to clear_refs."""
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass


# ------------------------------------------------------------------ nginx

def nginx_conf(name, server_block):
    base = os.path.join(WORK, name)
    os.makedirs(os.path.join(base, "tmp"), exist_ok=True)
    path = os.path.join(base, "nginx.conf")
    with open(path, "w") as f:
        f.write(f"""
daemon off;
master_process on;
user root;
worker_processes 2;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {base}/tmp/body;
    proxy_temp_path {base}/tmp/proxy;
    fastcgi_temp_path {base}/tmp/fastcgi;
    uwsgi_temp_path {base}/tmp/uwsgi;
    scgi_temp_path {base}/tmp/scgi;
    keepalive_requests 1000000;
{server_block}
}}
""")
    return path


def start_nginx(name, server_block):
    conf = nginx_conf(name, server_block)
    return spawn(["nginx", "-c", conf, "-e", os.path.join(WORK, name, "error.log")],
                 os.path.join(WORK, f"{name}.log"))


def upstream_block(port, root, clip, content_type):
    # The static module answers POST with 405; error_page serves the file instead.
    return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        default_type {content_type};
        location = /v1/audio/speech {{ rewrite ^ /{clip} last; }}
        location = /{clip} {{ error_page 405 =200 $uri; }}
    }}"""


def proxy_block(port, upstreams):
    ups = "\n".join(f"""
    upstream {name} {{ server 127.0.0.1:{up}; keepalive 128; }}""" for name, up in upstreams.items())
    return ups + f"""
    map $http_authorization $hop_authorized {{ default 0; "Bearer {TOKEN}" 1; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pcm/v1/audio/speech {{
            if ($hop_authorized = 0) {{ return 401; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://up_pcm/v1/audio/speech;
        }}
        location = /mp3/v1/audio/speech {{
            if ($hop_authorized = 0) {{ return 401; }}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://up_mp3/v1/audio/speech;
        }}
    }}"""


# ------------------------------------------------------------------ voxgate

# Every tier alike (a lower tier may not allow more than a higher one): rate limits and
# quotas on, high enough that nothing is refused.
TIER = """
[tiers.{tier}]
rate_limits = [{{ per = "account", period = "minute", limit = 100000000 }}, {{ per = "key", period = "second", limit = 10000000 }}]
max_concurrent_per_key = 1000
max_concurrent_per_account = 1000
quotas = [{{ per = "account", metric = "characters", period = "day", limit = 1000000000000 }}, {{ per = "account", metric = "audio_seconds", period = "day", limit = 1000000000000 }}, {{ per = "account", metric = "transcribed_seconds", period = "day", limit = 7200 }}]
"""

VOXGATE_CONFIG = """
data_dir = "{data}"
[server]
bind = "127.0.0.1:{port}"
[admin]
enabled = false
[cache]
enabled = false
[limits]
per_ip = [{{ period = "second", limit = 10000000 }}]
per_ip_unauthenticated = [{{ period = "second", limit = 10000000 }}]
# A remote engine: as many streams at once as clients (nothing is refused by the engine's
# queue in this measurement), unless the run says otherwise.
engine_in_flight = {in_flight}
engine_queue_depth = 256
[engines.upstream]
kind = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
model = "tts-1"
http = {{ allow_local = true, allow_http = true }}
[engines.upstream.voices]
alloy = "alloy"
[engines.upstream_mp3]
kind = "openai"
base_url = "http://127.0.0.1:{upstream_mp3}/v1"
model = "tts-1"
http = {{ allow_local = true, allow_http = true }}
[engines.upstream_mp3.voices]
alloy = "alloy"
[engines.encoder]
kind = "openai"
base_url = "http://127.0.0.1:{upstream}/v1"
model = "tts-1"
relay = false
http = {{ allow_local = true, allow_http = true }}
[engines.encoder.voices]
alloy = "alloy"
[models.relay]
engine = "upstream"
instructions = "ignore"
[models.relay-mp3]
engine = "upstream_mp3"
instructions = "ignore"
[models.encode]
engine = "encoder"
instructions = "ignore"
"""
TIERS = "".join(TIER.format(tier=t) for t in ("guest", "basic", "premium", "admin"))


def start_voxgate(upstream, upstream_mp3, in_flight=ALL_IN_FLIGHT):
    port = free_port()
    data = os.path.join(WORK, "voxgate-data")
    config = os.path.join(WORK, "voxgate.toml")
    with open(config, "w") as f:
        f.write(VOXGATE_CONFIG.format(data=data, port=port, upstream=upstream,
                                     upstream_mp3=upstream_mp3, in_flight=in_flight) + TIERS)
    env = dict(os.environ, VOXGATE_DATA_DIR=data)
    account = subprocess.run([BIN, "--config", config, "accounts", "create", "--name", "hop",
                              "--tier", "basic"], env=env, check=True, capture_output=True,
                             text=True).stdout.strip()
    key = subprocess.run([BIN, "--config", config, "keys", "create", "--account", account,
                          "--name", "hop"], env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    proc = spawn([BIN, "--config", config, "serve"], os.path.join(WORK, "voxgate.log"), env=env)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return proc, port, key


def start_floor(upstream, upstream_mp3):
    port = free_port()
    proc = spawn([FLOOR, f"127.0.0.1:{port}", TOKEN, f"pcm=http://127.0.0.1:{upstream}",
                  f"mp3=http://127.0.0.1:{upstream_mp3}"], os.path.join(WORK, "floor.log"))
    wait_http(f"http://127.0.0.1:{port}/pcm/v1/audio/speech", timeout=30)
    return proc, port


def start_litellm(upstream, upstream_mp3):
    port = free_port()
    config = os.path.join(WORK, "litellm.yaml")
    with open(config, "w") as f:
        f.write(f"""model_list:
  - model_name: relay
    litellm_params:
      model: openai/tts-1
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: upstream
  - model_name: relay-mp3
    litellm_params:
      model: openai/tts-1
      api_base: http://127.0.0.1:{upstream_mp3}/v1
      api_key: upstream
general_settings:
  master_key: sk-{TOKEN}
""")
    proc = spawn([LITELLM, "--config", config, "--host", "127.0.0.1", "--port", str(port),
                  "--num_workers", "1"], os.path.join(WORK, "litellm.log"))
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    return proc, port, f"sk-{TOKEN}"


# ------------------------------------------------------------------ wrk

def wrk_script(model, fmt, key):
    path = os.path.join(WORK, f"post-{model}-{fmt}-{abs(hash(key)) % 10_000}.lua")
    body = json.dumps({"model": model, "input": "The quick brown fox jumps over the lazy dog.",
                       "voice": "alloy", "response_format": fmt})
    with open(path, "w") as f:
        f.write(f"""wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
""")
    return path


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value if unit == "ms" else value * 1000


def run_wrk(url, script, conns, pid, secs=None):
    before, started = cpu_ticks(pid), time.monotonic()
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs or SECS}s", "--latency", "-s", script,
                          url], capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    ticks = cpu_ticks(pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "rps": requests / wall,
        "p50": to_ms(latency["50"]),
        "p99": to_ms(latency["99"]),
        "cpu_us": ticks / hz / max(requests, 1) * 1e6,
        "errors": errors,
        "requests": requests,
    }


def soak(gateway, idle_kib):
    """One path for SOAK minutes at c=64: RSS each minute, and the peak."""
    pid, url, key, model = gateway
    script = wrk_script(model("pcm"), "pcm", key)
    print(f"## Soak: voxgate relaying PCM at c=64 for {SOAK} min (idle RSS {idle_kib / 1024:.1f} MiB)")
    print("| minute | req/s | p99 ms | CPU µs/req | RSS MiB | peak MiB |")
    print("|---|---|---|---|---|---|")
    for minute in range(1, SOAK + 1):
        f = run_wrk(url("pcm"), script, 64, pid, secs=60)
        print(f"| {minute} | {f['rps']:.0f} | {f['p99']:.1f} | {f['cpu_us']:.0f} | "
              f"{rss_kib(pid, 'VmRSS') / 1024:.1f} | {rss_kib(pid, 'VmHWM') / 1024:.1f} |"
              + (f" {f['errors']} non-2xx" if f["errors"] else ""), flush=True)


def main():
    for tool in ("nginx", "wrk"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light wrk")
    root = os.path.join(WORK, "clips")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "clip.pcm"), "wb") as f:
        f.write(clip_pcm())
    up_pcm, up_mp3 = free_port(), free_port()
    start_nginx("up-pcm", upstream_block(up_pcm, root, "clip.pcm", "audio/pcm"))
    wait_http(f"http://127.0.0.1:{up_pcm}/clip.pcm")
    voxgate, vport, vkey = start_voxgate(up_pcm, up_mp3)
    # The MP3 the MP3 upstream sends: the same clip, encoded by voxgate itself.
    request = urllib.request.Request(
        f"http://127.0.0.1:{vport}/v1/audio/speech",
        data=json.dumps({"model": "encode", "input": "clip", "voice": "alloy",
                         "response_format": "mp3"}).encode(),
        headers={"Authorization": f"Bearer {vkey}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        mp3 = response.read()
    with open(os.path.join(root, "clip.mp3"), "wb") as f:
        f.write(mp3)
    start_nginx("up-mp3", upstream_block(up_mp3, root, "clip.mp3", "audio/mpeg"))
    proxy_port = free_port()
    proxy = start_nginx("proxy", proxy_block(proxy_port, {"up_pcm": up_pcm, "up_mp3": up_mp3}))
    wait_http(f"http://127.0.0.1:{up_mp3}/clip.mp3")
    wait_http(f"http://127.0.0.1:{proxy_port}/")
    # path → (response_format, voxgate model, nginx location, LiteLLM model)
    paths = {
        "pcm": ("pcm", "relay", "pcm", "relay"),
        "mp3": ("mp3", "relay-mp3", "mp3", "relay-mp3"),
        "mp3-encoded": ("mp3", "encode", "mp3", None),
    }
    if ONLY:
        if ONLY not in paths:
            raise SystemExit(f"--path: one of {', '.join(paths)}")
        paths = {ONLY: paths[ONLY]}
    gateways = {
        "nginx": (proxy.pid, lambda p: f"http://127.0.0.1:{proxy_port}/{paths[p][2]}/v1/audio/speech",
                  TOKEN, lambda p: "relay"),
        "voxgate": (voxgate.pid, lambda p: f"http://127.0.0.1:{vport}/v1/audio/speech", vkey,
                    lambda p: paths[p][1]),
    }
    if FLOOR:
        floor, fport = start_floor(up_pcm, up_mp3)
        gateways["floor"] = (floor.pid,
                             lambda p: f"http://127.0.0.1:{fport}/{paths[p][2]}/v1/audio/speech",
                             TOKEN, lambda p: "relay")
    if LITELLM:
        litellm, lport, lkey = start_litellm(up_pcm, up_mp3)
        gateways["litellm"] = (litellm.pid,
                               lambda p: f"http://127.0.0.1:{lport}/v1/audio/speech", lkey,
                               lambda p: paths[p][3])
    idle = {name: rss_kib(g[0], "VmRSS") for name, g in gateways.items()}
    if SOAK:
        soak(gateways["voxgate"], idle["voxgate"])
        return
    results = {}
    path_peak = {}  # (gateway, path) -> the highest peak RSS over that path's runs
    for r in range(ROUNDS):
        for fmt in paths:
            for g in gateways.values():
                reset_peak(g[0])
            for conns in CONCURRENCY:
                for name, (pid, url, key, model) in gateways.items():
                    if model(fmt) is None:
                        continue
                    script = wrk_script(model(fmt), paths[fmt][0], key)
                    figures = run_wrk(url(fmt), script, conns, pid)
                    results.setdefault((fmt, conns, name), []).append(figures)
                    print(f"round {r + 1} {fmt} c={conns} {name}: {figures['rps']:.0f} req/s, "
                          f"p99 {figures['p99']:.1f} ms, {figures['cpu_us']:.0f} µs CPU/req"
                          + (f", {figures['errors']} non-2xx" if figures["errors"] else ""),
                          flush=True)
            for name, g in gateways.items():
                key = (name, fmt)
                path_peak[key] = max(path_peak.get(key, 0), rss_kib(g[0], "VmHWM"))
    peak = {name: max(v for (n, _), v in path_peak.items() if n == name) for name in gateways}
    # In the rounds a path's peak includes the heap an earlier path left behind (the allocator
    # keeps it), so each path's own peak is measured again on a fresh voxgate, at the highest
    # concurrency. The transcoding path is measured twice: with as many streams at once as
    # clients, and with the default `engine_in_flight` (8), which is what bounds its memory
    # (each stream holds an MP3 encoder's state and an upstream connection's read buffer;
    # the streams waiting for a slot hold neither).
    fresh = {}
    fresh_runs = [(fmt, ALL_IN_FLIGHT) for fmt in paths]
    if "mp3-encoded" in paths:
        fresh_runs.append(("mp3-encoded", DEFAULT_IN_FLIGHT))
    for fmt, in_flight in fresh_runs:
        voxgate.send_signal(signal.SIGTERM)
        voxgate.wait(10)
        voxgate, vport, vkey = start_voxgate(up_pcm, up_mp3, in_flight)
        script = wrk_script(paths[fmt][1], paths[fmt][0], vkey)
        figures = run_wrk(f"http://127.0.0.1:{vport}/v1/audio/speech", script,
                          max(CONCURRENCY), voxgate.pid)
        fresh[(fmt, in_flight)] = (rss_kib(voxgate.pid, "VmHWM"), figures)

    def med(fmt, conns, name, field):
        return statistics.median(f[field] for f in results[(fmt, conns, name)])

    print(f"\n## The gateway hop (median of {ROUNDS} round(s) of {SECS} s; upstream: nginx "
          f"serving a {CLIP_SECS} s clip; 2 wrk threads)")
    print("| path | c | gateway | req/s | p50 ms | p99 ms | CPU µs/req | vs nginx: req/s, "
          "p99, CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for fmt in paths:
        for conns in CONCURRENCY:
            for name in gateways:
                if (fmt, conns, name) not in results:
                    continue
                row = [med(fmt, conns, name, k) for k in ("rps", "p50", "p99", "cpu_us")]
                ratio = ""
                if name != "nginx":
                    ratio = (f"{row[0] / med(fmt, conns, 'nginx', 'rps'):.2f}×, "
                             f"{row[2] / med(fmt, conns, 'nginx', 'p99'):.2f}×, "
                             f"{row[3] / med(fmt, conns, 'nginx', 'cpu_us'):.1f}×")
                print(f"| {fmt} | {conns} | {name} | {row[0]:.0f} | {row[1]:.2f} | "
                      f"{row[2]:.2f} | {row[3]:.0f} | {ratio} |")
    if FLOOR:
        print("\nvoxgate's security stack over the floor (CPU µs/req: voxgate − floor; "
              "ratios voxgate / floor; the relayed paths only: on mp3-encoded voxgate encodes):")
        for fmt in (p for p in paths if p != "mp3-encoded"):
            for conns in CONCURRENCY:
                v, f = ([med(fmt, conns, n, k) for k in ("rps", "p99", "cpu_us")]
                        for n in ("voxgate", "floor"))
                print(f"  {fmt} c={conns}: +{v[2] - f[2]:.0f} µs/req; req/s {v[0] / f[0]:.2f}×, "
                      f"p99 {v[1] / f[1]:.2f}×, CPU {v[2] / f[2]:.1f}×")
    for name in gateways:
        per_path = ", ".join(f"{fmt} {path_peak[(name, fmt)] / 1024:.1f}"
                             for fmt in paths if (name, fmt) in path_peak)
        print(f"{name}: RSS idle {idle[name] / 1024:.1f} MiB, peak {peak[name] / 1024:.1f} MiB "
              f"(peak per path over the interleaved rounds, MiB: {per_path})")
    print(f"voxgate, a fresh process per path at c={max(CONCURRENCY)} for {SECS} s "
          "(engine_in_flight: streams an engine serves at once):")
    for (fmt, in_flight), (kib, f) in fresh.items():
        print(f"  {fmt}, engine_in_flight {in_flight}: peak RSS {kib / 1024:.1f} MiB, "
              f"{f['rps']:.0f} req/s, p99 {f['p99']:.1f} ms (queueing included)"
              + (f", {f['errors']} non-2xx" if f["errors"] else ""))
    failed = (sum(f["errors"] for runs in results.values() for f in runs)
              + sum(f["errors"] for _, f in fresh.values()))
    if failed:
        print(f"warning: {failed} non-2xx responses (refusals or failures) — the figures "
              "include them")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
