#!/usr/bin/env python3
"""An SMTP server that keeps what it receives, for the end-to-end tests of Vigil's email.

aiosmtpd (written by people who are not us) speaks SMTP on 127.0.0.1; each message it accepts
is written as one JSON line to --out:

    {"mail_from", "rcpt_tos", "data" (the message as received), "headers" ({lowercase name:
     value}, as Python's email parser reads them), "body" (the text/plain content, decoded),
     "tls" (whether the session was encrypted), "auth" (the user name it logged in as, or null)}

    python3 tests/clients/smtp_sink.py --port 0 --out FILE
        [--tls starttls|implicit --cert CRT --key KEY] [--auth USER:PASSWORD]
        [--reject ADDRESS]... [--defer ADDRESS]...

--tls starttls offers STARTTLS and refuses mail before it (aiosmtpd's require_starttls);
--tls implicit speaks TLS from the first byte (SMTPS). --auth requires that login (over TLS).
--reject answers 550 to RCPT TO of that address, --defer 451.

Prints ``listening <port>`` on standard output once it accepts connections, and nothing else
there.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Sink:
    def __init__(self, args):
        self.out = args.out
        self.reject = {a.lower() for a in args.reject}
        self.defer = {a.lower() for a in args.defer}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.reject:
            return "550 5.1.1 <%s>: recipient address rejected: no such user" % address
        if address.lower() in self.defer:
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.content
        msg = email.message_from_bytes(data, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": data.decode("utf-8", "replace"),
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "body": body.get_content() if body is not None else None,
            "tls": session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None,
            "auth": session.auth_data.login.decode() if session.authenticated else None,
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 2.0.0 Ok: queued as SINK%d" % sum(1 for _ in open(self.out, encoding="utf-8"))


def authenticator(expected):
    user, _, password = expected.partition(":")

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tls", choices=["starttls", "implicit"])
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--auth", help="USER:PASSWORD the client must log in with")
    ap.add_argument("--reject", action="append", default=[])
    ap.add_argument("--defer", action="append", default=[])
    args = ap.parse_args()
    # aiosmtpd warns on every login that it set a deprecated attribute itself; errors still show.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    context = None
    if args.tls:
        if not (args.cert and args.key):
            raise SystemExit("--tls needs --cert and --key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
    sink = Sink(args)
    open(args.out, "a").close()

    def factory():
        return SMTP(
            sink,
            hostname="sink.test",
            tls_context=context if args.tls == "starttls" else None,
            require_starttls=args.tls == "starttls",
            authenticator=authenticator(args.auth) if args.auth else None,
            auth_required=bool(args.auth),
            # Over SMTPS the session is encrypted from the start, which aiosmtpd's own check
            # (made for STARTTLS) does not see.
            auth_require_tls=args.tls == "starttls",
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory,
        host="127.0.0.1",
        port=args.port,
        ssl=context if args.tls == "implicit" else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
