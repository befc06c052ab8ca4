"""Static C programs, built with ``gcc -static`` here, check single system
calls precisely inside the sandbox; and the runtime around a container:
exit status, signals, state, list, ps, kill and delete."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from platforms import platforms

HERE = Path(__file__).parent
PYRUNSC = Path(sys.executable).parent / "pyrunsc"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build static test programs")

#: Tests of what the sandbox does run on every platform (issue #8). Those of
#: the runtime around it that no platform code takes part in (container
#: state, list, kill and delete from the CLI, the control socket's lifetime,
#: strace's decoding, stdio's file offsets) run on the default platform only,
#: to keep CI time in check.
on_platforms = pytest.mark.parametrize("platform", platforms())


#: Programs whose output is compared with the same binary run natively, and
#: the command each runs under natively: reparent must be PID 1, as it is in
#: the sandbox, so it runs in a new PID namespace.
COMPARED = {
    "waitstatus": [],
    "pingpong": [],
    "sigregs": [],
    "altstack": [],
    "eintr": [],
    "reparent": ["unshare", "--pid", "--fork", "--kill-child"],
}


def build(bin_dir: Path, names: list[str]) -> None:
    """gcc -static each tests/kernel/c/NAME.c into bin_dir/NAME, all at once
    (pie with -static-pie)."""
    builds = {
        name: subprocess.Popen(
            ["gcc", "-static-pie" if name == "pie" else "-static", "-O1", "-o", str(bin_dir / name),
             str(HERE / "c" / f"{name}.c")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name in names
    }
    for name, proc in builds.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"gcc {name}.c:\n{out.decode()}"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = tmp_path_factory.mktemp("programs")
    bin_dir = b / "rootfs" / "bin"
    bin_dir.mkdir(parents=True)
    (b / "rootfs" / "tmp").mkdir()
    build(bin_dir, ["syscalls", "segv", "signals", "pie", "sleepers", *COMPARED])
    shutil.copy2("/bin/busybox", bin_dir / "busybox")
    for applet in ("sh", "sleep", "echo", "cat", "true"):
        os.symlink("busybox", bin_dir / applet)
    return b


def spec(bundle: Path, args: list[str], **process: object) -> None:
    proc = {"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}, **process}
    doc = {"ociVersion": "1.0.2", "process": proc, "root": {"path": "rootfs"}}
    (bundle / "config.json").write_text(json.dumps(doc))


def command(root: Path, *args: str, platform: str | None = None, file_access: str = "direct") -> list[str]:
    """The ``pyrunsc`` command line: ``--root root``, the file access, the
    platform (None: pyrunsc's default, ptrace), then ``args``."""
    return [str(PYRUNSC), "--root", str(root), "--file-access", file_access,
            *(("--platform", platform) if platform else ()), *args]


def pyrunsc(root: Path, *args: str, platform: str | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(command(root, *args, platform=platform), text=True, timeout=60,
                          **kw)  # type: ignore[call-overload]


@on_platforms
def test_system_calls_precisely(bundle: Path, tmp_path: Path, platform: str) -> None:
    spec(bundle, ["/bin/syscalls"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "sys", platform=platform)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    assert not failed, "\n".join(failed)
    assert r.stdout.rstrip().endswith("0 failures") and r.returncode == 0, r.stdout + r.stderr


@on_platforms
def test_signal_delivery(bundle: Path, tmp_path: Path, platform: str) -> None:
    """Handlers on an rt_sigframe with siginfo, masks, sigreturn, SIGSEGV
    handlers, the alternate stack, SIGCHLD and default actions in children."""
    spec(bundle, ["/bin/signals"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "sigs", platform=platform)
    failed = [line for line in r.stdout.splitlines() if line.startswith("FAIL")]
    assert not failed, "\n".join(failed)
    assert r.stdout.rstrip().endswith("0 failures") and r.returncode == 0, r.stdout + r.stderr


@on_platforms
@pytest.mark.parametrize("name", list(COMPARED))
def test_same_as_native(bundle: Path, tmp_path: Path, name: str, platform: str) -> None:
    """Processes and signals, checked by the program itself ("ok"/"FAIL"
    lines) and compared line by line with the same binary run natively:
    wait status words (waitstatus), pipe ping-pong (pingpong), registers
    across a handler (sigregs), SIGSEGV on an alternate stack (altstack),
    EINTR against SA_RESTART (eintr), orphans and zombies reaped by init
    (reparent)."""
    prefix = COMPARED[name]
    if prefix and shutil.which(prefix[0]) is None:
        pytest.skip(f"needs {prefix[0]} to run the native side")
    spec(bundle, [f"/bin/{name}"])
    got = pyrunsc(tmp_path, "run", "--bundle", str(bundle), name, platform=platform)
    failed = [line for line in got.stdout.splitlines() if line.startswith("FAIL")]
    assert not failed and got.returncode == 0, "\n".join(failed) + got.stderr
    native = subprocess.run([*prefix, str(bundle / "rootfs" / "bin" / name)], capture_output=True, text=True,
                            cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert native.returncode == 0 and native.stdout.rstrip().endswith("\n0 failures"), native.stdout + native.stderr
    assert got.stdout == native.stdout


@on_platforms
def test_sigsegv_kills_only_the_process_with_139(bundle: Path, tmp_path: Path, platform: str) -> None:
    spec(bundle, ["/bin/segv"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "segv", platform=platform)
    assert r.returncode == 139, r.stderr
    assert r.stdout == "before\n"
    assert "Traceback" not in r.stderr


@on_platforms
def test_execve_and_scripts(bundle: Path, tmp_path: Path, platform: str) -> None:
    """exec keeps the pid and closes close-on-exec fds; #! scripts run their interpreter."""
    script = bundle / "rootfs" / "bin" / "hello.sh"
    script.write_text("#!/bin/sh -e\necho \"script $0 $1 pid $$\"\n")
    script.chmod(0o755)
    spec(bundle, ["sh", "-c", "echo shell pid $$; exec /bin/hello.sh arg"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "ex", platform=platform)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "shell pid 1\nscript /bin/hello.sh arg pid 1\n"


@on_platforms
def test_static_pie(bundle: Path, tmp_path: Path, platform: str) -> None:
    """ET_DYN without PT_INTERP loads at Linux's ELF_ET_DYN_BASE and runs."""
    spec(bundle, ["/bin/pie"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "pie", platform=platform)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("pie main at 0x5555555"), r.stdout


@on_platforms
def test_exit_status_passes_through(bundle: Path, tmp_path: Path, platform: str) -> None:
    spec(bundle, ["sh", "-c", "exit 42"])
    assert pyrunsc(tmp_path, "run", "--bundle", str(bundle), "x", platform=platform).returncode == 42


@on_platforms
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/bin/nonexistent"], "cannot run '/bin/nonexistent': no such file"),
        (["/tmp"], "not executable"),
        (["nosuchprogram"], "cannot run 'nosuchprogram'"),
    ],
)
def test_bad_program_is_bad_input(bundle: Path, tmp_path: Path, args: list[str], message: str, platform: str) -> None:
    spec(bundle, args)
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "bad", platform=platform)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert pyrunsc(tmp_path, "list", "--format", "json").stdout.strip() == "[]"  # nothing left behind


def test_foreign_architecture_is_bad_input(bundle: Path, tmp_path: Path) -> None:
    elf = bytearray((bundle / "rootfs" / "bin" / "segv").read_bytes())
    elf[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    target = bundle / "rootfs" / "bin" / "arm"
    target.write_bytes(bytes(elf))
    target.chmod(0o755)
    spec(bundle, ["/bin/arm"])
    r = pyrunsc(tmp_path, "run", "--bundle", str(bundle), "arm")
    assert r.returncode == 2 and "not a static x86-64" in r.stderr, r.stderr


def test_missing_rootfs_is_bad_input(tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    spec(b, ["/bin/true"])
    r = pyrunsc(tmp_path / "state", "run", "--bundle", str(b), "nr")
    assert r.returncode == 2 and "root" in r.stderr and "Traceback" not in r.stderr


def test_detach_state_kill_delete(bundle: Path, tmp_path: Path) -> None:
    spec(bundle, ["sleep", "30"])
    # A detached container keeps the stdio it was given: files here, since a
    # pipe would stay open (and the caller waiting) for as long as it runs.
    with (tmp_path / "out").open("w") as out, (tmp_path / "err").open("w") as err:
        r = pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "d1", stdout=out, stderr=err)
    assert r.returncode == 0, (tmp_path / "err").read_text()
    state = json.loads(pyrunsc(tmp_path, "state", "d1").stdout)
    assert state["status"] == "running" and state["id"] == "d1" and state["pid"] > 0
    # A second container with the same ID is refused.
    again = pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "d1", stdout=subprocess.DEVNULL)
    assert again.returncode == 2 and "already exists" in again.stderr
    listing = json.loads(pyrunsc(tmp_path, "list", "--format", "json").stdout)
    assert [c["id"] for c in listing] == ["d1"]
    # Deleting a running container needs --force.
    assert pyrunsc(tmp_path, "delete", "d1").returncode == 1
    assert pyrunsc(tmp_path, "kill", "d1", "KILL").returncode == 0
    deadline = time.monotonic() + 10
    while json.loads(pyrunsc(tmp_path, "state", "d1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.05)
    assert pyrunsc(tmp_path, "delete", "d1").returncode == 0
    assert pyrunsc(tmp_path, "state", "d1").returncode == 1
    assert not (tmp_path / "d1").exists()


def test_kill_signal_names(bundle: Path, tmp_path: Path) -> None:
    spec(bundle, ["sleep", "30"])
    with (tmp_path / "out").open("w") as out:
        started = pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "k1", stdout=out, stderr=out)
    assert started.returncode == 0
    bad = pyrunsc(tmp_path, "kill", "k1", "NOTASIGNAL")
    assert bad.returncode == 2 and "unknown signal" in bad.stderr
    assert pyrunsc(tmp_path, "kill", "k1", "SIGTERM").returncode == 0
    pid = json.loads((tmp_path / "k1" / "state.json").read_text())["pid"]
    deadline = time.monotonic() + 10
    while json.loads(pyrunsc(tmp_path, "state", "k1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert json.loads((tmp_path / "k1" / "state.json").read_text())["exit_status"] == 128 + signal.SIGTERM
    assert pyrunsc(tmp_path, "delete", "--force", "k1").returncode == 0
    del pid


@on_platforms
def test_foreground_run_forwards_sigterm(bundle: Path, tmp_path: Path, platform: str) -> None:
    spec(bundle, ["sleep", "30"])
    p = subprocess.Popen(command(tmp_path, "run", "--bundle", str(bundle), "fg", platform=platform),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (tmp_path / "fg" / "state.json").exists() or json.loads(
        (tmp_path / "fg" / "state.json").read_text()
    )["status"] != "running":
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 128 + signal.SIGTERM
    assert not (tmp_path / "fg").exists()  # a foreground container is deleted once it exits


@on_platforms
def test_terminal_stdio(bundle: Path, tmp_path: Path, platform: str) -> None:
    """With a terminal as stdout, TCGETS and TIOCGWINSZ come from the host
    terminal in the kernel's layout: ls prints columns and nothing overflows."""
    import pty

    spec(bundle, ["sh", "-c", "exec ls /bin"])
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(command(tmp_path, "run", "--bundle", str(bundle), "tty", platform=platform),
                             stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        assert p.wait(timeout=30) == 0, out
    finally:
        os.close(master)
    text = out.decode()
    assert "stack smashing" not in text
    assert "busybox" in text and "segv" in text
    # Columns: several names share a line on a terminal.
    assert any(len(line.split()) > 1 for line in text.splitlines())


def test_strace_logs_each_call_decoded(bundle: Path, tmp_path: Path) -> None:
    spec(bundle, ["echo", "traced"])
    r = subprocess.run([str(PYRUNSC), "--root", str(tmp_path), "--file-access", "direct", "--strace", "run",
                        "--bundle", str(bundle), "st"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "traced\n", r.stderr
    lines = r.stderr.splitlines()
    assert any("write(1, " in line and "b'traced\\n'" in line and line.endswith("= 7") for line in lines), lines
    assert any("exit_group(0) = ?" in line for line in lines)
    assert any("rseq(" in line and "ENOSYS" in line for line in lines)  # unsupported calls show their errno


@on_platforms
def test_closed_stdio_is_dev_null_not_an_internal_file(bundle: Path, tmp_path: Path, platform: str) -> None:
    """A caller with fd 0 closed: the container reads end of file, never the
    gofer's socket or the memory file that would otherwise take fd 0."""
    spec(bundle, ["cat"])
    for mode in ("proxy", "direct"):
        r = subprocess.run(command(tmp_path, "run", "--bundle", str(bundle), f"closed-{mode}", platform=platform,
                                   file_access=mode), capture_output=True, preexec_fn=lambda: os.close(0), timeout=30)
        assert r.returncode == 0 and r.stdout == b"", r.stderr


def test_stdio_files_share_the_callers_offset(bundle: Path, tmp_path: Path) -> None:
    """As with runc, the container's stdio is the caller's open file
    description: it reads from the caller's position and writes after what
    the caller wrote."""
    spec(bundle, ["sh", "-c", "read x; echo got $x"])
    lines = tmp_path / "lines"
    lines.write_text("l1\nl2\nl3\n")
    out = tmp_path / "out"
    script = (f"read a; echo BEFORE; {PYRUNSC} --root {tmp_path} --file-access direct run --bundle {bundle} off; "
              "read b; echo host read $b")
    with lines.open() as stdin, out.open("w") as stdout:
        subprocess.run(["/bin/bash", "-c", script], stdin=stdin, stdout=stdout, check=True, timeout=30)
    assert out.read_text() == "BEFORE\ngot l2\nhost read l3\n"


def test_stdout_and_stderr_to_one_file_share_its_offset(bundle: Path, tmp_path: Path) -> None:
    """``> f 2>&1``: one open file description, so writes interleave in order."""
    spec(bundle, ["sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2"])
    out = tmp_path / "output.txt"
    with out.open("w") as f:
        f.write("BEFORE\n")
        f.flush()
        r = subprocess.run([str(PYRUNSC), "--root", str(tmp_path), "--file-access", "direct", "run", "--bundle",
                            str(bundle), "both"], stdout=f, stderr=f, timeout=30)
    assert r.returncode == 0
    assert out.read_text() == "BEFORE\nout1\nerr1\nout2\nerr2\n"


@on_platforms
def test_an_ignored_signal_from_the_host_is_ignored(bundle: Path, tmp_path: Path, platform: str) -> None:
    spec(bundle, ["sh", "-c", "trap '' INT; read x; echo read-returned"])
    r_fd, w_fd = os.pipe()
    p = subprocess.Popen(command(tmp_path, "run", "--bundle", str(bundle), "ign", platform=platform), stdin=r_fd,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(r_fd)
    deadline = time.monotonic() + 20
    while not (tmp_path / "ign" / "state.json").exists() or json.loads(
        (tmp_path / "ign" / "state.json").read_text()
    )["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # let the shell set its trap and block in read
    p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    os.write(w_fd, b"line\n")
    os.close(w_fd)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert out == b"read-returned\n"


# pyrunsc ps: the processes of a running container, from its sentry.


def wait_running(root: Path, cid: str, p: subprocess.Popen[bytes] | None = None) -> dict[str, object]:
    """The container's state once it runs."""
    deadline = time.monotonic() + 20
    while True:
        path = root / cid / "state.json"
        if path.exists():
            state: dict[str, object] = json.loads(path.read_text())
            if state["status"] == "running":
                return state
        assert time.monotonic() < deadline, "the container did not start"
        assert p is None or p.poll() is None, "pyrunsc run ended"
        time.sleep(0.02)


def ps_json(root: Path, cid: str, until: object = None) -> dict[str, object]:
    """``pyrunsc ps --format json``, asked again until ``until(report)`` holds
    (a child may not have exec'd its program yet)."""
    deadline = time.monotonic() + 20
    while True:
        r = pyrunsc(root, "ps", "--format", "json", cid)
        assert r.returncode == 0, r.stderr
        report: dict[str, object] = json.loads(r.stdout)
        if until is None or until(report):  # type: ignore[operator]
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def table_rows(out: str) -> list[list[str]]:
    """The cells of a rich table's header and rows."""
    return [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in out.splitlines()
            if line.startswith(("│", "┃"))]


@on_platforms
def test_ps_of_a_detached_container(bundle: Path, tmp_path: Path, platform: str) -> None:
    script = "sleep 30 & sleep 30 & wait"
    spec(bundle, ["sh", "-c", script])
    with (tmp_path / "out").open("w") as out:
        r = pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "ps1", stdout=out, stderr=out,
                    platform=platform)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    state = wait_running(tmp_path, "ps1")
    assert (tmp_path / "ps1" / "control.sock").is_socket()

    def settled(report: dict[str, object]) -> bool:
        procs = report["processes"]
        assert isinstance(procs, list)
        return len(procs) == 3 and all(p["args"] == ["sleep", "30"] for p in procs[1:])

    report = ps_json(tmp_path, "ps1", settled)
    assert report["id"] == "ps1"
    procs = report["processes"]
    assert isinstance(procs, list)
    assert [(p["uid"], p["pid"], p["ppid"], p["threads"], p["state"], p["cmd"], p["args"]) for p in procs] == [
        (0, 1, 0, [1], "S", "sh", ["sh", "-c", script]),
        (0, 2, 1, [2], "S", "sleep", ["sleep", "30"]),
        (0, 3, 1, [3], "S", "sleep", ["sleep", "30"]),
    ]
    for p in procs:
        assert list(p) == ["uid", "pid", "ppid", "threads", "state", "stime", "started", "cmd", "args"]
        assert re.fullmatch(r"\d\d:\d\d", p["stime"]) or re.fullmatch(r"[A-Z][a-z]{2}\d\d", p["stime"])
        assert abs(time.time() - datetime.fromisoformat(p["started"]).timestamp()) < 60
    host = report["host"]
    assert isinstance(host, dict)
    roles = [(r["role"], r["pid"]) for r in host["processes"]]
    assert roles[0] == ("sentry", state["pid"])
    # ptrace: one stub per address space; kvm: the vCPUs are threads of the sentry, no process of their own.
    # (Direct file access: no gofer.)
    stubs = 3 if platform == "ptrace" else 0
    assert [role for role, _ in roles[1:]] == ["stub"] * stubs
    assert host["rss"] > 0 and host["cpu_time"] >= 0 and host["cpu_percent"] >= 0

    # The table: one row per process, and the host's figures under it.
    r = pyrunsc(tmp_path, "ps", "ps1")
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert rows[0] == ["UID", "PID", "PPID", "THREADS", "STATE", "STIME", "COMMAND"]
    assert [row[:5] + row[6:] for row in rows[1:]] == [
        ["0", "1", "0", "1", "S", f"sh -c {script}"],
        ["0", "2", "1", "1", "S", "sleep 30"],
        ["0", "3", "1", "1", "S", "sleep 30"],
    ]
    with_stubs = r" \+ 3 stubs" if stubs else ""
    assert re.search(rf"^host: sentry {state['pid']}{with_stubs}: CPU \d+\.\d% \(\d+\.\d\d s\), RSS [\d.]+ MiB",
                     r.stdout, re.M), r.stdout

    # Killed outright (host SIGKILL), the sandbox leaves its socket behind: ps says it is not running,
    # and delete removes the rest.
    assert pyrunsc(tmp_path, "kill", "ps1", "KILL").returncode == 0
    deadline = time.monotonic() + 10
    while json.loads(pyrunsc(tmp_path, "state", "ps1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.05)
    r = pyrunsc(tmp_path, "ps", "ps1")
    assert r.returncode == 1 and "container 'ps1' is not running" in r.stderr, r.stderr
    assert pyrunsc(tmp_path, "delete", "ps1").returncode == 0
    assert not (tmp_path / "ps1").exists()
    r = pyrunsc(tmp_path, "ps", "ps1")
    assert r.returncode == 1 and "container 'ps1' does not exist" in r.stderr, r.stderr


def test_the_control_socket_goes_with_the_sandbox(bundle: Path, tmp_path: Path) -> None:
    """A sandbox whose init exits removes its control socket; its state stays
    until delete."""
    spec(bundle, ["sleep", "2"])
    with (tmp_path / "out").open("w") as out:
        assert pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "s1", stdout=out,
                       stderr=out).returncode == 0
    wait_running(tmp_path, "s1")
    assert [q["args"] for q in ps_json(tmp_path, "s1")["processes"]] == [["sleep", "2"]]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 20
    while json.loads(pyrunsc(tmp_path, "state", "s1").stdout)["status"] != "stopped":
        assert time.monotonic() < deadline, "the container did not stop"
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while (tmp_path / "s1" / "control.sock").exists():
        assert time.monotonic() < deadline, "the control socket was left behind"
        time.sleep(0.05)
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["state.json"]
    r = pyrunsc(tmp_path, "ps", "s1")
    assert r.returncode == 1 and "container 's1' is not running (status stopped)" in r.stderr, r.stderr
    assert pyrunsc(tmp_path, "delete", "s1").returncode == 0


@on_platforms
def test_ps_of_a_foreground_container_with_threads(bundle: Path, tmp_path: Path, platform: str) -> None:
    """Asked from another process while the shell waits in a read of the
    caller's stdin (the sentry blocked in a host read): ps answers, with the
    threads /proc/PID/task lists, and the read goes on undisturbed."""
    spec(bundle, ["sh", "-c", "/bin/sleepers 2 & sleep 0.5; echo $!; busybox ls /proc/$!/task | busybox xargs; "
                              "read x; echo got $x"])
    p = subprocess.Popen(command(tmp_path, "run", "--bundle", str(bundle), "fg", platform=platform),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout is not None and p.stdin is not None
        pid = int(p.stdout.readline())
        tids = [int(t) for t in p.stdout.readline().split()]
        assert len(tids) == 3 and tids[0] == pid
        wait_running(tmp_path, "fg", p)
        report = ps_json(tmp_path, "fg")
        procs = {q["pid"]: q for q in report["processes"]}  # type: ignore[attr-defined]
        assert procs[1]["state"] == "S" and procs[1]["args"][:2] == ["sh", "-c"]
        assert procs[pid]["threads"] == tids and procs[pid]["state"] == "S"
        assert (procs[pid]["cmd"], procs[pid]["args"], procs[pid]["ppid"]) == ("sleepers", ["/bin/sleepers", "2"], 1)
        out, err = p.communicate(b"line\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert out == b"got line\n"
    assert not (tmp_path / "fg").exists()  # the foreground container is deleted, socket and all


@on_platforms
def test_ps_while_a_task_computes(bundle: Path, tmp_path: Path, platform: str) -> None:
    """A task running without system calls is interrupted for the answer."""
    spec(bundle, ["sh", "-c", "while :; do :; done"])
    with (tmp_path / "out").open("w") as out:
        assert pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "busy", stdout=out,
                       stderr=out, platform=platform).returncode == 0
    try:
        wait_running(tmp_path, "busy")
        time.sleep(0.3)
        start = time.monotonic()
        report = ps_json(tmp_path, "busy")
        assert time.monotonic() - start < 5
        procs = report["processes"]
        assert isinstance(procs, list)
        assert [(q["pid"], q["state"]) for q in procs] == [(1, "R")]
    finally:
        assert pyrunsc(tmp_path, "delete", "--force", "busy").returncode == 0


@on_platforms
def test_term_ends_a_shell_waiting_for_its_jobs(bundle: Path, tmp_path: Path, platform: str) -> None:
    """``pyrunsc kill ID TERM`` while init's shell sits in ``wait`` (which
    blocks SIGTERM outside rt_sigsuspend): the signal is acted on under
    sigsuspend's mask and ends the container with 143, as on Linux."""
    spec(bundle, ["sh", "-c", "sleep 30 & sleep 30 & wait"])
    with (tmp_path / "out").open("w") as out:
        r = pyrunsc(tmp_path, "run", "--detach", "--bundle", str(bundle), "term1", stdout=out, stderr=out,
                    platform=platform)
    assert r.returncode == 0, (tmp_path / "out").read_text()
    wait_running(tmp_path, "term1")
    time.sleep(0.5)  # into wait
    assert pyrunsc(tmp_path, "kill", "term1", "TERM").returncode == 0
    deadline = time.monotonic() + 10
    while (state := json.loads(pyrunsc(tmp_path, "state", "term1").stdout))["status"] != "stopped":
        assert time.monotonic() < deadline, "SIGTERM did not end the container"
        time.sleep(0.05)
    assert state["exitStatus"] == 143
    assert pyrunsc(tmp_path, "delete", "term1").returncode == 0


@on_platforms
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) from util-linux for a terminal")
def test_interactive_shell_on_a_terminal(bundle: Path, tmp_path: Path, platform: str) -> None:
    """An interactive ``sh`` on the caller's terminal takes it for its
    controlling terminal: job control (its tcsetpgrp) works, jobs run and
    are reported."""
    spec(bundle, ["sh", "-i"], env=["PATH=/bin", "PS1=$ "])
    cmd = f"{PYRUNSC} --root {tmp_path} --file-access direct --platform {platform} run --bundle {bundle} tty1"
    typed = b"echo hi from $$; sleep 0.2 & jobs; wait; echo done\n"
    proc = subprocess.Popen(["script", "-qfc", cmd, "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin is not None
    time.sleep(1)
    proc.stdin.write(typed)
    proc.stdin.flush()
    time.sleep(1.5)
    out = proc.communicate(b"exit\n", timeout=30)[0].decode(errors="replace").replace("\r", "")
    assert "can't set tty process group" not in out, out
    assert "hi from 1\n" in out, out
    assert re.search(r"\[1\]\+ +Running +sleep 0\.2", out), out
    assert "done\n" in out, out
