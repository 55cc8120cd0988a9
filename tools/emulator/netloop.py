"""One network thread for every emulated meter's MQTT connection.

paho's own loop (loop_start: a thread per client) waits in select(), which takes no file
descriptor above 1023: with a socket and a wake-up socket pair per client, a process
stalls at about 250 meters (their CONNACKs are never read). A thousand threads that each
wake every second also cost more than the firmware they serve. So a Fleet runs one
NetLoop: an epoll selector over all the clients' sockets, driving paho through its
external-loop interface (loop_read, loop_write, loop_misc and the socket callbacks).

paho calls the socket callbacks from whichever thread touches the client (a meter's
step publishing, the loop reading); the selector is changed under a lock, and the loop
is woken by a socket pair when a client has something to write.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time

import paho.mqtt.client as paho

log = logging.getLogger("aquafog.emulator.net")

MISC_EVERY_S = 1.0  # keepalive pings and timeouts of every client (loop_misc)


class NetLoop:
    def __init__(self, name: str = "emulator-net"):
        self.name = name
        # reentrant: a dropped paho client closes its socket from __del__ (on_socket_close), which
        # the garbage collector may run on a thread that holds the lock already
        self._lock = threading.RLock()
        self._clients: dict[paho.Client, socket.socket] = {}
        self._thread: threading.Thread | None = None
        self._running = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "NetLoop":
        """Start the thread (again after stop(): the selector and the wake-up pair are new)."""
        if self._thread is None:
            self._sel = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._sel.register(self._wake_r, selectors.EVENT_READ, None)
            self._running = True
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and close the selector (the clients' own sockets are theirs)."""
        if self._thread is None:
            return
        self._running = False
        self._wake()
        self._thread.join(timeout=10)
        self._thread = None
        with self._lock:
            self._clients.clear()
            self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- clients ---------------------------------------------------------------------------
    def attach(self, c: paho.Client) -> None:
        """Before c.connect(): its socket is served by this loop from then on."""
        c.on_socket_open = self._opened
        c.on_socket_close = self._closed
        c.on_socket_register_write = self._want_write
        c.on_socket_unregister_write = self._written

    def forget(self, c: paho.Client) -> None:
        """Stop serving c (before its socket is closed by someone other than paho)."""
        with self._lock:
            sock = self._clients.pop(c, None)
            if sock is not None:
                self._unregister(sock)

    def _opened(self, c, _userdata, sock) -> None:
        if self._thread is None:
            raise RuntimeError("the network loop is not running (Fleet.start)")
        with self._lock:
            old = self._clients.pop(c, None)
            if old is not None:
                self._unregister(old)
            self._clients[c] = sock
            self._sel.register(sock, selectors.EVENT_READ, c)

    def _closed(self, c, _userdata, sock) -> None:
        with self._lock:
            if self._clients.get(c) is sock:
                del self._clients[c]
            self._unregister(sock)

    def _want_write(self, c, _userdata, sock) -> None:
        self._modify(c, sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        self._wake()

    def _written(self, c, _userdata, sock) -> None:
        # paho clears its "registered" flag before calling this; a packet queued by another
        # thread after loop_write's last look, while the flag was still set, asked for nothing
        # (the race of paho's external-loop interface): keep writing while there is any
        self._modify(c, sock, selectors.EVENT_READ | selectors.EVENT_WRITE if c.want_write() else selectors.EVENT_READ)

    def _modify(self, c, sock, events: int) -> None:
        with self._lock:
            if self._clients.get(c) is sock:
                try:
                    self._sel.modify(sock, events, c)
                except (KeyError, ValueError, OSError):
                    pass  # closed meanwhile

    def _unregister(self, sock) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_EVERY_S
        while self._running:
            try:
                events = self._sel.select(timeout=max(0.0, next_misc - time.monotonic()))
            except (OSError, ValueError):  # a socket closed under the selector: look again
                events = []
            for key, mask in events:
                c = key.data
                if c is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        c.loop_read()
                        sock = c.socket()
                        # TLS: bytes already decrypted into the SSL object wake no selector
                        while sock is not None and getattr(sock, "pending", None) and sock.pending():
                            c.loop_read()
                            sock = c.socket()
                    if mask & selectors.EVENT_WRITE:
                        c.loop_write()
                        if not c.want_write():
                            # paho tells us only when its "registered" flag flips: after the race
                            # in _written the flag is already down, and the socket would stay
                            # selected for writing with nothing to write (a busy loop)
                            self._modify(c, key.fileobj, selectors.EVENT_READ)
                            if c.want_write():  # queued meanwhile: its wake-up may have come first
                                self._modify(c, key.fileobj, selectors.EVENT_READ | selectors.EVENT_WRITE)
                except Exception:  # one client's trouble must not stop the others
                    log.exception("network loop: a client failed")
            now = time.monotonic()
            if now >= next_misc:
                next_misc = now + MISC_EVERY_S
                with self._lock:
                    clients = list(self._clients)
                for c in clients:
                    try:
                        c.loop_misc()
                        if c.want_write():  # a wake-up lost to the race above: at most a second late
                            c.loop_write()
                    except Exception:
                        log.exception("network loop: a client's keepalive failed")
