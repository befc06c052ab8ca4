"""The 9P2000.L codec: every message round-trips, known frames match Linux's
wire format byte for byte, and bad bytes raise ProtocolError and nothing else."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyrunsc.plugins.fs_9p.p9 import messages as m
from pyrunsc.plugins.fs_9p.p9.messages import MESSAGES, ProtocolError, Qid, decode, decode_body, encode
from pyrunsc.plugins.fs_9p.p9.transport import FrameReader

# -- strategies built from each class's wire layout ---------------------------------

names = st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape"))
qids = st.builds(Qid, st.integers(0, 0xFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 2**64 - 1))
FIELD: dict[str, st.SearchStrategy[Any]] = {
    "b": st.integers(0, 0xFF),
    "h": st.integers(0, 0xFFFF),
    "i": st.integers(0, 0xFFFFFFFF),
    "q": st.integers(0, 2**64 - 1),
    "Q": qids,
    "s": names,
    "S": st.lists(names, max_size=m.MAXWELEM).map(tuple),
    "W": st.lists(qids, max_size=m.MAXWELEM).map(tuple),
    "D": st.binary(max_size=300),
}


def message_strategy(cls: type[m.Message]) -> st.SearchStrategy[m.Message]:
    return st.builds(cls, *(FIELD[c] for c in cls.fmt))


ALL = sorted(MESSAGES.values(), key=lambda c: c.type)
any_message = st.sampled_from(ALL).flatmap(message_strategy)


def test_every_9p2000l_message_is_defined_with_linux_numbers() -> None:
    expected = {
        "lerror": 6, "statfs": 8, "lopen": 12, "lcreate": 14, "symlink": 16, "mknod": 18, "rename": 20,
        "readlink": 22, "getattr": 24, "setattr": 26, "xattrwalk": 30, "xattrcreate": 32, "readdir": 40,
        "fsync": 50, "lock": 52, "getlock": 54, "link": 70, "mkdir": 72, "renameat": 74, "unlinkat": 76,
        "version": 100, "auth": 102, "attach": 104, "flush": 108, "walk": 110, "read": 116, "write": 118,
        "clunk": 120, "remove": 122,
    }
    by_name = {cls.__name__: cls.type for cls in ALL}
    for op, t in expected.items():
        if op != "lerror":  # Tlerror is not a message; Rlerror is
            assert by_name[f"T{op}"] == t, op
        assert by_name[f"R{op}"] == t + 1, op
    assert len(MESSAGES) == 2 * len(expected) - 1
    for cls in ALL:
        assert issubclass(cls, m.Request if cls.__name__[0] == "T" else m.Response)
        assert len(fields(cls)) == len(cls.fmt)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), tag=st.integers(0, 0xFFFF))
def test_every_message_round_trips(cls: type[m.Message], data: st.DataObject, tag: int) -> None:
    msg = data.draw(message_strategy(cls))
    frame = encode(tag, msg)
    assert struct.unpack_from("<IBH", frame) == (len(frame), cls.type, tag)
    assert decode(frame) == (tag, msg)
    assert decode_body(cls.type, tag, frame[7:]) == msg
    assert msg.encode(tag) == frame


# -- known frames (Linux net/9p/protocol.c layouts) ----------------------------------


def test_known_frames_byte_for_byte() -> None:
    assert encode(m.NOTAG, m.Tversion(8192, "9P2000.L")) == (
        b"\x15\x00\x00\x00" b"\x64" b"\xff\xff" b"\x00\x20\x00\x00" b"\x08\x00" b"9P2000.L"
    )
    assert encode(1, m.Rlerror(2)) == b"\x0b\x00\x00\x00\x07\x01\x00\x02\x00\x00\x00"
    assert encode(3, m.Twalk(1, 2, ("a", "bc"))) == (
        b"\x18\x00\x00\x00\x6e\x03\x00" b"\x01\x00\x00\x00" b"\x02\x00\x00\x00" b"\x02\x00"
        b"\x01\x00a" b"\x02\x00bc"
    )
    assert encode(4, m.Rwalk((Qid(0x80, 1, 2),))) == (
        b"\x16\x00\x00\x00\x6f\x04\x00" b"\x01\x00" b"\x80" b"\x01\x00\x00\x00" b"\x02\x00\x00\x00\x00\x00\x00\x00"
    )
    # Rgetattr: valid[8] qid[13] mode uid gid[4 each] then 15 u64.
    assert len(encode(0, m.Rgetattr(0, Qid(0, 0, 0), *[0] * 18))) == 7 + 8 + 13 + 12 + 15 * 8
    # Tsetattr: fid[4] valid mode uid gid[4 each] size atime mtime [8 each].
    assert len(encode(0, m.Tsetattr(*[0] * 10))) == 7 + 4 + 16 + 5 * 8
    assert encode(9, m.Twrite(7, 10, b"xyz")) == (
        b"\x1a\x00\x00\x00\x76\x09\x00" b"\x07\x00\x00\x00" b"\x0a" + b"\x00" * 7 + b"\x03\x00\x00\x00xyz"
    )
    assert encode(2, m.Tlock(1, 1, 0, 0, 0, 42, "host")) == (
        b"\x2a\x00\x00\x00\x34\x02\x00" b"\x01\x00\x00\x00" b"\x01" b"\x00\x00\x00\x00" + b"\x00" * 16
        + b"\x2a\x00\x00\x00" b"\x04\x00host"
    )


def test_tfsync_without_datasync_as_diod_sends_it() -> None:
    assert decode(b"\x0b\x00\x00\x00\x32\x05\x00\x09\x00\x00\x00") == (5, m.Tfsync(9, 0))
    assert decode(encode(5, m.Tfsync(9, 1))) == (5, m.Tfsync(9, 1))


def test_dirents_round_trip() -> None:
    ents = [m.Dirent(Qid(0x80, 0, 5), 1, 4, "dir"), m.Dirent(Qid(0, 3, 6), 2, 8, "f\udcff")]
    data = m.encode_dirents(ents)
    assert len(data) == m.dirent_size("dir") + m.dirent_size("f\udcff") == 24 + 3 + 24 + 2
    assert m.decode_dirents(data) == ents
    with pytest.raises(ProtocolError):
        m.decode_dirents(data[:-1])


# -- malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame, why",
    [
        (b"", "shorter than"),
        (b"\x07\x00\x00\x00\x64\x00", "shorter than"),
        (b"\x08\x00\x00\x00\x78\x01\x00", "size field"),  # says 8, is 7
        (b"\x07\x00\x00\x00\x78\x01\x00", "body of 0 bytes"),  # Tclunk without its fid
        (b"\x0c\x00\x00\x00\x78\x01\x00\x01\x00\x00\x00\x00", "body of 5 bytes"),  # one byte too many
        (b"\x07\x00\x00\x00\xc8\x01\x00", "unknown message type 200"),
        (b"\x07\x00\x00\x00\x06\x01\x00", "unknown message type 6"),  # Tlerror
        (encode(1, m.Tversion(1, "9P"))[:-1].replace(b"\x0f", b"\x0e", 1), "string of 2 bytes but only 1"),
        (encode(1, m.Rread(b"abc"))[:-1].replace(b"\x0e", b"\x0d", 1), "count 3 but only 2"),
        (encode(1, m.Rclunk()) + b"\x00", "size field"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(frame)


def test_walk_limits_are_enforced_both_ways() -> None:
    with pytest.raises(ProtocolError, match="at most 16"):
        encode(1, m.Twalk(0, 1, tuple("a" * 17)))
    frame = bytearray(encode(1, m.Twalk(0, 1, tuple("a" * 16))))
    frame[15:17] = struct.pack("<H", 17)
    with pytest.raises(ProtocolError, match="17 names"):
        decode(bytes(frame))
    with pytest.raises(ProtocolError, match="at most 16"):
        encode(1, m.Rwalk(tuple(Qid(0, 0, i) for i in range(17))))


@pytest.mark.parametrize(
    "msg",
    [m.Tclunk(-1), m.Tclunk(2**32), m.Tflush(70000), m.Tversion(1, "x" * 65536), m.Tversion(1, "\ud800"),
     m.Rgetattr(0, Qid(0, 0, 2**64), *[0] * 18), m.Tread(1, -5, 1)],
    ids=repr,
)
def test_values_that_do_not_fit_raise_protocol_error(msg: m.Message) -> None:
    with pytest.raises(ProtocolError):
        encode(1, msg)


def test_bad_tag_raises_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        encode(0x10000, m.Rclunk())


def test_protocol_error_carries_tag_and_type() -> None:
    with pytest.raises(ProtocolError) as e:
        decode(b"\x07\x00\x00\x00\x78\x2a\x00")
    assert (e.value.tag, e.value.mtype) == (42, 120)


# -- fuzzing: only ProtocolError, never anything else ----------------------------------

valid_frames = st.tuples(st.integers(0, 0xFFFF), any_message).map(lambda tm: encode(*tm))


def mutate(frame: bytes, data: st.DataObject) -> bytes:
    b = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "grow", "size", "set"]))
        if op == "flip" and b:
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut" and b:
            del b[data.draw(st.integers(0, len(b) - 1)) :]
        elif op == "grow":
            b += data.draw(st.binary(min_size=1, max_size=20))
        elif op == "size" and len(b) >= 4:
            b[0:4] = struct.pack("<I", len(b))  # make the frame length honest again
        elif op == "set" and len(b) > 7:
            i = data.draw(st.integers(7, len(b) - 1))
            b[i] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x10, 0x11]))
    return bytes(b)


def only_protocol_errors(frame: bytes) -> None:
    try:
        tag, msg = decode(frame)
    except ProtocolError:
        return
    # Whatever decodes re-encodes to the same frame (but diod's short Tfsync,
    # which is re-encoded in Linux's form with datasync).
    again = encode(tag, msg)
    assert decode(again) == (tag, msg)
    assert again == frame or (isinstance(msg, m.Tfsync) and len(frame) == 11 and again[11:] == bytes(4))


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(frame: bytes) -> None:
    only_protocol_errors(frame)


@settings(max_examples=3000, deadline=None)
@given(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=120))
def test_fuzz_random_bodies_with_honest_headers(mtype: int, tag: int, body: bytes) -> None:
    only_protocol_errors(struct.pack("<IBH", 7 + len(body), mtype, tag) + body)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_frames, st.data())
def test_fuzz_mutated_valid_frames(frame: bytes, data: st.DataObject) -> None:
    only_protocol_errors(mutate(frame, data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_dirents(data: bytes) -> None:
    try:
        ents = m.decode_dirents(data)
    except ProtocolError:
        return
    assert m.encode_dirents(ents) == data


# -- the frame reader -----------------------------------------------------------------


def feed(chunks: list[bytes], max_size: int = 8192) -> list[Any]:
    """Frames read from a socket fed ``chunks``, then its end; errors as values."""
    a, b = socket.socketpair()

    def writer() -> None:
        for c in chunks:
            a.sendall(c)
        a.close()

    t = threading.Thread(target=writer)
    t.start()
    out: list[Any] = []
    r = FrameReader(b)
    try:
        while True:
            try:
                f = r.read_frame(max_size)
            except ProtocolError as e:
                out.append(e)
                break
            if f is None:
                break
            out.append(f)
    finally:
        t.join()
        b.close()
    return out


def test_frame_reader_splits_a_stream_whatever_the_chunking() -> None:
    frames = [encode(i, m.Tread(i, i * 10, 100)) for i in range(5)] + [encode(9, m.Rread(b"x" * 5000))]
    stream = b"".join(frames)
    for size in (1, 3, 7, 64, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        got = feed(chunks)
        assert [decode_body(t, g, body) for t, g, body in got] == [decode(f)[1] for f in frames]


@pytest.mark.parametrize(
    "chunks, why",
    [
        ([b"\x06\x00\x00\x00\x64\x00"], "outside"),
        ([b"\x00\x00\x00\x00"], "outside"),
        ([b"\xff\xff\xff\xff\x64\x00\x00"], "outside"),
        ([struct.pack("<I", 8193) + b"\x75\x00\x00"], "outside"),
        ([encode(1, m.Tclunk(1))[:9]], "closed inside a frame"),
        ([b"\x0b\x00"], "closed inside a frame"),
    ],
)
def test_frame_reader_refuses_lying_sizes_and_cut_frames(chunks: list[bytes], why: str) -> None:
    got = feed(chunks)
    assert len(got) == 1 and isinstance(got[0], ProtocolError) and why in str(got[0])


def test_frame_reader_clean_end_between_frames() -> None:
    assert feed([]) == []
    assert len(feed([encode(1, m.Rclunk())])) == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_frame_reader_only_protocol_errors(chunks: list[bytes]) -> None:
    for item in feed(chunks, max_size=256):
        if isinstance(item, ProtocolError):
            continue
        mtype, tag, body = item
        assert len(body) <= 256 - 7
        with contextlib.suppress(ProtocolError):
            decode_body(mtype, tag, body)
