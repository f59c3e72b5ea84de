#!/usr/bin/env python3
"""A custom.metrics.k8s.io/v1beta2 backend for the e2e suite, as Prometheus Adapter or KEDA
serve it behind the aggregator: one per-pod metric whose values the test writes to a JSON file
({"metric": name, "pods": {pod: value}}), read again on every request.

Usage: custom_metrics.py PORT CERT KEY VALUES_FILE
"""
import datetime
import json
import re
import ssl
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, CERT, KEY, VALUES = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
GV = "custom.metrics.k8s.io/v1beta2"
LIST = re.compile(r"^/apis/custom\.metrics\.k8s\.io/v1beta2/namespaces/([^/]+)/pods/\*/([^/?]+)")


def values():
    with open(VALUES) as f:
        return json.load(f)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path = urllib.parse.unquote(self.path.split("?")[0])
        if path == "/apis/" + GV:
            metric = values()["metric"]
            return self.send({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GV,
                "resources": [{"name": "pods/" + metric, "singularName": "", "namespaced": True,
                               "kind": "MetricValueList", "verbs": ["get"]}],
            })
        m = LIST.match(path)
        v = values()
        if not m or m.group(2) != v["metric"]:
            return self.send({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "reason": "NotFound", "code": 404}, 404)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [{
            "describedObject": {"kind": "Pod", "namespace": m.group(1), "name": pod,
                                "apiVersion": "/v1"},
            "metric": {"name": v["metric"]}, "timestamp": now, "windowSeconds": 10,
            "value": str(value),
        } for pod, value in sorted(v["pods"].items())]
        self.send({"kind": "MetricValueList", "apiVersion": GV, "metadata": {}, "items": items})

    def send(self, body, code=200):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
