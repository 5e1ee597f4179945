"""Janus 1.1.2 as a server under test, pinned with taskset (the loopback configuration of
shared/research/ecosystem.md 4.1/4.2)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from trackmesh.loadtest.servers import Server, wait_http

__all__ = ["JanusServer"]

_JANUS_DIRS = "/usr/lib/x86_64-linux-gnu/janus"


class JanusServer(Server):
    """Janus with the loopback configuration of shared/research/ecosystem.md 4.1/4.2."""

    name = "janus"

    def __init__(self, cores: str, workdir: Path, *, event_loops: int = 1, debug_level: int = 3) -> None:
        exe = shutil.which("janus")
        if exe is None:
            raise RuntimeError("janus not found: apt-get install janus")
        self.port = 8088
        self.conf = Path(tempfile.mkdtemp(prefix="janus-", dir=workdir))
        plugins = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_lua.so,libjanus_nosip.so," \
                  "libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so," \
                  "libjanus_videocall.so,libjanus_voicemail.so,libjanus_echotest.so"
        transports = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so," \
                     "libjanus_rabbitmq.so"
        events = "libjanus_sampleevh.so,libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so," \
                 "libjanus_rabbitmqevh.so,libjanus_wsevh.so"
        (self.conf / "janus.jcfg").write_text(
            "general: {\n"
            f'  configs_folder = "{self.conf}"\n'
            f'  plugins_folder = "{_JANUS_DIRS}/plugins"\n'
            f'  transports_folder = "{_JANUS_DIRS}/transports"\n'
            f'  events_folder = "{_JANUS_DIRS}/events"\n'
            f'  loggers_folder = "{_JANUS_DIRS}/loggers"\n'
            f"  debug_level = {debug_level}\n"
            '  admin_secret = "bench"\n'
            '  interface = "127.0.0.2"\n'
            "  session_timeout = 120\n"
            f"  event_loops = {event_loops}\n"
            "}\n"
            "certificates: {}\n"
            'media: {\n  rtp_port_range = "20000-29999"\n}\n'
            'nat: {\n  ice_enforce_list = "v0"\n  ignore_mdns = true\n}\n'
            f'plugins: {{\n  disable = "{plugins}"\n}}\n'
            f'transports: {{\n  disable = "{transports}"\n}}\n'
            'loggers: {\n  disable = "libjanus_jsonlog.so"\n}\n'
            f'events: {{\n  broadcast = false\n  disable = "{events}"\n}}\n'
        )
        (self.conf / "janus.transport.http.jcfg").write_text(
            'general: {\n  json = "indented"\n  base_path = "/janus"\n  http = true\n  port = 8088\n'
            '  ip = "127.0.0.1"\n  https = false\n}\nadmin: {\n  admin_http = false\n  admin_https = false\n}\n'
            "cors: {}\ncertificates: {}\n"
        )
        (self.conf / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
        self.log_path = workdir / "janus.log"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        self.version = out[0] if out else "?"
        self.proc = subprocess.Popen(
            ["taskset", "-c", cores, exe, "-F", str(self.conf), "-C", str(self.conf / "janus.jcfg"), "-o",
             "-L", str(self.log_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_http(self.port, "/janus/info", self.proc)
