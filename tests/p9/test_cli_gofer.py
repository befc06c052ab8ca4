"""``pyrunsc gofer``: bad input exits 2 naming the flag and value; a real run
serves a unix or TCP address and stops cleanly on SIGINT or SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrunsc.core.cli import main
from pyrunsc.plugins.fs_9p.p9 import Client

from .conftest import Tree, attach, read_file

PYRUNSC = [sys.executable, "-c", "from pyrunsc.core.cli import main; main()"]


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    code = e.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--serve", "{missing}", "--listen", "unix:{sock}"], ["--serve", "no such folder", "{missing}"]),
        (["--serve", "{file}", "--listen", "unix:{sock}"], ["--serve", "not a folder"]),
        (["--serve", "{root}", "--listen", "udp:1.2.3.4:5"], ["--listen", "udp:1.2.3.4:5", "unix:PATH"]),
        (["--serve", "{root}", "--listen", "tcp:localhost"], ["--listen", "tcp:localhost"]),
        (["--serve", "{root}", "--listen", "tcp:127.0.0.1:99999"], ["--listen", "PORT"]),
        (["--serve", "{root}", "--listen", "unix:"], ["--listen"]),
        (["--serve", "{root}", "--listen", "unix:{file}"], ["--listen", "already exists", "{file}"]),
        (["--serve", "{root}", "--listen", "unix:{sock}", "--msize", "100"], ["--msize", "100"]),
        (["--serve", "{root}", "--listen", "unix:{sock}", "--workers", "0"], ["--workers", "0"]),
        (["--listen", "unix:{sock}"], ["--serve"]),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    tree: Tree, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: list[str]
) -> None:
    (tmp_path / "file").write_text("x")
    names = {"missing": str(tmp_path / "nope"), "file": str(tmp_path / "file"), "sock": str(tmp_path / "s.sock"),
             "root": str(tree.root)}
    code, err = run_main(["gofer", *(a.format(**names) for a in args)], capsys)
    assert code == 2, err
    for w in words:
        assert w.format(**names) in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "s.sock").exists()


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([*PYRUNSC, "gofer", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "serving" in line, (line, proc.poll())
    return proc, line


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


def test_standalone_unix_socket_and_sigint(tree: Tree, tmp_path: Path) -> None:
    sock_path = tmp_path / "g.sock"
    proc, line = start(["--serve", str(tree.root), "--listen", f"unix:{sock_path}"])
    try:
        assert f"unix:{sock_path}" in line and str(tree.root) in line
        clients = []
        for _ in range(3):  # several channels at once
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(sock_path))
            c = Client(s, timeout=10)
            c.version()
            clients.append(c)
        for c in clients:
            assert read_file(c, attach(c, str(tree.root)), "sub/inner.txt") == b"inner\n"
        code, err = stop(proc, signal.SIGINT)
        assert code == 0, err
        assert "stopped" in err and "Traceback" not in err
        assert not sock_path.exists()
        for c in clients:
            c.close()
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.communicate()


def test_standalone_tcp_read_only_and_sigterm(tree: Tree) -> None:
    proc, line = start(["--serve", str(tree.root), "--listen", "tcp:127.0.0.1:0", "--read-only"])
    try:
        port = int(line.rsplit(":", 1)[1])
        assert port > 0 and "read-only" in line
        with Client(socket.create_connection(("127.0.0.1", port)), timeout=10) as c:
            c.version()
            root = attach(c)
            assert read_file(c, root, "hello.txt") == b"hello world\n"
            with pytest.raises(OSError, match="EROFS"):
                c.mkdir(root, "x", 0o755)
        code, err = stop(proc, signal.SIGTERM)
        assert code == 0, err
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.communicate()


def test_sigint_with_a_client_still_connected(tree: Tree, tmp_path: Path) -> None:
    sock_path = tmp_path / "g.sock"
    proc, _ = start(["--serve", str(tree.root), "--listen", f"unix:{sock_path}"])
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    c = Client(s, timeout=10)
    c.version()
    root = attach(c)
    time.sleep(0.1)
    code, err = stop(proc, signal.SIGINT)
    assert code == 0, err
    assert not sock_path.exists()
    with pytest.raises((ConnectionError, OSError)):
        c.getattr(root)
    c.close()


def test_gofer_command_is_added_by_the_fs_9p_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["gofer", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--serve" in out and "--listen" in out and "--read-only" in out
    env = dict(os.environ, PYRUNSC_DISABLE_PLUGINS="fs_9p")
    r = subprocess.run([*PYRUNSC, "gofer", "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and "No such command" in r.stderr
