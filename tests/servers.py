"""A real uvicorn server for an app, on a loopback port, in a thread of the test process."""
import threading
import time
from contextlib import contextmanager

from memorize.local_server import free_port


@contextmanager
def serving(app):
    """Yield the server's root URL (http://127.0.0.1:PORT); stop it at exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                          timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
