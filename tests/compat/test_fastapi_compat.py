"""Drop-in compatibility with the original FastAPI agents, against real uvicorn processes.

Each pairing runs on loopback: the Python recommendation agent on our data agent, our recommendation agent on the
Python data agent, and both implementations side by side, comparing bytes for success and JSON for errors.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGET = Path(os.environ.get("AGENT_BIN_DIR", ROOT / "target" / "debug"))
CONTRACT = b'{"recommendation":"Based on data","data":{"processed_data":"some_insights"}}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, method: str = "GET", body: Optional[bytes] = None):
    headers = {"content-type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, method=method, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_ready(base: str, proc: subprocess.Popen, path: str, bound: float = 20.0) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            get(base + path)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)  # polling a readiness check, bounded by `bound`
    raise TimeoutError(f"{base} not ready within {bound}s")


class Agent:
    def __init__(self, argv, env, probe):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {"PATH": os.environ.get("PATH", ""), **env, "PORT": str(self.port), "BIND_ADDR": "127.0.0.1"}
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.proc = subprocess.Popen(argv, env=full_env, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.base, self.proc, probe)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def python_agent(module: str, env=None) -> Agent:
    argv = [sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1", "--port", "{port}"]
    return Agent(argv, env or {}, "/openapi.json")


def rust_agent(binary: str, env=None) -> Agent:
    path = TARGET / binary
    if not path.exists():
        pytest.fail(f"{path} not built; run cargo build --workspace first")
    return Agent([str(path)], {"LOG_FORMAT": "text", **(env or {})}, "/healthz")


@pytest.fixture
def agents():
    started = []

    def start(factory, *args, **kwargs):
        agent = factory(*args, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in reversed(started):
        agent.stop()


def test_python_recommendation_accepts_our_data_agent(agents):
    data = agents(rust_agent, "data")
    reco = agents(python_agent, "fastapi_recommendation", {"DATA_URL": data.base})
    assert get(reco.base + "/recommend") == (200, CONTRACT)


def test_our_recommendation_accepts_the_python_data_agent(agents):
    data = agents(python_agent, "fastapi_data")
    reco = agents(rust_agent, "recommendation", {"DATA_URL": data.base, "DATA_MODE": "direct"})
    assert get(reco.base + "/recommend") == (200, CONTRACT)


def test_both_data_agents_answer_the_same_bytes(agents):
    ours = agents(rust_agent, "data")
    theirs = agents(python_agent, "fastapi_data")
    assert get(ours.base + "/data") == get(theirs.base + "/data") == (200, b'{"processed_data":"some_insights"}')


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/recommend?limit=0"),
        ("GET", "/recommend?limit=101"),
        ("GET", "/recommend?limit=ten"),
        ("GET", "/recommend?limit=5"),
        ("GET", "/recommend?limit=5.0"),
        ("GET", "/recommend?limit=1_0"),
        ("GET", "/recommend?limit=5.5"),
        ("GET", "/recommend?limit=%205%20"),
        ("GET", "/recommend?limit="),
        ("GET", "/recommend?limit=99999999999999999999"),
        ("GET", "/recommend?limit=1&limit=200"),
        ("GET", "/no-such-path"),
        ("POST", "/recommend"),
    ],
)
def test_errors_and_validation_match_fastapi(agents, method, path):
    data = agents(rust_agent, "data")
    ours = agents(rust_agent, "recommendation", {"DATA_URL": data.base, "DATA_MODE": "direct"})
    theirs = agents(python_agent, "fastapi_recommendation", {"DATA_URL": data.base})
    our_status, our_body = get(ours.base + path, method)
    their_status, their_body = get(theirs.base + path, method)
    assert our_status == their_status
    assert json.loads(our_body) == json.loads(their_body)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/users/%ff/preferences", b"{}"),
        ("/users/a%20b/preferences", b"{}"),
        ("/users/ok/preferences", b'{"max_results": 18446744073709551615}'),
        ("/users/ok/preferences", b'{"max_results": 1e30}'),
        ("/users/ok/preferences", b'{"max_results": 1e16}'),
        ("/users/ok/preferences", b'{"max_results": 1.5}'),
        ("/users/ok/preferences", b'{"max_results": 5, "extra": 1}'),
        ("/users/ok/preferences", b'{"categories": ["", "x"], "max_results": "ten"}'),
        ("/users/ok/preferences", b"{bad"),
        ("/users/ok/preferences", b""),
        ("/users/%ff/preferences", b'{"max_results": 0}'),
    ],
)
def test_preference_validation_matches_fastapi(agents, path, body):
    # Not compared: an integer literal beyond 64 bits (serde_json reads it as a float, so it is judged as one).
    data = agents(rust_agent, "data")
    ours = agents(rust_agent, "recommendation", {"DATA_URL": data.base, "DATA_MODE": "direct"})
    theirs = agents(python_agent, "fastapi_recommendation", {"DATA_URL": data.base})
    our_status, our_body = get(ours.base + path, "PUT", body)
    their_status, their_body = get(theirs.base + path, "PUT", body)
    assert (our_status, json.loads(our_body)) == (their_status, json.loads(their_body))


@pytest.mark.parametrize(
    "path",
    [
        "/items?offset=-1&limit=1001",
        "/items?limit=0",
        "/items?offset=first",
        "/insights/users/bad%20id?limit=0&category=&category=" + "x" * 41,
        "/insights/users/u1?limit=101",
        "/insights/users/u1?limit=ten&category=books",
        "/insights/users/u1?limit=5" + "".join(f"&category=c{n}" for n in range(11)),
        "/insights/users/%ff",
    ],
)
def test_recommender_query_validation_matches_fastapi(agents, path):
    ours = agents(rust_agent, "data")
    theirs = agents(python_agent, "fastapi_data")
    our_status, our_body = get(ours.base + path)
    their_status, their_body = get(theirs.base + path)
    assert (our_status, json.loads(our_body)) == (their_status, json.loads(their_body))


GOOD_ROW = {"user": "u1", "item": "books-001", "weight": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"interactions": [GOOD_ROW, {"user": "u 2", "item": "no-such-item", "weight": 0}]},
        {"interactions": [{"user": "u3", "item": "books-002", "weight": 1001, "time": 1700000000000, "wieght": 1}]},
        {"interactions": [{"item": 5, "weight": "heavy", "time": 1.5}, "not a row"], "extra": True},
        {"interactions": [{"user": "u1", "item": "bad id", "weight": -1, "time": -5}]},
        {"interactions": [{"user": 7, "item": "books-001", "weight": None, "time": "soon"}]},
        {"interactions": [{"user": "u1", "item": "books-001", "weight": "1e9", "time": "17_000"}]},
        {"interactions": [{"user": "u1", "item": "books-001", "weight": "NaN"}]},
        {"interactions": [{"user": "u1", "item": "books-001", "weight": [1], "time": {}}]},
        {"interactions": []},
        {"interactions": [GOOD_ROW] * 1001},
        {"interactions": GOOD_ROW},
        {},
        [GOOD_ROW],
        "text",
    ],
)
def test_interaction_batch_validation_matches_fastapi(agents, body):
    # 1001 rows need more than the default 64 KiB body bound.
    ours = agents(rust_agent, "data", {"MAX_BODY_BYTES": "1048576"})
    theirs = agents(python_agent, "fastapi_data")
    raw = json.dumps(body).encode()
    our_status, our_body = get(ours.base + "/interactions", "POST", raw)
    their_status, their_body = get(theirs.base + "/interactions", "POST", raw)
    assert (our_status, json.loads(our_body)) == (their_status, json.loads(their_body))
