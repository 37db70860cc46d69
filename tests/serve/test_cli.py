"""`herd serve` as a command: a real process on port 0 (the port it printed), answering the openai
client, shut down by SIGINT; bad input is one line and exit status 2."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import openai
import pytest
from serve_util import API_KEY, dialogs

from herd.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_herd_serve_process(trained):
    path = trained[0]
    env = dict(
        os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), HERD_API_KEY=API_KEY
    )
    cmd = [
        sys.executable,
        "-m",
        "herd",
        "serve",
        str(path),
        "--port",
        "0",
        "--served-model-name",
        "tiny",
        "--threads",
        "1",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        url, deadline, lines = None, time.time() + 120, []
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        c = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
        assert [m.id for m in c.models.list()] == ["tiny"]
        msgs, _, answer = dialogs()[0]
        r = c.chat.completions.create(model="tiny", messages=msgs, temperature=0)
        assert r.choices[0].message.content == answer
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_herd_serve_bad_input(trained, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    with socket.socket() as s:  # a port in use: refused before loading anything
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert main(["serve", str(trained[0]), "--port", str(s.getsockname()[1])]) == 2
        assert "choose another --port" in capsys.readouterr().err
    assert main(["serve", str(trained[0]), "--shield", "middle=x", "--port", "0"]) == 2
    assert "--shield takes input=CKPT or output=CKPT" in capsys.readouterr().err
    assert main(["serve", str(trained[0]), "--builtin-tools", "teleport", "--port", "0"]) == 2
    assert "unknown tool 'teleport'" in capsys.readouterr().err
