#!/usr/bin/env python3
"""The receiving end of Vigil's outward connectors, for the end-to-end tests.

One HTTP server on 127.0.0.1 plays four parties Vigil writes to:

* a CRM's webhook endpoint, ``POST /hooks/vigil``, checking Standard Webhooks signatures
  (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256>``);
* a FHIR R4 server under ``/fhir``: create (conditional with ``If-None-Exist``), conditional
  update (``PUT /fhir/{Type}?identifier=...``), read, delete, search (by ``identifier``, or by
  reference: ``patient``, ``subject``), ``batch`` Bundles (``POST /fhir``) and a
  CapabilityStatement (``GET /fhir/metadata``, offering batches with ``--fhir-batch``); every
  resource validated with the ``fhir.resources`` R4B models (written by people who are not us),
  and every literal reference it holds (``Patient/7``) checked to exist, as a strict server
  does (refused with 422 otherwise);
* a SMART Backend Services token endpoint, ``POST /token``, verifying the ES384 client assertion
  with ``cryptography``;
* an SMS provider, ``POST /sms/send``: a form (``application/x-www-form-urlencoded``) with the
  fields ``to`` and ``body`` and ``Authorization: Bearer <--sms-token>``, answered 201
  ``{"sid": "SM<n>", "status": "queued"}`` (docs/notifications.md).

Tests read what arrived from ``GET /_state`` and make the hook, FHIR and SMS endpoints fail with
``POST /_control`` (``{"fail_next": n, "fail_status": 503}``, ``{"down": true}``,
``{"reset": true}``).

    python3 tests/clients/receiver.py --port 0 [--webhook-secret whsec_...] [--fhir-token TOKEN]
        [--fhir-batch] [--smart-public-key PEMFILE --smart-client-id ID] [--sms-token TOKEN]
        [--verbose]

Prints ``listening <port>`` on standard output once it accepts connections, and nothing else
there.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fhir.resources.R4B import get_fhir_model_class

WEBHOOK_TOLERANCE_S = 5 * 60
ASSERTION_MAX_LIFETIME_S = 5 * 60
# Grace for the two clocks' reading of "now" (same machine, different instants).
CLOCK_LEEWAY_S = 10
TOKEN_LIFETIME_S = 300
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_JSON = "application/fhir+json"
MAX_BODY = 10 * 1024 * 1024


class BadRequest(Exception):
    """A request this server cannot make sense of: answered 400 with the reason."""


class State:
    """Everything that arrived, and the failures scheduled; one lock guards it all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.webhooks = []
        self.webhook_attempts = 0
        self.webhook_attempts_by_id = {}
        self.webhook_rejected = []
        self.fhir = {}
        self.fhir_requests = []
        self.invalid = []
        self.dangling = []
        self.tokens_issued = 0
        self.token_errors = []
        self.tokens = {}  # access token -> expiry (Unix seconds)
        self.jtis = set()
        self.batches = 0
        self.sms = []
        self.sms_attempts = 0
        self.sms_rejected = []
        self.next_id = 1
        self.fail_next = 0
        self.fail_status = 503
        self.down = False

    def snapshot(self):
        return {
            "webhooks": self.webhooks,
            "webhook_attempts": self.webhook_attempts,
            "webhook_rejected": self.webhook_rejected,
            "fhir": self.fhir,
            "fhir_requests": self.fhir_requests,
            "invalid": self.invalid,
            "dangling": self.dangling,
            "tokens_issued": self.tokens_issued,
            "batches": self.batches,
            "sms": self.sms,
            "sms_attempts": self.sms_attempts,
            "sms_rejected": self.sms_rejected,
            "token_errors": self.token_errors,
            "control": {
                "fail_next": self.fail_next,
                "fail_status": self.fail_status,
                "down": self.down,
            },
        }

    def scheduled_failure(self):
        """'down', a status to answer instead, or None. Call with the lock held."""
        if self.down:
            return "down"
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status
        return None


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def now_s():
    return time.time()


def operation_outcome(code, text, severity="error"):
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


def split_token(token):
    """FHIR token search 'system|value' (with '\\' escapes) -> (system or None, value or None)."""
    parts, cur, i = [], [], 0
    while i < len(token):
        c = token[i]
        if c == "\\" and i + 1 < len(token):
            cur.append(token[i + 1])
            i += 2
            continue
        if c == "|" and not parts:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    if len(parts) == 1:
        return None, parts[0] or None  # any system
    system, value = parts
    return system, value or None  # '|value': no system; 'system|': any value


def identifier_matches(resource, system, value):
    for ident in resource.get("identifier") or []:
        if not isinstance(ident, dict):
            continue
        if system is not None and (ident.get("system") or "") != system:
            continue
        if value is not None and ident.get("value") != value:
            continue
        return True
    return False


def references_in(value):
    """Every literal reference ('Type/id') anywhere in a resource."""
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str):
            yield ref
        for k, v in value.items():
            if k != "reference":
                yield from references_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from references_in(v)


def references_match(resource, param, target):
    """Whether the resource's element for search parameter 'patient' or 'subject' is 'Type/id'."""
    if param == "patient":
        elements = [resource.get("subject"), resource.get("patient")]
    else:
        elements = [resource.get("subject")]
    return any(isinstance(e, dict) and e.get("reference") == target for e in elements)


def parse_identifier_query(query, what):
    """'identifier=system|value' (URL-encoded) -> (system, value); other parameters refused."""
    params = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(params) - {"identifier"})
    if unknown:
        raise BadRequest(f"{what}: only the identifier parameter is supported, not {unknown}")
    if len(params.get("identifier", [])) != 1:
        raise BadRequest(f"{what}: give exactly one identifier=system|value")
    return split_token(params["identifier"][0])


class Receiver(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args):
        super().__init__(("127.0.0.1", args.port), Handler)
        self.args = args
        self.state = State()
        self.port = self.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.token_url = f"{self.base}/token"
        self.webhook_key = None
        if args.webhook_secret:
            secret = args.webhook_secret
            if not secret.startswith("whsec_"):
                raise SystemExit("--webhook-secret must start with whsec_")
            self.webhook_key = base64.b64decode(secret[len("whsec_") :], validate=True)
        self.smart_key = None
        if args.smart_public_key:
            if not args.smart_client_id:
                raise SystemExit("--smart-public-key needs --smart-client-id")
            with open(args.smart_public_key, "rb") as f:
                key = serialization.load_pem_public_key(f.read())
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
                raise SystemExit("--smart-public-key must be an EC P-384 public key")
            self.smart_key = key


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "vigil-test-receiver"

    # --- plumbing -------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        if self.server.args.verbose:
            sys.stderr.write("receiver: " + (format % args) + "\n")

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(1024).strip()
                try:
                    size = int(line.split(b";")[0], 16)
                except ValueError:
                    raise BadRequest("malformed chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
                if sum(map(len, chunks)) > MAX_BODY:
                    raise BadRequest("body too large")
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if n < 0 or n > MAX_BODY:
            raise BadRequest("Content-Length out of range")
        return self.rfile.read(n)

    def answer(self, status, body=None, content_type="application/json", headers=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)
        self.last_status = status

    def hang_up(self):
        """The 'down' failure: no answer at all, the connection closed."""
        self.close_connection = True
        self.last_status = None

    def dispatch(self, method):
        self.last_status = None
        self.body = b""
        url = urlsplit(self.path)
        self.url_path, self.query = url.path, url.query
        try:
            try:
                self.body = self.read_body()
            except BadRequest:
                # Where the next request starts is unknown: answer, then hang up.
                self.close_connection = True
                raise
            route = self.route(method)
            if route is None:
                self.answer(404, {"error": f"no route for {method} {self.url_path}"})
            else:
                route()
        except BadRequest as e:
            self.answer(400, {"error": str(e)})
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as e:  # a bug here must not look like Vigil's fault: say so
            traceback.print_exc(file=sys.stderr)
            try:
                self.answer(500, {"error": f"receiver bug: {type(e).__name__}: {e}"})
            except OSError:
                self.close_connection = True

    def route(self, method):
        p = self.url_path
        if p == "/_state" and method == "GET":
            return self.get_state
        if p == "/_control" and method == "POST":
            return self.post_control
        if p == "/hooks/vigil" and method == "POST":
            return self.post_hook
        if p == "/token" and method == "POST" and self.server.smart_key is not None:
            return self.post_token
        if p == "/sms/send" and method == "POST" and self.server.args.sms_token:
            return self.post_sms
        if p == "/fhir" or p.startswith("/fhir/"):
            return lambda: self.fhir(method)
        return None

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def json_body(self):
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"body is not JSON: {e}") from None

    # --- test control -----------------------------------------------------------------------

    def get_state(self):
        st = self.server.state
        with st.lock:
            snapshot = json.loads(json.dumps(st.snapshot()))
        self.answer(200, snapshot)

    def post_control(self):
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequest("control body must be a JSON object")
        # Check everything before changing anything: a refused request changes nothing.
        n = body.get("fail_next", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BadRequest("fail_next must be a non-negative integer")
        code = body.get("fail_status", 503)
        if not isinstance(code, int) or isinstance(code, bool) or not 400 <= code <= 599:
            raise BadRequest("fail_status must be an HTTP error status")
        if not isinstance(body.get("down", False), bool):
            raise BadRequest("down must be true or false")
        st = self.server.state
        with st.lock:
            if body.get("reset"):
                st.reset()
            if "fail_next" in body:
                st.fail_next = n
            if "fail_status" in body:
                st.fail_status = code
            if "down" in body:
                st.down = body["down"]
            control = st.snapshot()["control"]
        self.answer(200, control)

    # --- webhooks -----------------------------------------------------------------------------

    def post_hook(self):
        st = self.server.state
        wid = self.headers.get("webhook-id") or ""
        with st.lock:
            st.webhook_attempts += 1
            attempt_no = st.webhook_attempts_by_id.get(wid, 0) + 1
            st.webhook_attempts_by_id[wid] = attempt_no
            failure = st.scheduled_failure()
        if failure == "down":
            return self.hang_up()
        if failure is not None:
            return self.answer(failure, {"error": "scheduled failure"})

        reason = self.check_signature(wid)
        if reason is not None:
            with st.lock:
                st.webhook_rejected.append({"id": wid, "reason": reason})
            return self.answer(401, {"error": reason})
        body = self.json_body()
        if not isinstance(body, dict) or not {"type", "timestamp", "data"} <= body.keys():
            raise BadRequest('a webhook body is {"type", "timestamp", "data"}')
        with st.lock:
            st.webhooks.append(
                {
                    "id": wid,
                    "type": body["type"],
                    "timestamp": body["timestamp"],
                    "data": body["data"],
                    "attempt_no": attempt_no,
                }
            )
        self.answer(204)

    def check_signature(self, wid):
        """None when the Standard Webhooks headers check out, else why not."""
        key = self.server.webhook_key
        ts = self.headers.get("webhook-timestamp")
        sig = self.headers.get("webhook-signature")
        if not wid or not ts or not sig:
            return "webhook-id, webhook-timestamp and webhook-signature are required"
        try:
            ts_s = int(ts)
        except ValueError:
            return "webhook-timestamp is not an integer"
        if abs(now_s() - ts_s) > WEBHOOK_TOLERANCE_S:
            return "webhook-timestamp is more than 5 minutes away"
        if key is None:
            return None
        signed = f"{wid}.{ts}.".encode() + self.body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        ok = False
        for candidate in sig.split(" "):
            version, _, value = candidate.partition(",")
            if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
                ok = True
        return None if ok else "no v1 signature matches"

    # --- SMS ----------------------------------------------------------------------------------

    def post_sms(self):
        st = self.server.state
        with st.lock:
            st.sms_attempts += 1
            failure = st.scheduled_failure()
        if failure == "down":
            return self.hang_up()
        if failure is not None:
            return self.answer(failure, {"error": "scheduled failure"})
        expected = "Bearer " + self.server.args.sms_token
        if not hmac.compare_digest((self.headers.get("Authorization") or "").encode(), expected.encode()):
            with st.lock:
                st.sms_rejected.append({"reason": "bad or missing bearer token"})
            return self.answer(401, {"error": "a valid bearer token is required"})
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise BadRequest(f"expected a form, not {content_type!r}")
        try:
            form = parse_qs(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(f"not a form: {e}") from None
        if sorted(form) != ["body", "to"] or any(len(v) != 1 for v in form.values()):
            raise BadRequest("the form holds exactly one 'to' and one 'body'")
        with st.lock:
            sid = f"SM{len(st.sms) + 1}"
            st.sms.append(
                {
                    "sid": sid,
                    "to": form["to"][0],
                    "body": form["body"][0],
                    "idempotency_key": self.headers.get("Idempotency-Key"),
                }
            )
        self.answer(201, {"sid": sid, "status": "queued"})

    # --- FHIR ---------------------------------------------------------------------------------

    def fhir(self, method):
        st = self.server.state
        parts = [p for p in self.url_path.split("/")[2:] if p]
        record = {
            "method": method,
            "path": self.url_path,
            "query": unquote(self.query),
            "if_none_exist": self.headers.get("If-None-Exist"),
            "status": None,
        }
        with st.lock:
            st.fhir_requests.append(record)
            failure = st.scheduled_failure()
        try:
            if failure == "down":
                return self.hang_up()
            if failure is not None:
                return self.answer(
                    failure, operation_outcome("transient", "scheduled failure"), FHIR_JSON
                )
            if not self.authorized():
                return self.answer(
                    401,
                    operation_outcome("login", "a valid bearer token is required"),
                    FHIR_JSON,
                    {"WWW-Authenticate": "Bearer"},
                )
            if parts == ["metadata"] and method == "GET":
                return self.fhir_metadata()
            if not parts and method == "POST":
                return self.fhir_batch()
            if len(parts) == 2 and method == "DELETE":
                return self.fhir_delete(parts[0], parts[1])
            if len(parts) == 1 and method == "POST":
                return self.fhir_create(parts[0])
            if len(parts) == 1 and method == "PUT":
                return self.fhir_conditional_update(parts[0])
            if len(parts) == 2 and method == "PUT":
                return self.fhir_update(parts[0], parts[1])
            if len(parts) == 1 and method == "GET":
                return self.fhir_search(parts[0])
            if len(parts) == 2 and method == "GET":
                return self.fhir_read(parts[0], parts[1])
            return self.answer(
                405, operation_outcome("not-supported", f"{method} {self.url_path}"), FHIR_JSON
            )
        except BadRequest as e:
            self.answer(400, operation_outcome("invalid", str(e)), FHIR_JSON)
        finally:
            with st.lock:
                record["status"] = self.last_status

    def authorized(self):
        args, st = self.server.args, self.server.state
        if not args.fhir_token and self.server.smart_key is None:
            return True
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        if args.fhir_token and hmac.compare_digest(token.encode(), args.fhir_token.encode()):
            return True
        with st.lock:
            expiry = st.tokens.get(token)
        return expiry is not None and now_s() < expiry

    def valid_resource(self, rtype):
        """The body as a checked resource of type rtype, or None after answering 4xx."""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != FHIR_JSON:
            self.answer(
                415, operation_outcome("not-supported", f"Content-Type must be {FHIR_JSON}"),
                FHIR_JSON,
            )
            return None
        body = self.json_body()
        if not isinstance(body, dict):
            raise BadRequest("a resource is a JSON object")
        if body.get("resourceType") != rtype:
            raise BadRequest(f"resourceType {body.get('resourceType')!r} posted to /fhir/{rtype}")
        try:
            get_fhir_model_class(rtype)
        except (KeyError, ValueError, ImportError, AttributeError):
            self.answer(404, operation_outcome("not-supported", f"unknown type {rtype}"), FHIR_JSON)
            return None
        text = self.check_resource(rtype, body)
        if text is not None:
            self.answer(422, operation_outcome("invalid", text), FHIR_JSON)
            return None
        return body

    def check_resource(self, rtype, body):
        """None when the resource validates and its references exist, else why not."""
        try:
            model = get_fhir_model_class(rtype)
            model.model_validate(body)
        except Exception as e:  # pydantic's ValidationError, or a model's own check
            text = str(e)
            st = self.server.state
            with st.lock:
                st.invalid.append({"type": rtype, "error": text, "resource": body})
            return text
        st = self.server.state
        with st.lock:
            for ref in references_in(body):
                kind, _, rid = ref.partition("/")
                if not any(r["id"] == rid for r in st.fhir.get(kind, [])):
                    st.dangling.append({"type": rtype, "reference": ref})
                    return f"the reference {ref} is to no resource here"
        return None

    def matches(self, rtype, system, value):
        st = self.server.state
        return [r for r in st.fhir.get(rtype, []) if identifier_matches(r, system, value)]

    def store_new(self, rtype, resource, rid=None):
        """Stores a new resource (lock held); returns it with its id and meta."""
        st = self.server.state
        if rid is None:
            rid = str(st.next_id)
            st.next_id += 1
        resource = dict(resource, id=rid)
        resource["meta"] = dict(resource.get("meta") or {}, versionId="1", lastUpdated=self.now())
        st.fhir.setdefault(rtype, []).append(resource)
        return resource

    def replace(self, rtype, old, resource):
        """Replaces a stored resource keeping its id (lock held); returns the new version."""
        st = self.server.state
        version = int((old.get("meta") or {}).get("versionId", "1")) + 1
        resource = dict(resource, id=old["id"])
        resource["meta"] = dict(
            resource.get("meta") or {}, versionId=str(version), lastUpdated=self.now()
        )
        items = st.fhir[rtype]
        items[items.index(old)] = resource
        return resource

    def now(self):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def created(self, rtype, resource):
        location = f"{self.server.base}/fhir/{rtype}/{resource['id']}/_history/1"
        self.answer(201, resource, FHIR_JSON, {"Location": location})

    def fhir_create(self, rtype):
        resource = self.valid_resource(rtype)
        if resource is None:
            return
        cond = self.headers.get("If-None-Exist")
        st = self.server.state
        with st.lock:
            if cond is not None:
                system, value = parse_identifier_query(cond, "If-None-Exist")
                found = self.matches(rtype, system, value)
                if len(found) > 1:
                    return self.answer(
                        412, operation_outcome("multiple-matches", "If-None-Exist matches several"),
                        FHIR_JSON,
                    )
                if found:
                    return self.answer(200, found[0], FHIR_JSON)
            stored = self.store_new(rtype, resource)
        self.created(rtype, stored)

    def fhir_conditional_update(self, rtype):
        system, value = parse_identifier_query(self.query, "conditional update")
        resource = self.valid_resource(rtype)
        if resource is None:
            return
        st = self.server.state
        with st.lock:
            found = self.matches(rtype, system, value)
            if len(found) > 1:
                return self.answer(
                    412, operation_outcome("multiple-matches", "the search matches several"),
                    FHIR_JSON,
                )
            if found:
                if "id" in resource and resource["id"] != found[0]["id"]:
                    raise BadRequest("the body's id is not the matching resource's id")
                return self.answer(200, self.replace(rtype, found[0], resource), FHIR_JSON)
            stored = self.store_new(rtype, resource)
        self.created(rtype, stored)

    def fhir_update(self, rtype, rid):
        resource = self.valid_resource(rtype)
        if resource is None:
            return
        if resource.get("id") != rid:
            raise BadRequest("the body's id must equal the id in the URL")
        st = self.server.state
        with st.lock:
            found = [r for r in st.fhir.get(rtype, []) if r["id"] == rid]
            if found:
                return self.answer(200, self.replace(rtype, found[0], resource), FHIR_JSON)
            stored = self.store_new(rtype, resource, rid)
        self.created(rtype, stored)

    def fhir_read(self, rtype, rid):
        st = self.server.state
        with st.lock:
            found = [r for r in st.fhir.get(rtype, []) if r["id"] == rid]
        if not found:
            return self.answer(404, operation_outcome("not-found", f"{rtype}/{rid}"), FHIR_JSON)
        self.answer(200, found[0], FHIR_JSON)

    def fhir_search(self, rtype):
        st = self.server.state
        params = parse_qs(self.query, keep_blank_values=True)
        by_ref = [p for p in ("patient", "subject") if p in params]
        with st.lock:
            if by_ref:
                target = params[by_ref[0]][0]
                found = [
                    r for r in st.fhir.get(rtype, []) if references_match(r, by_ref[0], target)
                ]
            elif self.query:
                system, value = parse_identifier_query(self.query, "search")
                found = self.matches(rtype, system, value)
            else:
                found = list(st.fhir.get(rtype, []))
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.server.base}/fhir/{rtype}/{r['id']}",
                    "resource": r,
                    "search": {"mode": "match"},
                }
                for r in found
            ],
        }
        self.answer(200, bundle, FHIR_JSON)

    def fhir_delete(self, rtype, rid):
        st = self.server.state
        with st.lock:
            items = st.fhir.get(rtype, [])
            kept = [r for r in items if r["id"] != rid]
            if len(kept) == len(items):
                return self.answer(404, operation_outcome("not-found", f"{rtype}/{rid}"), FHIR_JSON)
            st.fhir[rtype] = kept
        self.answer(204)

    def fhir_metadata(self):
        interactions = [{"code": "transaction"}]
        if self.server.args.fhir_batch:
            interactions.append({"code": "batch"})
        statement = {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": "2026-01-01",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [{"mode": "server", "interaction": interactions}],
        }
        get_fhir_model_class("CapabilityStatement").model_validate(statement)
        self.answer(200, statement, FHIR_JSON)

    def fhir_batch(self):
        """A batch Bundle of conditional creates: each entry on its own, as R4 says."""
        if not self.server.args.fhir_batch:
            return self.answer(
                405, operation_outcome("not-supported", "no batches here"), FHIR_JSON
            )
        bundle = self.json_body()
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise BadRequest("POST /fhir takes a Bundle")
        try:
            get_fhir_model_class("Bundle").model_validate(bundle)
        except Exception as e:
            st = self.server.state
            with st.lock:
                st.invalid.append({"type": "Bundle", "error": str(e), "resource": bundle})
            return self.answer(422, operation_outcome("invalid", str(e)), FHIR_JSON)
        if bundle.get("type") != "batch":
            raise BadRequest("only batch Bundles are taken")
        st = self.server.state
        with st.lock:
            st.batches += 1
        answers = []
        for entry in bundle.get("entry") or []:
            request = entry.get("request") or {}
            resource = entry.get("resource") or {}
            rtype = resource.get("resourceType")
            if request.get("method") != "POST" or request.get("url") != rtype:
                answers.append(self.entry_answer(400, "only creates are taken in a batch"))
                continue
            text = self.check_resource(rtype, resource)
            if text is not None:
                answers.append(self.entry_answer(422, text))
                continue
            with st.lock:
                cond = request.get("ifNoneExist")
                found = []
                if cond:
                    system, value = parse_identifier_query(cond, "ifNoneExist")
                    found = self.matches(rtype, system, value)
                if len(found) > 1:
                    answers.append(self.entry_answer(412, "ifNoneExist matches several"))
                    continue
                if found:
                    answers.append({"response": {"status": "200 OK",
                                                 "location": f"{rtype}/{found[0]['id']}"}})
                    continue
                stored = self.store_new(rtype, resource)
            answers.append({"response": {"status": "201 Created",
                                         "location": f"{rtype}/{stored['id']}/_history/1"}})
        self.answer(
            200, {"resourceType": "Bundle", "type": "batch-response", "entry": answers}, FHIR_JSON
        )

    def entry_answer(self, status, text):
        return {"response": {"status": str(status),
                             "outcome": operation_outcome("invalid", text)}}

    # --- SMART token endpoint -------------------------------------------------------------------

    def post_token(self):
        st = self.server.state
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.token_error(400, "invalid_request", "the body must be a form")
        try:
            form = parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=True)
        except (ValueError, UnicodeDecodeError) as e:
            return self.token_error(400, "invalid_request", f"unreadable form: {e}")
        one = {k: v[0] for k, v in form.items() if len(v) == 1}
        if one.get("grant_type") != "client_credentials":
            return self.token_error(
                400, "unsupported_grant_type", "grant_type must be client_credentials"
            )
        if one.get("client_assertion_type") != JWT_BEARER:
            return self.token_error(
                400, "invalid_request", f"client_assertion_type must be {JWT_BEARER}"
            )
        scope = one.get("scope", "")
        if not scope:
            return self.token_error(400, "invalid_scope", "scope is required")
        reason = self.check_assertion(one.get("client_assertion", ""))
        if reason is not None:
            return self.token_error(401, "invalid_client", reason)
        token = secrets.token_urlsafe(32)
        with st.lock:
            st.tokens[token] = now_s() + TOKEN_LIFETIME_S
            st.tokens_issued += 1
        self.answer(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": TOKEN_LIFETIME_S,
                "scope": scope,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def token_error(self, status, error, description):
        st = self.server.state
        with st.lock:
            st.token_errors.append({"error": error, "error_description": description})
        self.answer(
            status,
            {"error": error, "error_description": description},
            headers={"Cache-Control": "no-store"},
        )

    def check_assertion(self, jwt):
        """None when the client assertion is good (and its jti is now spent), else why not."""
        pieces = jwt.split(".")
        if len(pieces) != 3:
            return "client_assertion is not a compact JWS"
        try:
            header = json.loads(b64url_decode(pieces[0]))
            claims = json.loads(b64url_decode(pieces[1]))
            signature = b64url_decode(pieces[2])
        except (ValueError, binascii.Error, UnicodeDecodeError) as e:
            return f"client_assertion is not decodable: {e}"
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return "client_assertion header and claims must be JSON objects"
        if header.get("alg") != "ES384":
            return f"alg must be ES384, not {header.get('alg')!r}"
        if not isinstance(header.get("kid"), str) or not header["kid"]:
            return "kid is required"
        if len(signature) != 96:
            return "an ES384 signature is 96 bytes (r || s)"
        r = int.from_bytes(signature[:48], "big")
        s = int.from_bytes(signature[48:], "big")
        try:
            self.server.smart_key.verify(
                encode_dss_signature(r, s),
                f"{pieces[0]}.{pieces[1]}".encode(),
                ec.ECDSA(hashes.SHA384()),
            )
        except InvalidSignature:
            return "the signature does not verify with the registered key"
        client_id = self.server.args.smart_client_id
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return "iss and sub must both be the client id"
        aud = claims.get("aud")
        if aud != self.server.token_url and not (
            isinstance(aud, list) and self.server.token_url in aud
        ):
            return f"aud must be {self.server.token_url}"
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            return "exp must be an integer"
        now = now_s()
        if exp <= now - CLOCK_LEEWAY_S:
            return "the assertion has expired"
        if exp > now + ASSERTION_MAX_LIFETIME_S + CLOCK_LEEWAY_S:
            return "exp is more than 5 minutes ahead"
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            return "jti is required"
        st = self.server.state
        with st.lock:
            if jti in st.jtis:
                return "jti was used before"
            st.jtis.add(jti)
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--webhook-secret", help="whsec_<base64>; absent: signatures not checked")
    ap.add_argument("--fhir-token", help="bearer token the FHIR endpoints accept")
    ap.add_argument(
        "--fhir-batch", action="store_true", help="take batch Bundles (and say so in metadata)"
    )
    ap.add_argument("--smart-public-key", help="PEM file of the SMART client's P-384 public key")
    ap.add_argument("--smart-client-id")
    ap.add_argument("--sms-token", help="bearer token the SMS endpoint takes; absent: no SMS endpoint")
    ap.add_argument("--verbose", action="store_true", help="log each request on stderr")
    args = ap.parse_args()
    server = Receiver(args)
    print(f"listening {server.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
