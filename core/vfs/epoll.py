"""epoll instances (Linux ``fs/eventpoll.c``, epoll(7); gVisor
``fsimpl/eventpoll`` / ``kernel/epoll``).

An epoll instance is a file description (``anon_inode:[eventpoll]``) whose
:class:`EpollOps` holds the watched items, one per (file description, fd)
pair (Linux ``struct epitem``), and a ready list (``rdllist``).

- An item whose file has wait queues (pipes, eventfds) hangs on them: a
  change of the file calls :meth:`EpollItem.wake` (Linux
  ``ep_poll_callback``), which puts the item on the ready list when the
  events that happened are among those watched. Collecting events
  (:meth:`EpollOps.collect`, Linux ``ep_send_events``) looks at each ready
  item's readiness again: level-triggered items that are still ready go back
  on the list, edge-triggered ones (EPOLLET) wait for the next wake-up,
  EPOLLONESHOT items are disarmed until EPOLL_CTL_MOD.
- An item whose changes cannot be heard of (a host fd, a pty, a nested
  epoll) stays on the ready list and its readiness is looked at on every
  collection; with EPOLLET it is reported when an event appears that was
  not there the last time.
- The last close of a watched file removes it from every epoll (Linux
  ``eventpoll_release``); closing one fd of a file that is still open
  elsewhere does not. Closing the epoll frees its items (``ep_free``).
- Adding an epoll to another may not make a loop or nest more than
  :data:`EP_MAX_NESTS` deep (ELOOP, Linux ``ep_loop_check``).

EPOLLEXCLUSIVE is accepted and checked as Linux does, but has no effect: only
one task ever runs at a time and each retries its own call. EPOLLWAKEUP is
accepted and ignored.
"""

from __future__ import annotations

import errno
import os
import struct

from ..errors import SyscallError
from .anon import anon_file
from .file import FileDescription, FileOps
from .poll import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDNORM, WaitQueue

EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
#: Bits that say how, not what (Linux ``EP_PRIVATE_BITS``).
EP_PRIVATE_BITS = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE
#: What EPOLLEXCLUSIVE may come with (Linux ``EPOLLEXCLUSIVE_OK_BITS``).
EPOLLEXCLUSIVE_OK_BITS = EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE
#: How deep epolls may nest (Linux ``EP_MAX_NESTS``).
EP_MAX_NESTS = 4
#: ``struct epoll_event`` on x86-64: packed u32 events, u64 data.
EPOLL_EVENT = struct.Struct("<IQ")
#: Linux ``EP_MAX_EVENTS``: INT_MAX / sizeof(struct epoll_event).
EP_MAX_EVENTS = 0x7FFFFFFF // EPOLL_EVENT.size
EPOLL_CLOEXEC = os.O_CLOEXEC


class EpollItem:
    """One watched (file description, fd) in one epoll (Linux ``struct
    epitem``): the ``events`` watched (with EPOLLERR and EPOLLHUP, and the
    EPOLLET/EPOLLONESHOT bits) and the user's ``data``."""

    def __init__(self, ep: EpollOps, desc: FileDescription, fd: int, events: int, data: int) -> None:
        self.ep = ep
        self.desc = desc
        self.fd = fd
        self.events = events
        self.data = data
        #: The file's wait queues; None when its changes cannot be heard of
        #: and it is looked at on every collection instead.
        self.queues = desc.ops.wait_queues(desc)
        #: For such a file with EPOLLET: the events seen at the last look.
        self.last = 0

    @property
    def polled(self) -> bool:
        return self.queues is None

    @property
    def armed(self) -> bool:
        """False once an EPOLLONESHOT item has reported, until EPOLL_CTL_MOD."""
        return bool(self.events & ~EP_PRIVATE_BITS)

    def poll(self) -> int:
        """The watched events the file has now (Linux ``ep_item_poll``)."""
        return self.desc.ops.readiness(self.desc) & self.events

    def pending(self) -> int:
        """What a collection would report now (edge-triggered polled items:
        only events not seen the last time)."""
        rev = self.poll()
        if self.polled and self.events & EPOLLET:
            rev &= ~self.last
        return rev

    def wake(self, events: int) -> None:
        """Linux ``ep_poll_callback``: the file had ``events`` (0: anything);
        a disarmed item, or one not watching those events, ignores it."""
        if not self.armed or (events and not events & self.events):
            return
        self.ep.ready.setdefault(self, None)

    def file_released(self, desc: FileDescription) -> None:
        """The watched file's last reference went (Linux ``eventpoll_release``)."""
        self.ep.remove(self)


class EpollOps(FileOps):
    """An epoll instance (Linux ``struct eventpoll``). ``items`` by (file
    description, fd); ``ready`` the ready list, in order (a dict used as an
    ordered set). Readable (EPOLLIN) while an item has events to report."""

    seekable = False
    pollable = True
    touch_atime = False

    def __init__(self) -> None:
        self.items: dict[tuple[FileDescription, int], EpollItem] = {}
        self.ready: dict[EpollItem, None] = {}
        #: Epolls that watch this one, with how many items they do it by
        #: (Linux ``ep->refs`` of the epoll's file), for the nesting check.
        self.parents: dict[EpollOps, int] = {}

    # epoll_ctl.

    def find(self, desc: FileDescription, fd: int) -> EpollItem | None:
        return self.items.get((desc, fd))

    def insert(self, desc: FileDescription, fd: int, events: int, data: int) -> None:
        """EPOLL_CTL_ADD of a new item (Linux ``ep_insert``); ready at once
        when the file already has a watched event."""
        item = EpollItem(self, desc, fd, events | EPOLLERR | EPOLLHUP, data)
        self.items[(desc, fd)] = item
        for q in item.queues or ():
            q.add(item)
        desc.add_release_hook(item, item.file_released)
        child = desc.ops
        if isinstance(child, EpollOps):
            child.parents[self] = child.parents.get(self, 0) + 1
        if item.polled or item.poll():
            self.ready.setdefault(item, None)

    def modify(self, item: EpollItem, events: int, data: int) -> None:
        """EPOLL_CTL_MOD (Linux ``ep_modify``): new events and data; ready at
        once when the file has one of the new events. It re-arms an
        EPOLLONESHOT item."""
        item.events = events | EPOLLERR | EPOLLHUP
        item.data = data
        item.last = 0
        if item.polled or item.poll():
            self.ready.setdefault(item, None)

    def remove(self, item: EpollItem) -> None:
        """EPOLL_CTL_DEL, or the watched file's last close (Linux ``ep_remove``)."""
        if self.items.get((item.desc, item.fd)) is not item:
            return
        del self.items[(item.desc, item.fd)]
        self.ready.pop(item, None)
        for q in item.queues or ():
            q.remove(item)
        item.desc.remove_release_hook(item)
        child = item.desc.ops
        if isinstance(child, EpollOps):
            n = child.parents.get(self, 0) - 1
            if n > 0:
                child.parents[self] = n
            else:
                child.parents.pop(self, None)

    def would_loop(self, target: EpollOps) -> bool:
        """Whether adding ``target`` here makes a loop, or a chain of epolls
        deeper than EP_MAX_NESTS counting those above this one (Linux
        ``ep_loop_check``: ``ep_loop_check_proc`` and
        ``ep_get_upwards_depth_proc``)."""
        down: dict[EpollOps, int] = {}

        def depth(ep: EpollOps, level: int) -> int:
            if ep in down:
                return down[ep]
            result = 0
            for item in ep.items.values():
                child = item.desc.ops
                if isinstance(child, EpollOps):
                    if child is self or level > EP_MAX_NESTS:
                        result = EP_MAX_NESTS + 1
                    else:
                        result = max(result, depth(child, level + 1) + 1)
                    if result > EP_MAX_NESTS:
                        break
            down[ep] = result
            return result

        up: dict[EpollOps, int] = {}

        def upwards(ep: EpollOps) -> int:
            if ep not in up:
                up[ep] = 0
                up[ep] = max((upwards(parent) + 1 for parent in ep.parents), default=0)
            return up[ep]

        d = depth(target, 0)
        return d > EP_MAX_NESTS or d + 1 + upwards(self) > EP_MAX_NESTS

    # epoll_wait.

    def collect(self, maxevents: int) -> list[tuple[int, int]]:
        """Up to ``maxevents`` (events, data) pairs for epoll_wait (Linux
        ``ep_send_events``): each ready item's events are looked at again;
        level-triggered items still ready go back at the end of the list,
        EPOLLONESHOT items are disarmed, and what is left for a later call
        keeps its place at the front."""
        out: list[tuple[int, int]] = []
        batch = list(self.ready)
        self.ready.clear()
        again: list[EpollItem] = []
        left: list[EpollItem] = []
        for i, item in enumerate(batch):
            if len(out) >= maxevents:
                left = batch[i:]
                break
            rev = item.poll()
            if item.polled and item.events & EPOLLET:
                edge = rev & ~item.last
                item.last = rev
                if not edge:
                    rev = 0
            if not rev:
                if item.polled and item.armed:
                    again.append(item)
                continue
            out.append((rev, item.data))
            if item.events & EPOLLONESHOT:
                item.events &= EP_PRIVATE_BITS
            elif item.polled or not item.events & EPOLLET:
                again.append(item)
        for item in left + again:
            self.ready.setdefault(item, None)
        return out

    def readiness(self, fd: FileDescription) -> int:
        """Linux ``ep_eventpoll_poll``: EPOLLIN|EPOLLRDNORM while a ready item
        has events to report; items that turn out not to be ready leave the
        list (a wake-up will bring them back)."""
        for item in list(self.ready):
            if item.pending():
                return EPOLLIN | EPOLLRDNORM
            if not item.polled:
                del self.ready[item]
        return 0

    def host_waits(self, fd: FileDescription, events: int) -> dict[int, int]:
        """The host fds of the items that mirror host files, for their events.
        An edge-triggered one waits only for events it does not have now:
        those it has were reported (or will be at once), and a host poll for
        them would return at once and spin. What it no longer has is
        forgotten, so that its return is an edge."""
        out: dict[int, int] = {}
        for item in self.items.values():
            if not (item.polled and item.armed):
                continue
            want = item.events & ~EP_PRIVATE_BITS
            if item.events & EPOLLET:
                now = item.poll()
                item.last &= now
                if now & (EPOLLERR | EPOLLHUP):
                    continue  # a host poll always reports these: it could only spin
                want &= ~now
            for hfd, ev in item.desc.ops.host_waits(item.desc, want).items():
                out[hfd] = out.get(hfd, 0) | ev
        return out

    def wait_queues(self, fd: FileDescription) -> tuple[WaitQueue, ...] | None:
        return None

    def size(self, fd: FileDescription) -> int:
        raise SyscallError(errno.ESPIPE)

    def release(self, fd: FileDescription) -> None:
        """The epoll's last close frees its items (Linux ``ep_free``)."""
        for item in list(self.items.values()):
            self.remove(item)

    def fsync(self, fd: FileDescription) -> None:
        raise SyscallError(errno.EINVAL)


def new_epoll(flags: int) -> FileDescription:
    """epoll_create1(2)'s file; ``flags`` may hold EPOLL_CLOEXEC only (the FD
    table's), anything else is EINVAL."""
    if flags & ~EPOLL_CLOEXEC:
        raise SyscallError(errno.EINVAL)
    ops = EpollOps()
    return anon_file("eventpoll", os.O_RDWR, lambda fd: ops)
