#!/usr/bin/env python3
"""An event handler for the chinwag gateway's Redis bus, in Python.

The handlers below are written as the socket gateway document writes them: each
gets a message `msg` and reads `msg.context.headers.jwt.preferred_username` (the
user, from the verified token), `msg.context.params.namespace` (the tenant) and
`msg.message` (what the client sent), and answers with `msg.reply(payload)` or
`msg.fail(payload)`. The `Message` class turns the gateway's events into such
messages and their answers into the envelopes the README describes (section
"The Redis bus"); a handler in the document's style runs on it unchanged.

What this example does:

- connect (socket:connection): replies {"hello": user}. It fails a user named
  "mallory", and, with --members, a user who is not a member of the namespace
  asked for: a failed connect closes the connection (1008). A gateway with
  `socket.onconnect.approve: true` admits a connection only on this reply, so
  the members table then decides who may join which namespace;
- typed messages: socket:type_one replies {"echo": payload};
  socket:type_two fails with {"message": "nope"} (the connection stays open);
- every message (socket:generalMessage): a message of type "tell" with
  {"to": user, "text": ...} is sent to every connection of that user in the same
  namespace, on whichever gateway node it is; type "announce" with {"text": ...}
  is broadcast to the sender's namespace;
- close (socket:close): logged.

Run it beside `chinwag gateway` (any number of nodes on the same Redis):

    python3 examples/gateway-handler/handler.py --redis redis://127.0.0.1:6379 \
        --members acme=alex,bob --members globex=eve

It needs the `redis` package (pip install redis). It prints "ready" once
subscribed, one line per event to standard error, and reconnects if Redis
restarts. Topic names are the ones in conf/socket.yaml; change them with the
options below to match another configuration.
"""

import argparse
import json
import sys
import time

import redis


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


class Fields(dict):
    """A JSON object whose members read as attributes, as the document's handlers
    read them (`msg.context.params.namespace`); a missing member reads as None."""

    def __getattr__(self, name):
        return wrap(self.get(name))


def wrap(value):
    return Fields(value) if isinstance(value, dict) else value


class Message:
    """One event from the gateway, with the document's `reply` and `fail`."""

    def __init__(self, bus, event):
        self._bus = bus
        self._reply_to = event["reply_to"]
        self.event = event["event"]
        self.context = wrap(event["context"])
        self.message = wrap(event.get("message"))
        self.closed = wrap(event.get("closed"))

    def reply(self, payload):
        """Answers the client the event came from (its node routes it); a reply
        to a connect event admits a connection that waits for approval."""
        self._answer({"reply_to": self._reply_to, "reply": payload})

    def fail(self, payload):
        """Fails the event: an error to the client (closed, if it was connect)."""
        self._answer({"reply_to": self._reply_to, "fail": payload})

    def _answer(self, envelope):
        self._bus.publish("chinwag:reply:" + self._reply_to["node"], json.dumps(envelope))


class Gateway:
    """Sends and broadcasts, on any node."""

    def __init__(self, bus, topics):
        self.bus = bus
        self.topics = topics

    def send(self, username, namespace, message_type, payload):
        """To every connection of a user in a namespace, on any node."""
        envelope = {"username": username, "namespace": namespace, "type": message_type, "payload": payload}
        self.bus.publish(self.topics.send, json.dumps(envelope))

    def broadcast(self, namespace, message_type, payload):
        """To every connection in a namespace (None: everyone), on every node."""
        envelope = {"namespace": namespace, "type": message_type, "payload": payload}
        self.bus.publish(self.topics.broadcast, json.dumps(envelope))


class Members:
    """Who may join which namespace (--members NAMESPACE=USER,USER). A namespace
    that is not listed is open to every user."""

    def __init__(self, entries):
        self.by_namespace = {}
        for entry in entries:
            namespace, _, users = entry.partition("=")
            self.by_namespace.setdefault(namespace, set()).update(u for u in users.split(",") if u)

    def allows(self, user, namespace):
        return namespace not in self.by_namespace or user in self.by_namespace[namespace]


# -- the handlers, in the gateway document's style ---------------------------------


def on_connect(msg, members):
    user = msg.context.headers.jwt.preferred_username
    namespace = msg.context.params.namespace
    if user == "mallory":
        msg.fail({"message": "not you"})
    elif not members.allows(user, namespace):
        msg.fail({"message": f"{user} is not a member of {namespace}"})
    else:
        msg.reply({"hello": user})


def on_type_one(msg):
    msg.reply({"echo": msg.message.payload})


def on_type_two(msg):
    msg.fail({"message": "nope"})


def on_message(msg, gateway):
    user = msg.context.headers.jwt.preferred_username
    namespace = msg.context.params.namespace
    payload = msg.message.payload
    if msg.message.type == "tell" and isinstance(payload, dict) and "to" in payload:
        gateway.send(payload["to"], namespace, "told", {"from": user, "text": payload.get("text")})
    elif msg.message.type == "announce" and isinstance(payload, dict):
        gateway.broadcast(namespace, "announcement", {"from": user, "text": payload.get("text")})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="the gateway's bus")
    parser.add_argument("--connect", default="socket:connection", help="onconnect.publish")
    parser.add_argument("--general", default="socket:generalMessage", help="onmessage.publish")
    parser.add_argument("--type-one", default="socket:type_one", help="the message_type_one topic")
    parser.add_argument("--type-two", default="socket:type_two", help="the message_type_two topic")
    parser.add_argument("--close", default="socket:close", help="onclose.publish")
    parser.add_argument("--send", default="socket:send", help="send.subscribe")
    parser.add_argument("--broadcast", default="socket:broadcast", help="broadcast.subscribe")
    parser.add_argument("--members", action="append", default=[], metavar="NAMESPACE=USER,USER",
                        help="only these users may join NAMESPACE (repeat for several namespaces)")
    topics = parser.parse_args()
    bus = redis.Redis.from_url(topics.redis)
    gateway = Gateway(bus, topics)
    members = Members(topics.members)
    handlers = {
        topics.connect: lambda msg: on_connect(msg, members),
        topics.type_one: on_type_one,
        topics.type_two: on_type_two,
        topics.general: lambda msg: on_message(msg, gateway),
        topics.close: lambda msg: None,
    }
    listened = list(handlers)
    while True:
        try:
            pubsub = bus.pubsub()
            pubsub.subscribe(*listened)
            # Ready once Redis has confirmed every subscription.
            confirmed = 0
            while confirmed < len(listened):
                reply = pubsub.get_message(timeout=5.0)
                if reply is not None and reply["type"] == "subscribe":
                    confirmed += 1
            print("ready", flush=True)
            for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                topic = message["channel"].decode()
                try:
                    msg = Message(bus, json.loads(message["data"]))
                    user = msg.context.headers.jwt.preferred_username
                    log(f"{topic}: {msg.event} from {user} in {msg.context.params.namespace}")
                    handlers[topic](msg)
                except (ValueError, KeyError, TypeError, AttributeError) as error:
                    log(f"{topic}: unusable event ({error!r}): {message['data'][:200]!r}")
        except redis.ConnectionError as error:
            log(f"redis: {error}; reconnecting in 0.5 s")
            time.sleep(0.5)
        except KeyboardInterrupt:
            return


if __name__ == "__main__":
    main()
