#!/usr/bin/env python3
"""An event handler for the chinwag gateway's Redis bus, in Python.

It listens to the gateway's topics on Redis and answers with the envelopes the
README describes (section "The Redis bus"):

- connect (socket:connection): replies {"hello": username}, or fails a user
  named "mallory", which closes her connection;
- typed messages: socket:type_one replies {"echo": payload};
  socket:type_two fails with {"message": "nope"} (the connection stays open);
- every message (socket:generalMessage): a message of type "tell" with
  {"to": user, "text": ...} is sent to every connection of that user in the same
  namespace, on whichever gateway node it is; type "announce" with {"text": ...}
  is broadcast to the sender's namespace;
- close (socket:close): logged.

Run it beside `chinwag gateway` (any number of nodes on the same Redis):

    python3 examples/gateway-handler/handler.py --redis redis://127.0.0.1:6379

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


class Handler:
    def __init__(self, bus, topics):
        self.bus = bus
        self.topics = topics

    # -- the envelopes the gateway reads ------------------------------------
    def reply(self, event, payload):
        """Answers the client the event came from (its node routes it)."""
        self._answer(event, {"reply_to": event["reply_to"], "reply": payload})

    def fail(self, event, payload):
        """Fails the event: an error to the client (closed, if it was connect)."""
        self._answer(event, {"reply_to": event["reply_to"], "fail": payload})

    def _answer(self, event, envelope):
        channel = "chinwag:reply:" + event["reply_to"]["node"]
        self.bus.publish(channel, json.dumps(envelope))

    def send(self, username, namespace, message_type, payload):
        """To every connection of a user in a namespace, on any node."""
        envelope = {"username": username, "namespace": namespace, "type": message_type, "payload": payload}
        self.bus.publish(self.topics.send, json.dumps(envelope))

    def broadcast(self, namespace, message_type, payload):
        """To every connection in a namespace (None: everyone), on every node."""
        envelope = {"namespace": namespace, "type": message_type, "payload": payload}
        self.bus.publish(self.topics.broadcast, json.dumps(envelope))

    # -- what this example does with events ----------------------------------
    def handle(self, topic, event):
        context = event["context"]
        user, namespace = context["username"], context["namespace"]
        log(f"{topic}: {event['event']} from {user} in {namespace} (node {event['reply_to']['node']})")
        if topic == self.topics.connect:
            if user == "mallory":
                self.fail(event, {"message": "not you"})
            else:
                self.reply(event, {"hello": user})
        elif topic == self.topics.type_one:
            self.reply(event, {"echo": event["message"].get("payload")})
        elif topic == self.topics.type_two:
            self.fail(event, {"message": "nope"})
        elif topic == self.topics.general:
            message = event["message"]
            payload = message.get("payload") or {}
            if message["type"] == "tell" and isinstance(payload, dict) and "to" in payload:
                self.send(payload["to"], namespace, "told", {"from": user, "text": payload.get("text")})
            elif message["type"] == "announce" and isinstance(payload, dict):
                self.broadcast(namespace, "announcement", {"from": user, "text": payload.get("text")})


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
    topics = parser.parse_args()
    bus = redis.Redis.from_url(topics.redis)
    handler = Handler(bus, topics)
    listened = [topics.connect, topics.general, topics.type_one, topics.type_two, topics.close]
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
                    event = json.loads(message["data"])
                    handler.handle(topic, event)
                except (ValueError, KeyError, TypeError) as error:
                    log(f"{topic}: unusable event ({error!r}): {message['data'][:200]!r}")
        except redis.ConnectionError as error:
            log(f"redis: {error}; reconnecting in 0.5 s")
            time.sleep(0.5)
        except KeyboardInterrupt:
            return


if __name__ == "__main__":
    main()
