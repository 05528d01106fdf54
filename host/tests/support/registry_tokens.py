#!/usr/bin/env python3
"""A token service for the distribution registry's token authentication, for the tests of
registries that hand out Bearer tokens (as public registries do, even to anonymous readers).

Usage: registry_tokens.py PORT CERT_OUT USER:PASSWORD

Makes an ECDSA P-256 key and a self-signed certificate, writes the certificate to CERT_OUT
(the registry's `auth.token.rootcertbundle`), then answers GET /token?service=S&scope=…:
with USER:PASSWORD (HTTP Basic) every action asked for is granted; without credentials only
`pull`; with wrong ones 401. Tokens are ES256 JWTs carrying the certificate in `x5c`, issued by
`sluice-test-issuer` for the audience the request names. Each request is logged to stderr.
"""
import base64
import datetime
import http.server
import json
import os
import sys
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

PORT = int(sys.argv[1])
CERT_OUT = sys.argv[2]
USER, PASSWORD = sys.argv[3].split(":", 1)
ISSUER = "sluice-test-issuer"

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluice test token issuer")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (
    x509.CertificateBuilder()
    .subject_name(name)
    .issuer_name(name)
    .public_key(key.public_key())
    .serial_number(x509.random_serial_number())
    .not_valid_before(now - datetime.timedelta(days=1))
    .not_valid_after(now + datetime.timedelta(days=1))
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .sign(key, hashes.SHA256())
)
with open(CERT_OUT, "wb") as f:
    f.write(cert.public_bytes(serialization.Encoding.PEM))
X5C = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(subject, audience, access):
    header = {"typ": "JWT", "alg": "ES256", "x5c": [X5C]}
    issued = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": subject,
        "aud": audience,
        "exp": issued + 300,
        "nbf": issued - 10,
        "iat": issued,
        "jti": base64.b16encode(os.urandom(8)).decode(),
        "access": access,
    }
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        given = self.headers.get("Authorization", "")
        subject = ""
        if given:
            try:
                user, password = base64.b64decode(given.split(" ", 1)[1]).decode().split(":", 1)
            except Exception:
                user, password = "", None
            if (user, password) != (USER, PASSWORD):
                self.send_response(401)
                self.end_headers()
                return
            subject = user
        access = []
        for scope in query.get("scope", []):
            kind, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
            granted = [a for a in actions.split(",") if subject or a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        body = json.dumps({"token": token(subject, query.get("service", [""])[0], access)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        sys.stderr.write("token: " + (format % args) + "\n")


server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
server.serve_forever()
