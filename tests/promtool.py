"""``promtool check metrics`` and a real Prometheus server (Debian's prometheus package) for the tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

PROMTOOL = shutil.which("promtool")


def promtool_problems(text: str) -> str:
    """What promtool says about ``text`` ("" when it accepts it)."""
    assert PROMTOOL is not None, "promtool is missing (apt-get install prometheus)"
    proc = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    return (proc.stdout + proc.stderr).strip() + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the sample ``name`` whose labels include ``labels`` (0.0 when absent)."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    return 0.0


class PrometheusServer:
    """A real Prometheus (Debian's ``prometheus``) on 127.0.0.1 scraping ``targets`` every second, with its
    storage in a temporary directory; ``query`` runs PromQL through its HTTP API."""

    def __init__(self, targets: list[str], interval: str = "1s") -> None:
        import socket
        import tempfile
        import textwrap

        binary = shutil.which("prometheus")
        assert binary is not None, "prometheus is missing (apt-get install prometheus)"
        self.dir = tempfile.mkdtemp(prefix="trackmesh-prometheus-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = textwrap.dedent(f"""\
            global: {{scrape_interval: {interval}, scrape_timeout: {interval}}}
            scrape_configs:
              - job_name: trackmesh
                static_configs: [{{targets: {targets!r}}}]
            """).replace("'", '"')
        with open(f"{self.dir}/prometheus.yml", "w") as f:
            f.write(config)
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def query(self, promql: str) -> list[dict[str, object]]:
        import json
        import urllib.parse
        import urllib.request

        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        """The first sample's value of an instant query, or None when it returns nothing."""
        try:
            result = self.query(promql)
        except OSError:
            return None
        return float(result[0]["value"][1]) if result else None  # type: ignore[index]

    def wait(self, promql: str, check: Callable[[float], bool], timeout: float = 20.0) -> float:
        import time

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            last = self.value(promql)
            if last is not None and check(last):
                return last
            time.sleep(0.25)
        raise AssertionError(f"{promql} = {last} after {timeout} s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
