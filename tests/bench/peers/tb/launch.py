"""Start ThingsBoard IoT Gateway for the benchmark, stock or with PEERS fixes.

usage: python launch.py stock|fixed   (TB_GW_CONFIG_DIR names the configuration directory)

"fixed" changes one thing in the running gateway, nothing on disk: the socket connector's
converter thread sleeps 0.2 s after every datagram (about 5 datagrams/s get through); here
it instead waits on its queue, so it works as soon as a datagram is queued and sleeps when
none is. The other fix (a receive buffer large enough for a PUSH_DATA) is the configuration
key `buffer_size` in socket-fixed.json; the stock file uses the documented `bufferSize`,
which the connector does not read (it then reads 1 024 bytes of each datagram).
"""

import sys
import threading
import time


def patch_socket_connector() -> None:
    """Make the converter thread wait on its queue instead of sleeping 0.2 s per datagram.

    The connector module is loaded from its file by the gateway's module loader (not through
    the package import), and binds `from time import sleep` when loaded: so the patch goes on
    `time.sleep` and `queue.Queue.empty` before the gateway starts, and acts only in the
    thread the connector names "Converter Thread".
    """
    import queue

    real_sleep = time.sleep
    real_empty = queue.Queue.empty

    def in_converter() -> bool:
        return threading.current_thread().name == "Converter Thread"

    def sleep(seconds: float) -> None:
        if seconds == 0.2 and in_converter():
            return  # the queue wait below replaces the poll interval
        real_sleep(seconds)

    def empty(self: queue.Queue) -> bool:  # type: ignore[type-arg]
        if not in_converter():
            return real_empty(self)
        # The converter loop asks `if not empty(): get()`: block here up to 0.2 s for an item.
        with self.not_empty:
            self.not_empty.wait_for(self._qsize, timeout=0.2)
            return not self._qsize()

    time.sleep = sleep
    queue.Queue.empty = empty  # type: ignore[method-assign]


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "fixed":
        patch_socket_connector()
    elif mode != "stock":
        raise SystemExit("usage: launch.py stock|fixed")
    sys.argv = sys.argv[:1]
    from thingsboard_gateway import tb_gateway

    tb_gateway.main()
