"""SIGKILL the server mid-run and restart it: no job is lost, finished files stay downloadable,
the running job is marked ERROR with a reason and the waiting ones complete."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

TOY_SERVER = Path(__file__).parent / "toy_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, root: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(TOY_SERVER), "--port", str(port), "--root", str(root)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1)
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(process.stderr.read().decode())
            time.sleep(0.1)
    raise TimeoutError("server did not start")


def call(port: int, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return json.loads(error.read())


def query(port: int, job_id: str) -> dict:
    return call(port, f"/v1/generation/query-job?job_id={job_id}")


def test_sigkill_mid_run_and_restart(tmp_path):
    port = free_port()
    server = start(port, tmp_path)
    try:
        # 25 steps of 20 ms: a job runs about half a second; the third job's steps take 0.2 s (the toy
        # planner's "hold"), so it is still the running one when the server is killed
        ids = [call(port, "/v1/generation/text-to-image",
                    {"prompt": "hold" if index == 2 else "p", "async_process": True,
                     "advanced_params": {"overwrite_step": 25}})["job_id"]
               for index in range(10)]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stages = [query(port, job_id)["job_stage"] for job_id in ids]
            if stages.count("SUCCESS") >= 2 and "RUNNING" in stages:
                break
            time.sleep(0.02)
        assert stages[:3] == ["SUCCESS", "SUCCESS", "RUNNING"] and set(stages[3:]) == {"WAITING"}, stages
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        before = stages
    finally:
        if server.poll() is None:
            server.kill()
    finished_before = [job_id for job_id, stage in zip(ids, before) if stage == "SUCCESS"]
    assert finished_before, before

    server = start(port, tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            results = [query(port, job_id) for job_id in ids]
            if all(r["job_stage"] in ("SUCCESS", "ERROR") for r in results):
                break
            time.sleep(0.1)
        assert all(r["job_type"] == "Text to Image" for r in results), "a job id became unknown"
        stages = [r["job_stage"] for r in results]
        assert all(stage in ("SUCCESS", "ERROR") for stage in stages), stages
        errors = [r for r in results if r["job_stage"] == "ERROR"]
        # the job that was running is marked with the reason; every waiting one ran after the restart
        running_before = [job_id for job_id, stage in zip(ids, before) if stage == "RUNNING"]
        assert [r["job_id"] for r in errors] == running_before, errors
        assert all("restarted" in (r["job_status"] or "") for r in errors), errors
        assert stages.count("SUCCESS") == len(ids) - len(running_before)
        for job_id in finished_before:
            url = query(port, job_id)["job_result"][0]["url"]
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.read()[:4] == b"\x89PNG"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
