"""Drives the chat page in headless Chromium, through its inputs and buttons.

Two users connect, exchange messages (Enter and the Send button), see each other's
join and leave lines and each other in the page's online list, send a direct
message from the page's To field; a message with <b> markup shows as literal
text; Alice's connection is cut on the server's side (her page goes through a TCP
proxy the test controls): her page says so, reconnects by itself and shows the
lines Bob sent meanwhile, once; a taken name is refused with its reason; and when
the server stops, the page says "Server closed the connection".

With --nodes 2, the chat runs on two nodes over a redis-server started for the
test: Alice's page is on one node and Bob's on the other, and everything above
still holds (the taken name is refused by Bob's node, where Alice is not).

Usage: python chat_page.py path/to/chinwag [--runtime tokio|async-std] [--nodes 1|2] [--screenshot PNG]
"""

import argparse
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int) -> None:
    # Generous: on a loaded two-core CI machine a process can take seconds to start.
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Proxy:
    """A TCP proxy to a local port whose connections the test can cut, as a server
    or a load balancer dropping them would."""

    def __init__(self, target: int):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Closes every connection through the proxy, both ways; it keeps accepting."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()
        self.cut()


def browser(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1200,900",
    ]:
        options.add_argument(flag)
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=options)


def lines(driver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]


def wait_line(driver, expected: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: expected in lines(d))
    except Exception:
        raise AssertionError(f"never saw {expected!r}; saw {lines(driver)}") from None


def status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def online(driver) -> list[str]:
    return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#online li")]


def wait_online(driver, expected: list[str]) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: online(d) == expected)
    except Exception:
        raise AssertionError(f"online list never became {expected}; it is {online(driver)}") from None


def ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/ready", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(admin_port: int) -> None:
    deadline = time.time() + WAIT
    while not ready(admin_port):
        if time.time() > deadline:
            raise RuntimeError(f"the node with admin port {admin_port} did not get ready")
        time.sleep(0.05)


def metric(admin_port: int, name: str) -> float:
    """A metric's value from the server's admin listener."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=WAIT) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def connect(driver, url: str, name: str, age: str = "") -> None:
    driver.get(url)
    driver.find_element(By.ID, "name").send_keys(name)
    if age:
        driver.find_element(By.ID, "age").send_keys(age)
    driver.find_element(By.ID, "connect").click()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--runtime", default="tokio")
    parser.add_argument("--nodes", type=int, default=1, choices=[1, 2])
    parser.add_argument("--screenshot")
    args = parser.parse_args()

    redis, bus = None, []
    if args.nodes > 1:
        redis_port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(redis_port)
        bus = ["--bus", f"redis://127.0.0.1:{redis_port}"]
    nodes = []  # (process, public port, admin port)
    for _ in range(args.nodes):
        port, admin = free_port(), free_port()
        process = subprocess.Popen(
            [args.binary, "--addr", f"127.0.0.1:{port}", "--admin-addr", f"127.0.0.1:{admin}", "--runtime", args.runtime]
            + bus,
            stderr=subprocess.PIPE, text=True,
        )
        nodes.append((process, port, admin))
    # Alice on the first node, through a proxy that can cut her connection; Bob on
    # the last node (the same one when there is one).
    proxy = Proxy(nodes[0][1])
    url = f"http://127.0.0.1:{proxy.port}/"
    bob_url = f"http://127.0.0.1:{nodes[-1][1]}/"
    server = nodes[0][0]
    profiles = [tempfile.mkdtemp(prefix="chinwag-chrome-") for _ in range(2)]
    drivers = []
    try:
        for _, port, admin in nodes:
            wait_for_port(port)
            wait_ready(admin)
        alice, bob = browser(profiles[0]), browser(profiles[1])
        drivers = [alice, bob]

        connect(alice, url, "Alice", "30")
        WebDriverWait(alice, WAIT).until(lambda d: status(d) == "connected as Alice")
        wait_line(alice, "Hi Alice! You have successfully connected to the chat")
        wait_line(alice, "Alice with age 30 connected to chat")

        connect(bob, bob_url, "Bob")
        wait_line(bob, "Hi Bob! You have successfully connected to the chat")
        wait_line(alice, "Bob connected to chat")
        # The online list follows, on both pages.
        wait_online(alice, ["Alice", "Bob"])
        wait_online(bob, ["Alice", "Bob"])

        # Chromium offers permessage-deflate and the chat accepts it by default: the
        # page's socket says so, and so does the server's metric.
        for d in drivers:
            extensions = d.execute_script("return ws.extensions")
            assert extensions.startswith("permessage-deflate"), f"not compressed: {extensions!r}"
            assert "server_no_context_takeover" in extensions, extensions
        compressed = sum(metric(admin, "chinwag_connections_compressed_total") for _, _, admin in nodes)
        assert compressed == 2, f"the servers counted {compressed} compressed, not 2"

        # Enter sends.
        alice.find_element(By.ID, "message").send_keys("hello Bob" + Keys.ENTER)
        wait_line(bob, "Alice: hello Bob")
        wait_line(alice, "Alice: hello Bob")

        # Markup is shown as text, never rendered.
        bob.find_element(By.ID, "message").send_keys("<b>bold?</b> <img src=x onerror=alert(1)>")
        bob.find_element(By.ID, "send").click()
        wait_line(alice, "Bob: <b>bold?</b> <img src=x onerror=alert(1)>")
        for d in drivers:
            assert not d.find_elements(By.CSS_SELECTOR, "#messages b, #messages img"), "markup was rendered"

        # A direct message from the To field reaches only Bob (and Alice's own copy).
        alice.find_element(By.ID, "to").send_keys("Bob")
        alice.find_element(By.ID, "message").send_keys("psst" + Keys.ENTER)
        wait_line(bob, "Alice -> Bob: psst")
        wait_line(alice, "Alice -> Bob: psst")
        alice.find_element(By.ID, "to").clear()

        # Both in #dev, from the side panel.
        for d, name in ((alice, "Alice"), (bob, "Bob")):
            d.find_element(By.ID, "room").send_keys("dev")
            d.find_element(By.ID, "join").click()
            wait_line(d, name + " joined #dev")
            d.find_element(By.ID, "room").clear()
        wait_line(alice, "Bob joined #dev")

        # Alice's connection is cut on the server's side: her page says so,
        # reconnects by itself, and shows what Bob said meanwhile, once, in the
        # main chat and in #dev (which it joins again).
        proxy.cut()
        wait_line(alice, "Connection lost")
        wait_line(bob, "Alice left the chat")
        bob.find_element(By.ID, "message").send_keys("while you were away" + Keys.ENTER)
        wait_line(bob, "Bob: while you were away")
        bob.find_element(By.ID, "to").send_keys("#dev")
        bob.find_element(By.ID, "message").send_keys("dev while away" + Keys.ENTER)
        wait_line(bob, "#dev Bob: dev while away")
        bob.find_element(By.ID, "to").clear()
        wait_line(alice, "Bob: while you were away")
        wait_line(alice, "#dev Bob: dev while away")
        assert lines(alice).count("#dev Bob: dev while away") == 1, lines(alice)
        wait_line(alice, "Reconnected")
        WebDriverWait(alice, WAIT).until(lambda d: status(d) == "connected as Alice")
        assert lines(alice).count("Bob: while you were away") == 1, lines(alice)
        assert lines(alice).count("Alice: hello Bob") == 1, "a line seen before the cut came again"
        wait_online(alice, ["Alice", "Bob"])

        # Rooms from the side panel.
        bob.find_element(By.ID, "room").send_keys("ops")
        bob.find_element(By.ID, "join").click()
        wait_line(bob, "Bob joined #ops")
        assert "Bob joined #ops" not in lines(alice), "room lines stay in the room"

        # Bob leaves with the Disconnect button.
        bob.find_element(By.ID, "disconnect").click()
        wait_line(bob, "You left the chat")
        wait_line(alice, "Bob left the chat")
        wait_online(alice, ["Alice"])

        # A taken name is refused, and the page says why (on two nodes, by the
        # node Alice is not on).
        connect(bob, bob_url, "Alice")
        wait_line(bob, "Could not connect: Alice is already in the chat; choose another name")

        if args.screenshot:
            pathlib.Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            alice.save_screenshot(args.screenshot)

        # The server goes away: the page says so.
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=WAIT)
        wait_line(alice, "Server closed the connection")
        WebDriverWait(alice, WAIT).until(lambda d: status(d) == "connection closed")
        print(f"browser test passed ({args.runtime}, {args.nodes} node{'s' if args.nodes > 1 else ''})")
        return 0
    finally:
        for d in drivers:
            d.quit()
        proxy.close()
        for process, _, _ in nodes:
            if process.poll() is None:
                process.kill()
            process.wait()
        if redis is not None:
            redis.kill()
            redis.wait()
        for p in profiles:
            shutil.rmtree(p, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
