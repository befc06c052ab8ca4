"""The gofer through our client: real attributes and operations on a real
folder, attach names, read-only mounts, and files the gofer must not open."""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pyrunsc.plugins.fs_9p.gofer import Gofer, serve_fd
from pyrunsc.plugins.fs_9p.p9 import Client, P9Error
from pyrunsc.plugins.fs_9p.p9 import messages as m
from pyrunsc.plugins.fs_9p.p9.messages import NOFID, Qid

from .conftest import Tree, attach, open_fds, read_file

RDONLY, WRONLY, RDWR = m.DOTL_RDONLY, m.DOTL_WRONLY, m.DOTL_RDWR


def errno_of(fn: Callable[[], object]) -> int:
    with pytest.raises(P9Error) as e:
        fn()
    assert e.value.errno is not None
    return e.value.errno


# -- attach ----------------------------------------------------------------------------


def test_attach_names_that_mean_the_root(tree: Tree, client: Client) -> None:
    want = os.stat(tree.root).st_ino
    for aname in ("", "/", str(tree.root), str(tree.root) + "/"):
        fid = client.alloc_fid()
        qid = client.attach(fid, aname)
        assert qid == Qid(m.QTDIR, 0, want), aname
        assert {d.name for d in client.readdir_all(_opened(client, fid))} == set(os.listdir(tree.root))


def _opened(client: Client, fid: int) -> int:
    f = client.clone(fid)
    client.lopen(f, RDONLY)
    return f


@pytest.mark.parametrize("aname", ["/etc", "ctl", "..", "/..", "root", "/tmp"])
def test_other_anames_get_enoent(client: Client, aname: str) -> None:
    assert errno_of(lambda: client.attach(client.alloc_fid(), aname)) == errno.ENOENT


def test_extra_aname_and_symlinked_root(tree: Tree, connect: Callable[..., Client], tmp_path: Path) -> None:
    link = tmp_path / "rootlink"
    link.symlink_to(tree.root)
    g = Gofer(link, anames=["ctl"])
    try:
        c = connect(g)
        for aname in ("ctl", str(link), str(tree.root)):
            assert c.attach(c.alloc_fid(), aname).path == os.stat(tree.root).st_ino
        assert errno_of(lambda: c.attach(c.alloc_fid(), "ctl2")) == errno.ENOENT
    finally:
        g.close()


def test_attach_refuses_a_used_fid_an_afid_and_auth(client: Client) -> None:
    root = attach(client)
    assert errno_of(lambda: client.attach(root, "/")) == errno.EBADF
    assert errno_of(lambda: client.attach(client.alloc_fid(), "/", afid=7)) == errno.EINVAL
    # diod's clients take ENOENT from Tauth as "no authentication needed".
    assert errno_of(lambda: client.auth(client.alloc_fid(), "/")) == errno.ENOENT


def test_requests_before_tversion_and_other_versions(gofer: Gofer) -> None:
    a, b = socket.socketpair()
    gofer.start(a)
    with Client(b, timeout=10) as c:
        assert errno_of(lambda: c.attach(0, "/")) == errno.EINVAL
        reply = c.rpc(m.Tversion(65536, "9P2000.u"), m.Rversion)
        assert reply.version == "unknown"
        assert errno_of(lambda: c.rpc(m.Tversion(100, "9P2000.L"), m.Rversion)) == errno.EINVAL
        assert c.version(1 << 30).msize == gofer.max_msize
        c.attach(0, "/")


def test_tversion_clunks_every_fid(client: Client) -> None:
    root = attach(client)
    client.version()
    assert errno_of(lambda: client.getattr(root)) == errno.EBADF


def test_msize_negotiation_caps_reads(gofer: Gofer, connect: Callable[..., Client], tree: Tree) -> None:
    c = connect(gofer, msize=8192)
    assert c.msize == 8192
    f = c.walk_path(attach(c), "big.bin")
    c.lopen(f, RDONLY)
    reply = c.rpc(m.Tread(f, 0, 1 << 20), m.Rread)
    assert len(reply.data) == 8192 - m.IOHDRSZ
    assert c.read_all(f) == (tree.root / "big.bin").read_bytes()


# -- walk ------------------------------------------------------------------------------


def test_walk_returns_real_qids_and_partial_walks(tree: Tree, client: Client) -> None:
    root = attach(client)
    newfid = client.alloc_fid()
    qids = client.walk(root, newfid, ["sub", "deeper", "x"])
    want = [os.lstat(tree.root / p) for p in ("sub", "sub/deeper", "sub/deeper/x")]
    assert qids == [Qid(m.QTDIR, 0, want[0].st_ino), Qid(m.QTDIR, 0, want[1].st_ino), Qid(0, 0, want[2].st_ino)]
    assert client.getattr(newfid).qid == qids[-1]
    # Stops at the missing name: one qid back, and the newfid was not made.
    other = client.alloc_fid()
    assert client.walk(root, other, ["sub", "nope", "x"]) == qids[:1]
    assert errno_of(lambda: client.getattr(other)) == errno.EBADF
    # The first name missing is an error.
    assert errno_of(lambda: client.walk(root, other, ["nope"])) == errno.ENOENT
    # Through a regular file or a symlink: the walk stops there.
    assert len(client.walk(root, other, ["hello.txt", "x"])) == 1
    assert len(client.walk(root, other, ["esc_dir_abs", "secret.txt"])) == 1
    hello = client.walk_path(root, "hello.txt")
    assert errno_of(lambda: client.walk(hello, other, ["x"])) == errno.ENOTDIR
    assert errno_of(lambda: client.getattr(other)) == errno.EBADF
    # A used newfid.
    assert errno_of(lambda: client.walk(root, newfid, ["sub"])) == errno.EBADF


def test_walk_clone_and_newfid_equal_to_fid(client: Client) -> None:
    root = attach(client)
    f = client.clone(root)
    assert client.getattr(f).qid == client.getattr(root).qid
    assert client.walk(f, f, ["sub"]) and client.getattr(f).qid.type == m.QTDIR
    assert client.walk(f, f, ["inner.txt"]) and client.getattr(f).qid.type == m.QTFILE
    assert errno_of(lambda: client.walk(f, f, ["nope"])) == errno.ENOTDIR
    assert client.getattr(f).qid.type == m.QTFILE  # unchanged


def test_walk_more_than_16_names(tmp_path: Path, connect: Callable[..., Client]) -> None:
    deep = tmp_path / "deep"
    p = deep
    names = [f"d{i}" for i in range(20)]
    for n in names:
        p = p / n
    p.mkdir(parents=True)
    (p / "f").write_bytes(b"bottom")
    g = Gofer(deep)
    try:
        c = connect(g)
        assert read_file(c, attach(c), "/".join([*names, "f"])) == b"bottom"
    finally:
        g.close()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "x\0y"])
def test_bad_names_are_einval_everywhere(client: Client, name: str) -> None:
    root = attach(client)
    new = client.alloc_fid()
    assert errno_of(lambda: client.walk(root, new, [name])) == errno.EINVAL
    assert errno_of(lambda: client.walk(root, new, ["sub", name])) == errno.EINVAL
    assert errno_of(lambda: client.mkdir(root, name, 0o755)) == errno.EINVAL
    assert errno_of(lambda: client.symlink(root, name, "x")) == errno.EINVAL
    assert errno_of(lambda: client.mknod(root, name, stat.S_IFREG | 0o644)) == errno.EINVAL
    assert errno_of(lambda: client.unlinkat(root, name)) == errno.EINVAL
    assert errno_of(lambda: client.renameat(root, "hello.txt", root, name)) == errno.EINVAL
    assert errno_of(lambda: client.renameat(root, name, root, "z")) == errno.EINVAL
    d = client.clone(root)
    assert errno_of(lambda: client.lcreate(d, name, WRONLY, 0o644)) == errno.EINVAL


# -- attributes ------------------------------------------------------------------------


def test_getattr_is_the_host_stat_with_nanoseconds(tree: Tree, client: Client) -> None:
    path = tree.root / "hello.txt"
    os.utime(path, ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    os.chmod(path, 0o640)
    os.chown(path, 1234, 5678)
    os.link(path, tree.root / "hello2.txt")
    root = attach(client)
    for name in ("hello.txt", "sub", "link_in", "big.bin"):
        f = client.walk_path(root, name)
        a = client.getattr(f)
        s = os.lstat(tree.root / name)
        assert a.valid & m.GETATTR_BASIC == m.GETATTR_BASIC
        assert (a.mode, a.uid, a.gid, a.nlink, a.rdev, a.size, a.blksize, a.blocks) == (
            s.st_mode, s.st_uid, s.st_gid, s.st_nlink, s.st_rdev, s.st_size, s.st_blksize, s.st_blocks
        ), name
        assert a.atime_sec * 10**9 + a.atime_nsec == s.st_atime_ns
        assert a.mtime_sec * 10**9 + a.mtime_nsec == s.st_mtime_ns
        assert a.ctime_sec * 10**9 + a.ctime_nsec == s.st_ctime_ns
        assert a.qid.path == s.st_ino
        client.clunk(f)
    a = client.getattr(client.walk_path(root, "hello.txt"))
    assert (a.atime_nsec, a.mtime_nsec, a.nlink, a.uid, a.gid) == (123_456_789, 987_654_321, 2, 1234, 5678)
    assert stat.S_IMODE(a.mode) == 0o640 and stat.S_ISREG(a.mode)


def test_setattr_changes_the_host_file(tree: Tree, client: Client) -> None:
    root = attach(client)
    f = client.walk_path(root, "hello.txt")
    path = tree.root / "hello.txt"
    client.setattr(f, m.SETATTR_MODE, mode=0o600)
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    client.setattr(f, m.SETATTR_UID | m.SETATTR_GID, uid=4321, gid=8765)
    assert (os.lstat(path).st_uid, os.lstat(path).st_gid) == (4321, 8765)
    client.setattr(f, m.SETATTR_SIZE, size=5)
    assert path.read_bytes() == b"hello"
    client.setattr(
        f, m.SETATTR_ATIME | m.SETATTR_ATIME_SET | m.SETATTR_MTIME | m.SETATTR_MTIME_SET,
        atime=(1_000_000_000, 111), mtime=(1_100_000_000, 222_333_444),
    )
    s = os.lstat(path)
    assert (s.st_atime_ns, s.st_mtime_ns) == (1_000_000_000_000_000_111, 1_100_000_000_222_333_444)
    before = time.time_ns()
    client.setattr(f, m.SETATTR_MTIME)  # "now"
    assert os.lstat(path).st_mtime_ns >= before - 10**7
    assert os.lstat(path).st_atime_ns == 1_000_000_000_000_000_111  # untouched
    client.setattr(f, m.SETATTR_CTIME)  # nothing to do, not an error
    d = client.walk_path(root, "sub")
    assert errno_of(lambda: client.setattr(d, m.SETATTR_SIZE, size=0)) == errno.EISDIR


def test_setattr_on_a_symlink_never_touches_its_target(tree: Tree, client: Client) -> None:
    root = attach(client)
    link = client.walk_path(root, "link_in")
    target = os.lstat(tree.root / "hello.txt")
    assert errno_of(lambda: client.setattr(link, m.SETATTR_MODE, mode=0o777)) == errno.EOPNOTSUPP
    client.setattr(link, m.SETATTR_MTIME | m.SETATTR_MTIME_SET, mtime=(1_234_567_890, 5))
    client.setattr(link, m.SETATTR_UID | m.SETATTR_GID, uid=77, gid=88)
    s = os.lstat(tree.root / "link_in")
    assert (s.st_mtime_ns, s.st_uid, s.st_gid) == (1_234_567_890_000_000_005, 77, 88)
    after = os.lstat(tree.root / "hello.txt")
    assert (after.st_mtime_ns, after.st_uid, after.st_mode) == (target.st_mtime_ns, target.st_uid, target.st_mode)
    # An absolute symlink to a file outside: its target keeps its owner (a
    # planted file, so that a broken gofer cannot damage a real host file).
    outside = os.lstat(tree.outside / "secret.txt")
    esc = client.walk_path(root, "esc_abs_secret")
    client.setattr(esc, m.SETATTR_UID, uid=4242)
    assert os.lstat(tree.root / "esc_abs_secret").st_uid == 4242
    assert os.lstat(tree.outside / "secret.txt").st_uid == outside.st_uid


def test_statfs_is_the_host_statfs(tree: Tree, client: Client) -> None:
    r = client.statfs(attach(client))
    sv = os.statvfs(tree.root)
    assert (r.bsize, r.blocks, r.files, r.namelen, r.fsid) == (
        sv.f_bsize, sv.f_blocks, sv.f_files, sv.f_namemax, sv.f_fsid
    )
    assert abs(r.bfree - sv.f_bfree) < 1000 and r.fs_type != 0


# -- readdir ---------------------------------------------------------------------------


def test_readdir_gives_real_qids_types_and_offsets(tree: Tree, client: Client) -> None:
    os.mkfifo(tree.root / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree.root / "sock"))
    s.close()
    for i in range(60):
        (tree.root / "empty" / f"file-with-a-longish-name-{i:03}").write_bytes(b"")
    root = attach(client)
    d = _opened(client, root)
    got = client.readdir_all(d)
    dt = {stat.S_IFDIR: 4, stat.S_IFREG: 8, stat.S_IFLNK: 10, stat.S_IFIFO: 1, stat.S_IFSOCK: 12}
    want = {e.name: (e.inode(), dt[stat.S_IFMT(e.stat(follow_symlinks=False).st_mode)])
            for e in os.scandir(tree.root)}
    assert {x.name: (x.qid.path, x.type) for x in got} == want
    assert [x.offset for x in got] == list(range(1, len(got) + 1))
    for x in got:
        assert x.qid.type == {4: m.QTDIR, 10: m.QTSYMLINK}.get(x.type, m.QTFILE)
    # Small counts: several Treaddirs, each continuing from the last offset.
    e = _opened(client, client.walk_path(root, "empty"))
    seen, offset, calls = [], 0, 0
    while True:
        part = client.readdir(e, offset, 200)
        if not part:
            break
        assert len(m.encode_dirents(part)) <= 200
        seen += [p.name for p in part]
        offset = part[-1].offset
        calls += 1
    assert calls > 10 and sorted(seen) == sorted(os.listdir(tree.root / "empty"))
    assert errno_of(lambda: client.readdir(e, 0, 10)) == errno.EINVAL  # not even one entry fits


def test_readdir_needs_an_open_directory(client: Client) -> None:
    root = attach(client)
    assert errno_of(lambda: client.readdir(root, 0)) == errno.EBADF
    f = _opened(client, client.walk_path(root, "hello.txt"))
    assert errno_of(lambda: client.readdir(f, 0)) == errno.ENOTDIR


# -- open, read, write, create ------------------------------------------------------------


def test_read_and_write_files(tree: Tree, client: Client) -> None:
    root = attach(client)
    assert read_file(client, root, "big.bin") == (tree.root / "big.bin").read_bytes()
    f = client.walk_path(root, "hello.txt")
    client.lopen(f, RDWR)
    assert client.write(f, 6, b"there") == 5
    assert (tree.root / "hello.txt").read_bytes() == b"hello there\n"
    assert client.read(f, 0, 5) == b"hello"
    assert client.read(f, 100, 5) == b""
    client.fsync(f)
    client.fsync(f, 1)
    g = client.walk_path(root, "hello.txt")
    client.lopen(g, RDONLY)
    assert errno_of(lambda: client.write(g, 0, b"x")) == errno.EBADF
    assert errno_of(lambda: client.lopen(g, RDONLY)) == errno.EINVAL  # already open
    h = client.walk_path(root, "hello.txt")
    assert errno_of(lambda: client.read(h, 0, 1)) == errno.EBADF  # not open
    assert errno_of(lambda: client.fsync(h)) == errno.EBADF
    client.lopen(h, WRONLY | m.DOTL_TRUNC)
    assert errno_of(lambda: client.read(h, 0, 1)) == errno.EBADF
    assert (tree.root / "hello.txt").read_bytes() == b""


def test_directories_open_read_only(client: Client) -> None:
    root = attach(client)
    d = client.walk_path(root, "sub")
    assert errno_of(lambda: client.lopen(d, WRONLY)) == errno.EISDIR
    client.lopen(d, RDONLY)
    assert errno_of(lambda: client.read(d, 0, 10)) == errno.EISDIR


def test_lcreate_makes_and_opens_the_file_with_exact_mode(tree: Tree, client: Client) -> None:
    root = attach(client)
    d = client.walk_path(root, "sub")
    old = os.umask(0o077)
    try:
        qid, iounit = client.lcreate(d, "new.txt", RDWR, 0o664)
    finally:
        os.umask(old)
    s = os.lstat(tree.root / "sub" / "new.txt")
    assert qid == Qid(m.QTFILE, 0, s.st_ino) and stat.S_IMODE(s.st_mode) == 0o664 and iounit == 0
    client.write(d, 0, b"created")
    assert client.read(d, 0, 100) == b"created"
    assert client.getattr(d).qid == qid  # the fid now names the file
    e = client.walk_path(root, "sub")
    assert errno_of(lambda: client.lcreate(e, "new.txt", WRONLY, 0o644)) == errno.EEXIST
    # Never through a symlink: creating over one fails and its target is untouched.
    f = client.walk_path(root, "")
    assert errno_of(lambda: client.lcreate(f, "esc_rel", WRONLY, 0o644)) == errno.EEXIST
    assert not (tree.outside / "secret.txt").read_bytes().startswith(b"created")


def test_mkdir_mknod_symlink_link_and_readlink(tree: Tree, client: Client) -> None:
    root = attach(client)
    q = client.mkdir(root, "newdir", 0o2750)
    s = os.lstat(tree.root / "newdir")
    assert q == Qid(m.QTDIR, 0, s.st_ino) and stat.S_IMODE(s.st_mode) == 0o2750
    q = client.mknod(root, "plain", stat.S_IFREG | 0o604)
    assert stat.S_ISREG(os.lstat(tree.root / "plain").st_mode) and q.type == m.QTFILE
    assert stat.S_IMODE(os.lstat(tree.root / "plain").st_mode) == 0o604
    client.mknod(root, "pipe", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(os.lstat(tree.root / "pipe").st_mode)
    for kind in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFSOCK):
        assert errno_of(lambda kind=kind: client.mknod(root, "dev", kind | 0o600, 1, 3)) == errno.EPERM
    assert not (tree.root / "dev").exists()
    q = client.symlink(root, "sl", "/anything/at/all")
    assert os.readlink(tree.root / "sl") == "/anything/at/all" and q.type == m.QTSYMLINK
    assert client.readlink(client.walk_path(root, "sl")) == "/anything/at/all"
    assert errno_of(lambda: client.readlink(client.walk_path(root, "hello.txt"))) == errno.EINVAL
    client.link(root, client.walk_path(root, "hello.txt"), "hard")
    assert os.lstat(tree.root / "hard").st_ino == os.lstat(tree.root / "hello.txt").st_ino
    # A hard link to a symlink is a link to the symlink, not to its target.
    client.link(root, client.walk_path(root, "esc_abs_secret"), "hard_sl")
    assert os.readlink(tree.root / "hard_sl") == str(tree.outside / "secret.txt")
    assert os.lstat(tree.outside / "secret.txt").st_nlink == 1
    assert errno_of(lambda: client.link(root, client.walk_path(root, "sub"), "dirlink")) == errno.EPERM


def test_rename_renameat_unlinkat_remove(tree: Tree, client: Client) -> None:
    root = attach(client)
    f = client.walk_path(root, "hello.txt")
    sub = client.walk_path(root, "sub")
    client.rename(f, sub, "moved.txt")
    assert (tree.root / "sub" / "moved.txt").read_bytes() == b"hello world\n"
    client.rename(f, root, "back.txt")  # the fid followed its file
    assert (tree.root / "back.txt").exists() and not (tree.root / "sub" / "moved.txt").exists()
    client.renameat(root, "back.txt", sub, "again.txt")
    assert (tree.root / "sub" / "again.txt").exists()
    client.unlinkat(sub, "again.txt")
    assert not (tree.root / "sub" / "again.txt").exists()
    assert errno_of(lambda: client.unlinkat(root, "empty")) in (errno.EISDIR, errno.EPERM)
    client.unlinkat(root, "empty", m.AT_REMOVEDIR)
    assert not (tree.root / "empty").exists()
    assert errno_of(lambda: client.unlinkat(root, "sub", 0x1)) == errno.EINVAL
    g = client.walk_path(root, "big.bin")
    client.remove(g)
    assert not (tree.root / "big.bin").exists()
    assert errno_of(lambda: client.getattr(g)) == errno.EBADF  # clunked
    r2 = client.clone(root)
    assert errno_of(lambda: client.remove(r2)) == errno.EBUSY
    assert errno_of(lambda: client.getattr(r2)) == errno.EBADF  # clunked anyway
    assert errno_of(lambda: client.rename(client.clone(root), sub, "x")) == errno.EBUSY
    # A fid whose name was taken by another file no longer renames by that name.
    h = client.walk_path(root, "sub/inner.txt")
    os.rename(tree.root / "sub" / "inner.txt", tree.root / "sub" / "elsewhere")
    (tree.root / "sub" / "inner.txt").write_bytes(b"impostor")
    assert errno_of(lambda: client.rename(h, root, "stolen")) == errno.ENOENT
    assert not (tree.root / "stolen").exists()


def test_xattrs_user_namespace(tree: Tree, client: Client) -> None:
    root = attach(client)
    f = client.walk_path(root, "hello.txt")
    client.setxattr(f, "user.color", b"blue")
    assert os.getxattr(tree.root / "hello.txt", "user.color") == b"blue"
    assert client.getxattr(f, "user.color") == b"blue"
    assert "user.color" in client.listxattr(f)
    os.setxattr(tree.root / "hello.txt", "trusted.hidden", b"x")
    assert "trusted.hidden" not in client.listxattr(f)
    assert errno_of(lambda: client.getxattr(f, "trusted.hidden")) == errno.EOPNOTSUPP
    assert errno_of(lambda: client.setxattr(f, "security.evil", b"x")) == errno.EOPNOTSUPP
    assert errno_of(lambda: client.getxattr(f, "user.none")) == errno.ENODATA
    client.setxattr(f, "user.color", b"")  # size 0: remove, as Linux's client does
    assert "user.color" not in os.listxattr(tree.root / "hello.txt")
    assert errno_of(lambda: client.xattrcreate(client.clone(f), "user.big", 1 << 20)) == errno.E2BIG
    link = client.walk_path(root, "esc_abs")
    assert client.listxattr(link) == []


def test_lock_and_getlock(client: Client) -> None:
    f = _opened(client, client.walk_path(attach(client), "hello.txt"))
    assert client.lock(f, m.LOCK_TYPE_WRLCK, start=0, length=10, proc_id=5, client_id="c") == m.LOCK_SUCCESS
    r = client.getlock(f, m.LOCK_TYPE_WRLCK, start=3, length=4, proc_id=6, client_id="d")
    assert (r.lock_type, r.start, r.length, r.proc_id, r.client_id) == (m.LOCK_TYPE_UNLCK, 3, 4, 6, "d")
    assert errno_of(lambda: client.lock(f, 9)) == errno.EINVAL
    assert errno_of(lambda: client.lock(999, 0)) == errno.EBADF


# -- files the gofer must not open ------------------------------------------------------


def test_sockets_devices_fifos_and_symlinks_are_not_opened(tree: Tree, client: Client) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tree.root / "sock"))
    s.listen()
    os.mkfifo(tree.root / "fifo")
    os.mknod(tree.root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    root = attach(client)
    try:
        for name, err in (("sock", errno.ENXIO), ("fifo", errno.EPERM), ("null", errno.EPERM),
                          ("link_in", errno.ELOOP), ("esc_abs_secret", errno.ELOOP)):
            f = client.walk_path(root, name)
            a = client.getattr(f)  # walking to them and their attributes are fine
            assert a.mode == os.lstat(tree.root / name).st_mode
            for flags in (RDONLY, WRONLY, RDWR):
                assert errno_of(lambda f=f, flags=flags: client.lopen(f, flags)) == err, name
        assert client.getattr(client.walk_path(root, "null")).rdev == os.makedev(1, 3)
    finally:
        s.close()


# -- read-only ------------------------------------------------------------------------------


def test_read_only_mount_refuses_every_change_with_erofs(tree: Tree, connect: Callable[..., Client]) -> None:
    g = Gofer(tree.root, read_only=True)
    before = {p: (p.lstat().st_mode, p.lstat().st_mtime_ns) for p in tree.root.rglob("*")}
    try:
        c = connect(g)
        root = attach(c)
        f = c.walk_path(root, "hello.txt")
        sub = c.walk_path(root, "sub")
        calls: dict[str, Callable[[], object]] = {
            "lopen-w": lambda: c.lopen(c.walk_path(root, "hello.txt"), WRONLY),
            "lopen-rw": lambda: c.lopen(c.walk_path(root, "hello.txt"), RDWR),
            "lopen-trunc": lambda: c.lopen(c.walk_path(root, "hello.txt"), RDONLY | m.DOTL_TRUNC),
            "lcreate": lambda: c.lcreate(c.clone(root), "n", WRONLY, 0o644),
            "mkdir": lambda: c.mkdir(root, "n", 0o755),
            "mknod": lambda: c.mknod(root, "n", stat.S_IFREG | 0o644),
            "symlink": lambda: c.symlink(root, "n", "x"),
            "link": lambda: c.link(root, f, "n"),
            "rename": lambda: c.rename(f, sub, "n"),
            "renameat": lambda: c.renameat(root, "hello.txt", root, "n"),
            "unlinkat": lambda: c.unlinkat(root, "hello.txt"),
            "remove": lambda: c.remove(c.walk_path(root, "hello.txt")),
            "setattr-mode": lambda: c.setattr(f, m.SETATTR_MODE, mode=0o777),
            "setattr-size": lambda: c.setattr(f, m.SETATTR_SIZE, size=0),
            "setattr-time": lambda: c.setattr(f, m.SETATTR_MTIME),
            "xattrcreate": lambda: c.xattrcreate(c.clone(f), "user.x", 1),
        }
        for what, call in calls.items():
            assert errno_of(call) == errno.EROFS, what
        assert read_file(c, root, "hello.txt") == b"hello world\n"
        d = c.walk_path(root, "sub")
        c.lopen(d, RDONLY)
        assert c.readdir_all(d)
    finally:
        g.close()
    after = {p: (p.lstat().st_mode, p.lstat().st_mtime_ns) for p in tree.root.rglob("*")}
    assert after == before


# -- internal mode, descriptors -------------------------------------------------------------


def test_serve_fd_on_a_socketpair(tree: Tree) -> None:
    a, b = socket.socketpair()
    conn = serve_fd(tree.root, a.detach(), read_only=True)
    try:
        with Client(b, timeout=10) as c:
            c.version()
            root = attach(c)
            assert read_file(c, root, "sub/inner.txt") == b"inner\n"
            assert errno_of(lambda: c.mkdir(root, "x", 0o755)) == errno.EROFS
        assert conn.wait(5)  # the peer closed: the channel ends
    finally:
        conn.gofer.close()


def test_clunk_and_close_release_every_descriptor(tree: Tree, gofer: Gofer) -> None:
    base = open_fds()
    a, b = socket.socketpair()
    conn = gofer.start(a)
    c = Client(b, timeout=10)
    c.version()
    root = attach(c)
    fids = [c.walk_path(root, "sub/deeper/x") for _ in range(50)]
    for f in fids[:25]:
        c.lopen(f, RDONLY)
    assert open_fds() >= base + 75
    for f in fids[:10]:
        c.clunk(f)
    c.close()  # the rest go with the channel
    assert conn.wait(5)
    assert open_fds() <= base


def test_gofer_refuses_a_missing_root(tmp_path: Path) -> None:
    from pyrunsc.core.errors import ConfigError

    with pytest.raises(ConfigError, match="no such folder"):
        Gofer(tmp_path / "nope")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a folder"):
        Gofer(tmp_path / "file")


def test_nofid_is_never_a_valid_fid(client: Client) -> None:
    assert errno_of(lambda: client.getattr(NOFID)) == errno.EBADF
