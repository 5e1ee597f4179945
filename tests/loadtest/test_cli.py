"""The command split: ``trackmesh-bench`` (installed) runs against trackmesh only and points at the
repository tool for Janus; ``python -m bench.janus`` (not installed) adds Janus to the same command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.janus.cli import janus_target
from bench.janus.multi import JanusMultiRun

from trackmesh.loadtest.cli import SERVERS, main
from trackmesh.loadtest.multi import MultiRun

from .test_smoke import _can_unshare

ROOT = Path(__file__).resolve().parents[2]


def test_installed_command_knows_only_trackmesh_and_points_at_the_janus_tool(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert set(SERVERS) == {"trackmesh"}
    for against in ("janus", "both"):
        rc = main(["s1", "--against", against, "--cores", "0", "--no-netns"])
        assert rc == 2
        err = capsys.readouterr().err
        assert "python -m bench.janus s1 --against " + against in err
        assert "janus" in err


def test_janus_target_plugs_its_signalling_into_the_shipped_scenarios() -> None:
    target = janus_target()
    assert target.multi_run is JanusMultiRun and issubclass(JanusMultiRun, MultiRun)
    # The three hooks the S2/S3 run calls for another server's signalling are overridden.
    for hook in ("_join_room", "_join_speakers", "_join_listener"):
        assert getattr(JanusMultiRun, hook) is not getattr(MultiRun, hook), hook


def test_janus_tool_runs_as_a_module_and_as_a_file(tmp_path: Path) -> None:
    for cmd, cwd in (([sys.executable, "-m", "bench.janus", "--help"], ROOT),
                     ([sys.executable, str(ROOT / "bench" / "janus" / "cli.py"), "--help"], tmp_path)):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "--against {trackmesh,janus,both}" in proc.stdout


@pytest.mark.skipif(shutil.which("janus") is None or not _can_unshare(), reason="needs janus (apt-get install janus) "
                    "and unshare -n")
def test_janus_tool_runs_the_shipped_meeting_scenario_against_janus(tmp_path: Path) -> None:
    """S2 against Janus: bench/janus/multi.py's VideoRoom hooks inside the shipped MultiRun."""
    out = tmp_path / "s2.json"
    core = str(sorted(os.sched_getaffinity(0))[0])
    proc = subprocess.run(
        [sys.executable, "-m", "bench.janus", "s2", "--against", "janus", "--cores", core,
         "--room-size", "3", "--duration", "2", "--step", "1", "--max-subs", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())["results"]["janus"]
    step = r["steps"][-1]
    assert step["subscribers"] == 3 and step["join_failures"] == 0, step
    assert step["streams_expected"] == 3 * 2 * 2 and step["loss_worst"] < 0.10, step
    assert step["corrupted"] == 0 and step["misrouted"] == 0, step
