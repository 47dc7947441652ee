"""An independent gRPC client of tiernet's controller, from stubs generated out of proto/.

Usage: status_history.py GENERATED_DIR TARGET CA CERT KEY
Prints one JSON object: the current revision, each gateway's state, and the history.
"""
import json
import sys

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from tiernet.v1 import control_pb2, control_pb2_grpc  # noqa: E402


def main():
    target, ca, cert, key = sys.argv[2:6]
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(ca, "rb").read(),
        private_key=open(key, "rb").read(),
        certificate_chain=open(cert, "rb").read(),
    )
    with grpc.secure_channel(target, creds) as channel:
        admin = control_pb2_grpc.AdminStub(channel)
        status = admin.Status(control_pb2.StatusRequest(), timeout=10)
        history = admin.History(control_pb2.HistoryRequest(limit=10), timeout=10)
    print(json.dumps({
        "current_revision": status.current_revision,
        "gateways": {g.gateway: g.state for g in status.gateways},
        "history": [{"id": r.id, "author": r.author, "status": r.status, "kind": r.kind} for r in history.revisions],
    }))


if __name__ == "__main__":
    main()
