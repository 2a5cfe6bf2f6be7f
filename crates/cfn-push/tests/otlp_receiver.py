#!/usr/bin/env python3
"""A loopback OTLP/HTTP metrics receiver for cfn-push's tests.

Every request is decoded with the official OpenTelemetry classes (PyPI opentelemetry-proto),
protobuf or JSON as its Content-Type says, so a schema mistake fails the test. Each request
is appended to OUT as one JSON line: path, headers, content type, and the decoded request
(MessageToDict) or the decoding error. Prints the port it listens on, then serves until
killed.

usage: otlp_receiver.py OUT MODE
  ok       200 with an empty ExportMetricsServiceResponse
  reject   400 with a google.rpc.Status (code 3, "metric cfn.m has a bad unit")
  flaky    503 with Retry-After: 0 twice, then ok
  down     503 always
  partial  200 with partial_success (1 data point rejected, "one point is too old")
"""
import gzip
import json
import urllib.parse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms

OUT, MODE = sys.argv[1], sys.argv[2]
seen = {"n": 0}


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def rpc_status(code, message):
    """google.rpc.Status by hand (field 1 code, field 2 message): not in opentelemetry-proto."""
    m = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(m)) + m


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        seen["n"] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ctype = self.headers.get("Content-Type", "")
        record = {
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "content_type": ctype,
        }
        req = ms.ExportMetricsServiceRequest()
        try:
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if ctype == "application/x-protobuf":
                req.ParseFromString(body)
            elif ctype == "application/json":
                json_format.Parse(body, req)
            else:
                raise ValueError("unexpected Content-Type " + ctype)
            record["request"] = json_format.MessageToDict(req)
        except Exception as e:  # the test reads the error from OUT
            record["error"] = repr(e)
        with open(OUT, "a") as f:
            f.write(json.dumps(record) + "\n")
        json_reply = ctype == "application/json"
        if MODE.startswith("echo"):
            # A receiver that quotes the request's headers back, whole, encoded and cut.
            auth = self.headers.get("Authorization", "")
            echoed = "; ".join(f"{k}={v}" for k, v in self.headers.items())
            message = f"denied: {echoed} / {urllib.parse.quote(auth)} / {auth[3:12]} / {auth[-9:]}"
            if MODE == "echo401":
                self.reply(401, message.encode(), "text/plain")
            elif MODE == "echo400":
                self.reply(400, rpc_status(3, message), "application/x-protobuf")
            else:
                resp = ms.ExportMetricsServiceResponse()
                resp.partial_success.rejected_data_points = 1
                resp.partial_success.error_message = message
                self.reply(200, resp.SerializeToString(), "application/x-protobuf")
            return
        if "error" in record:
            self.reply(400, rpc_status(3, record["error"]), "application/x-protobuf")
        elif MODE == "reject":
            self.reply(400, rpc_status(3, "metric cfn.m has a bad unit"), "application/x-protobuf")
        elif MODE == "down" or (MODE == "flaky" and seen["n"] <= 2):
            self.reply(503, b"busy", "text/plain", {"Retry-After": "0"})
        else:
            resp = ms.ExportMetricsServiceResponse()
            if MODE == "partial":
                resp.partial_success.rejected_data_points = 1
                resp.partial_success.error_message = "one point is too old"
            if json_reply:
                self.reply(200, json_format.MessageToJson(resp).encode(), "application/json")
            else:
                self.reply(200, resp.SerializeToString(), "application/x-protobuf")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
