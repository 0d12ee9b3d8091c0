#!/usr/bin/env python3
"""A minimal im-engine client in Python, generated from im.proto alone.

It compiles ../../im-core/proto/im.proto at start-up (grpcio-tools ships
protoc), speaks the TCP framing (4-byte big-endian length + protobuf), and
either sends one message or, with --selftest, checks a two-user conversation.

    pip install -r requirements.txt
    python3 chat.py --server 127.0.0.1:7000 --user alice --to bob --text hello
"""

import argparse
import importlib
import os
import socket
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "..", "im-core", "proto")


def load_protocol():
    """Generates im_pb2 from im.proto into a temporary directory and imports it."""
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="im-proto-")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", "im.proto"])
    if rc != 0:
        raise SystemExit("protoc failed on im.proto")
    sys.path.insert(0, out)
    return importlib.import_module("im_pb2")


class Client:
    """One connection: request/response correlated by request_id."""

    def __init__(self, pb, addr, user, device):
        self.pb = pb
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.next_id = 1
        self.events = []
        connected = self.request(connect=pb.Connect(token=f"{user}:{device}", device_id=device))
        self.user = connected.connected.user_id

    def send_frame(self, frame):
        data = frame.SerializeToString()
        self.sock.sendall(struct.pack(">I", len(data)) + data)

    def read_frame(self):
        header = self._read_exact(4)
        (length,) = struct.unpack(">I", header)
        frame = self.pb.ServerFrame()
        frame.ParseFromString(self._read_exact(length))
        return frame

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def request(self, **body):
        """Sends a ClientFrame with one body field and waits for its answer."""
        rid = self.next_id
        self.next_id += 1
        self.send_frame(self.pb.ClientFrame(request_id=rid, **body))
        while True:
            frame = self.read_frame()
            if frame.request_id == rid:
                if frame.WhichOneof("body") == "error":
                    raise RuntimeError(f"server error: {frame.error.reason}")
                return frame
            self.events.append(frame)

    def next_push(self):
        while True:
            frame = self.events.pop(0) if self.events else self.read_frame()
            if frame.WhichOneof("body") == "push":
                return frame.push


def direct(pb, peer):
    return pb.ConversationRef(kind=pb.CONVERSATION_KIND_DIRECT, id=peer)


def selftest(pb, server):
    alice = Client(pb, server, "py-alice", "py")
    bob = Client(pb, server, "py-bob", "py")
    ack = alice.request(send=pb.Send(client_msg_id="py-1", conversation=direct(pb, "py-bob"), body=b"hello from python"))
    assert ack.send_ack.seq == 1, ack
    push = bob.next_push()
    assert push.messages[0].body == b"hello from python", push
    assert push.messages[0].conversation.id == "py-alice", push
    retry = alice.request(send=pb.Send(client_msg_id="py-1", conversation=direct(pb, "py-bob"), body=b"hello from python"))
    assert retry.send_ack.duplicate and retry.send_ack.seq == 1, retry
    listing = bob.request(list_conversations=pb.ListConversations())
    summary = listing.conversation_list.conversations[0]
    assert (summary.conversation.id, summary.unread) == ("py-alice", 1), summary
    page = bob.request(pull=pb.Pull(conversation=direct(pb, "py-alice")))
    assert [m.body for m in page.pull_result.messages] == [b"hello from python"], page
    print("python client selftest passed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="127.0.0.1:7000")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--to", help="send a direct message to this user")
    parser.add_argument("--text", default="hello")
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    pb = load_protocol()
    if args.selftest:
        selftest(pb, args.server)
        return
    client = Client(pb, args.server, args.user, "python")
    if args.to:
        ack = client.request(send=pb.Send(client_msg_id=os.urandom(8).hex(), conversation=direct(pb, args.to), body=args.text.encode()))
        print(f"sent as #{ack.send_ack.seq}")
    listing = client.request(list_conversations=pb.ListConversations())
    for c in listing.conversation_list.conversations:
        print(c.conversation.id, "unread", "99+" if c.unread_more else c.unread)


if __name__ == "__main__":
    main()
