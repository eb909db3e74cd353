"""email: SMTP, in plain text. `security` is `starttls` (the default: port 587, upgraded with
STARTTLS before anything is sent, refused when the server cannot), `tls` (implicit TLS, port
465) or `none` (plain, port 25: only on a network you trust). Certificates are verified
against the system's CAs, or against `ca_certificate` (PEM) for a private CA."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from notifiers import render
from notifiers.registry import DeliveryError, NotifierKind, Setting, register

SECURITY = ("starttls", "tls", "none")


def _context(config: dict) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if config.get("ca_certificate"):
        context = ssl.create_default_context(cadata=config["ca_certificate"])
    return context


def message(config: dict, notification: dict) -> EmailMessage:
    mail = EmailMessage()
    mail["Subject"] = render.subject(notification)
    mail["From"] = config["from"]
    mail["To"] = ", ".join(config["to"])
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    mail["Message-ID"] = make_msgid(domain="hivemind")
    mail["X-Hivemind-Group"] = str(notification.get("group_key", ""))[:200]
    mail.set_content(render.text(notification))
    return mail


def _answer(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {text}"


@register
class Email(NotifierKind):
    name = "email"
    description = "email through an SMTP server (plain, STARTTLS or implicit TLS)"
    settings = (
        Setting("host", "the SMTP server's host name or address", type="host", required=True),
        Setting("port", "its port (default: 587 with starttls, 465 with tls, 25 with none)", type="port"),
        Setting("security", f"one of {', '.join(SECURITY)}", type="choice", choices=SECURITY, default="starttls"),
        Setting("from", "the sender's address", type="email", required=True),
        Setting("to", "the recipients' addresses (a list)", type="emails", required=True),
        Setting("username", "the user name to log in with (optional)"),
        Setting("password", "the password to log in with", secret=True),
        Setting("ca_certificate", "a PEM CA certificate to verify the server with (a private CA)", type="pem"),
    )

    @classmethod
    def check(cls, config, secrets):
        if secrets.get("password") and not config.get("username"):
            return {"username": "required with a password"}
        if config.get("ca_certificate"):
            try:
                ssl.create_default_context(cadata=config["ca_certificate"])
            except (ssl.SSLError, ValueError) as exc:
                return {"ca_certificate": f"is not a PEM certificate: {exc}"}
        return {}

    @classmethod
    def send(cls, config, secrets, notification, *, timeout):
        security = config.get("security", "starttls")
        host = config["host"]
        port = config.get("port") or {"starttls": 587, "tls": 465, "none": 25}[security]
        where = f"{host}:{port}"
        mail = message(config, notification)
        try:
            if security == "tls":
                client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=_context(config))
            else:
                client = smtplib.SMTP(host, port, timeout=timeout)
            with client:
                client.ehlo()
                if security == "starttls":
                    try:
                        client.starttls(context=_context(config))
                    except smtplib.SMTPNotSupportedError:
                        raise DeliveryError(f"{where} does not offer STARTTLS (security: starttls)",
                                            setting="security") from None  # fmt: skip
                    client.ehlo()
                if config.get("username"):
                    try:
                        client.login(config["username"], secrets.get("password", ""))
                    except smtplib.SMTPAuthenticationError as exc:
                        raise DeliveryError(f"{where} refused the login: {_answer(exc)}", setting="password") from None
                    except smtplib.SMTPNotSupportedError:
                        raise DeliveryError(f"{where} does not offer a login (AUTH) here", setting="username") from None
                refused = client.send_message(mail)
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            answers = "; ".join(
                f"{to}: {code} {text.decode(errors='replace')}" for to, (code, text) in exc.recipients.items()
            )
            raise DeliveryError(f"{where} refused every recipient: {answers}", setting="to") from None
        except smtplib.SMTPSenderRefused as exc:
            raise DeliveryError(f"{where} refused the sender: {_answer(exc)}", setting="from") from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where} answered {_answer(exc)}", answered=True) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"TLS with {where} failed: {exc.reason or exc}", setting="security") from None
        except TimeoutError:
            raise DeliveryError(f"{where} did not answer within {timeout:g} s", setting="host") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise DeliveryError(f"{where} closed the connection: {exc}", setting="host") from None
        except OSError as exc:
            raise DeliveryError(f"cannot connect to {where}: {exc.strerror or exc}", setting="host") from None
        if refused:
            return f"{where} took it for {len(config['to']) - len(refused)} of {len(config['to'])} recipients"
        return f"{where} took it for {len(config['to'])} recipient(s)"
