"""No walk leaves the served root: ``..`` chains, absolute and relative
symlinks, and renames racing walks. Each test gathers every byte the gofer
returns and checks that none of a host file outside the root is among them."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrunsc.plugins.fs_9p.gofer import Gofer
from pyrunsc.plugins.fs_9p.p9 import Client, P9Error
from pyrunsc.plugins.fs_9p.p9 import messages as m

from .conftest import Tree, attach


def shadow() -> bytes:
    try:
        return Path("/etc/shadow").read_bytes()
    except OSError:
        return b""


class Loot:
    """Every byte that came back from the gofer."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, b: bytes | str) -> None:
        with self.lock:
            self.data.append(b.encode("utf-8", "surrogateescape") if isinstance(b, str) else b)

    def assert_clean(self, *secrets: bytes) -> None:
        blob = b"\0".join(self.data)
        for s in secrets:
            if s:
                assert s not in blob
                # Not even a recognisable line of it.
                for line in s.splitlines():
                    if len(line) > 12:
                        assert line not in blob


def grab(client: Client, root: int, names: list[str], loot: Loot) -> int | None:
    """Try every way to get data from ``names``: walk, open, read, readdir,
    readlink, xattrs. Returns the errno of the first failure (None if all went)."""
    try:
        f, _ = client.walk_new(root, names)
    except P9Error as e:
        return e.errno
    try:
        a = client.getattr(f)
        if a.qid.type == m.QTSYMLINK:
            loot.add(client.readlink(f))
        for name in client.listxattr(f):
            loot.add(client.getxattr(f, name))
        client.lopen(f, m.DOTL_RDONLY)
        if a.qid.type == m.QTDIR:
            for d in client.readdir_all(f):
                loot.add(d.name)
        else:
            loot.add(client.read_all(f))
        return None
    except P9Error as e:
        return e.errno
    finally:
        client.clunk(f)


@pytest.mark.parametrize(
    "names",
    [
        [".."],
        ["..", ".."],
        [".."] * 16,
        ["..", "outside", "secret.txt"],
        ["sub", ".."],
        ["sub", "..", "..", "outside", "secret.txt"],
        ["sub", "deeper", "..", "..", ".."],
        ["."],
        ["sub", ".", "..", ".."],
        ["/etc"],
        ["/etc/shadow"],
        ["sub/../../outside"],
        ["", "etc"],
    ],
    ids=lambda n: "/".join(n) or "<empty>",
)
def test_dotdot_and_path_names_never_walk(tree: Tree, client: Client, names: list[str]) -> None:
    loot = Loot()
    root = attach(client)
    assert grab(client, root, names, loot) == errno.EINVAL
    new = client.alloc_fid()
    with pytest.raises(P9Error):
        client.walk(root, new, names)
    with pytest.raises(P9Error, match="EBADF"):
        client.getattr(new)  # nothing was made
    loot.assert_clean(tree.secret, shadow())


@pytest.mark.parametrize(
    "names, err",
    [
        (["esc_abs"], errno.ELOOP),  # -> /etc/shadow
        (["esc_abs_secret"], errno.ELOOP),  # -> /abs/path/outside/secret.txt
        (["esc_rel"], errno.ELOOP),  # -> ../outside/secret.txt
        (["esc_dir_abs"], errno.ELOOP),  # -> /abs/path/outside
        (["esc_dir_abs", "secret.txt"], errno.ENOENT),  # the walk stops at the symlink
        (["esc_dir_abs", "secretdir", "secret.txt"], errno.ENOENT),
        (["sub", "esc_dir"], errno.ELOOP),  # -> ../../outside
        (["sub", "esc_dir", "secret.txt"], errno.ENOENT),
        (["link_in"], errno.ELOOP),  # even an inside symlink is not followed
    ],
    ids=lambda v: "/".join(v) if isinstance(v, list) else errno.errorcode[v],
)
def test_symlinks_are_reported_never_followed(tree: Tree, client: Client, names: list[str], err: int) -> None:
    loot = Loot()
    root = attach(client)
    assert grab(client, root, names, loot) == err
    if len(names) == 1 or names[-1] == "esc_dir":
        f = client.walk_path(root, "/".join(names))
        assert client.getattr(f).qid.type == m.QTSYMLINK
        # Opening for writing is tried on the planted targets only, never on /etc/shadow.
        writes = (m.DOTL_WRONLY, m.DOTL_RDWR) if names != ["esc_abs"] else ()
        for flags in (m.DOTL_RDONLY, m.DOTL_RDONLY | m.DOTL_DIRECTORY, *writes):
            with pytest.raises(P9Error, match="ELOOP"):
                client.lopen(f, flags)
        with pytest.raises(P9Error):
            client.walk(f, client.alloc_fid(), ["secret.txt"])
    # What came back is the link text at most, never the target's bytes.
    loot.assert_clean(tree.secret, shadow())
    assert (tree.outside / "secret.txt").read_bytes() == tree.secret


def test_writes_never_reach_through_a_symlink(tree: Tree, client: Client) -> None:
    # Only symlinks to the planted secret: a broken gofer must not be able to
    # damage a real host file (such as /etc/shadow) while this test runs.
    root = attach(client)
    for name in ("esc_rel", "esc_abs_secret"):
        d = client.clone(root)
        with pytest.raises(P9Error, match="EEXIST"):
            client.lcreate(d, name, m.DOTL_WRONLY | m.DOTL_TRUNC, 0o644)
        f = client.walk_path(root, name)
        with pytest.raises(P9Error):
            client.setattr(f, m.SETATTR_SIZE, size=0)
        with pytest.raises(P9Error):
            client.setxattr(f, "user.x", b"pwned")
    assert (tree.outside / "secret.txt").read_bytes() == tree.secret


@pytest.mark.parametrize("use_proc", [True, False], ids=["proc-reopen", "name-reopen"])
def test_a_file_swapped_for_a_symlink_after_the_walk(tree: Tree, connect: Callable[..., Client],
                                                     use_proc: bool) -> None:
    g = Gofer(tree.root, use_proc=use_proc)
    try:
        c = connect(g)
        root = attach(c)
        f = c.walk_path(root, "hello.txt")
        os.rename(tree.root / "hello.txt", tree.root / "hello.moved")
        os.symlink(tree.outside / "secret.txt", tree.root / "hello.txt")
        loot = Loot()
        try:
            c.lopen(f, m.DOTL_RDONLY)
            data = c.read_all(f)
            loot.add(data)
            assert data == b"hello world\n"  # the walked inode, through /proc
        except P9Error as e:
            # By name: O_NOFOLLOW refuses the symlink.
            assert not use_proc and e.errno == errno.ELOOP
        # A name taken over by another regular file: by name, not the same inode.
        g2 = c.walk_path(root, "sub/inner.txt")
        os.rename(tree.root / "sub" / "inner.txt", tree.root / "sub" / "inner.moved")
        (tree.root / "sub" / "inner.txt").write_bytes(b"IMPOSTOR")
        try:
            c.lopen(g2, m.DOTL_RDONLY)
            assert c.read_all(g2) == b"inner\n"
        except P9Error as e:
            assert not use_proc and e.errno == errno.ENOENT
        loot.assert_clean(tree.secret)
    finally:
        g.close()


def test_rename_racing_a_walk(tree: Tree, gofer: Gofer, connect: Callable[..., Client]) -> None:
    """One channel keeps swapping the directory ``d`` (which holds
    secretdir/secret.txt = "INSIDE") with a symlink ``d`` -> the outside
    folder (which holds the real secret at the same relative path), through
    9P (Trenameat, Tsymlink, Tunlinkat); three other channels keep walking
    d/secretdir/secret.txt and reading it, whole or step by step."""
    attacker = connect(gofer)
    aroot = attach(attacker)
    stop = threading.Event()
    loot = Loot()
    outcomes: dict[str, int] = {}
    olock = threading.Lock()
    errors: list[BaseException] = []

    def attack_loop() -> None:
        # Flip d between the directory and the symlink as fast as 9P allows.
        try:
            while not stop.is_set():
                attacker.renameat(aroot, "d", aroot, "d.real")
                attacker.symlink(aroot, "d", str(tree.outside))
                time.sleep(0)
                attacker.unlinkat(aroot, "d")
                attacker.renameat(aroot, "d.real", aroot, "d")
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def walker(step_by_step: bool) -> None:
        c = connect(gofer)
        root = attach(c)
        try:
            while not stop.is_set():
                if step_by_step:
                    try:
                        d, _ = c.walk_new(root, ["d"])
                    except P9Error as e:
                        key = f"walk-d:{errno.errorcode[e.errno or 0]}"
                    else:
                        r = grab(c, d, ["secretdir", "secret.txt"], loot)
                        c.clunk(d)
                        key = "read" if r is None else errno.errorcode[r]
                else:
                    r = grab(c, root, ["d", "secretdir", "secret.txt"], loot)
                    key = "read" if r is None else errno.errorcode[r]
                with olock:
                    outcomes[key] = outcomes.get(key, 0) + 1
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=attack_loop)] + [
        threading.Thread(target=walker, args=(i % 2 == 0,)) for i in range(3)
    ]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, errors
    loot.assert_clean(tree.secret)
    assert b"INSIDE" in b"".join(loot.data)
    # The race really ran both ways: reads of the inside file, and walks that
    # met the symlink (ENOENT: stopped at it) or a missing d.
    assert outcomes.get("read", 0) > 10, outcomes
    assert sum(v for k, v in outcomes.items() if k != "read") > 10, outcomes
    assert (tree.outside / "secretdir" / "secret.txt").read_bytes() == tree.secret


def test_host_etc_shadow_is_never_returned(tree: Tree, client: Client) -> None:
    content = shadow()
    if not content:
        pytest.skip("/etc/shadow is empty or unreadable here")
    loot = Loot()
    root = attach(client)
    for names in (["esc_abs"], ["..", "etc", "shadow"], ["/etc/shadow"]):
        grab(client, root, names, loot)
    loot.assert_clean(content)
