"""The SMTP relay client against real relays on 127.0.0.1: STARTTLS with a certificate made here (trusted
through ``JMAPMONO_SMTP_RELAY_CA_FILE``) and AUTH inside the TLS session; a relay that offers no STARTTLS;
the password never sent in clear to a relay that is not on loopback; what a client is told when the relay
fails (nothing of the relay itself: that goes to the log); the relay settings."""

from __future__ import annotations

import datetime
import ipaddress
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gevent.server import StreamServer

from jmapmono.config import ConfigError, load_config
from jmapmono.sending import smarthost
from jmapmono.sending.smarthost import SmtpRelay, format_reply
from tests.jmap.test_submission import draft, refused, submit
from tests.support.servers import free_port
from tests.support.smtp_sink import SmtpSink

PASSWORD = "s3cret-relay-password"


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed, for 127.0.0.1 and localhost: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jmapmono test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digitalSignature, keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class RecordingRelay:
    """A relay on 127.0.0.1 that offers AUTH but not STARTTLS, accepts everything and records every byte sent."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.server = StreamServer(("127.0.0.1", 0), self._session)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_port}"

    def _session(self, sock, _peer) -> None:
        reader = sock.makefile("rb")
        sock.sendall(b"220 relay.test ESMTP\r\n")
        in_data = False
        while line := reader.readline():
            self.received += line
            if in_data:
                if line == b".\r\n":
                    in_data = False
                    sock.sendall(b"250 2.0.0 queued\r\n")
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                sock.sendall(b"250-relay.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
            elif verb == b"AUTH":
                sock.sendall(b"235 2.7.0 Authentication successful\r\n")
            elif verb == b"DATA":
                in_data = True
                sock.sendall(b"354 go ahead\r\n")
            elif verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            else:
                sock.sendall(b"250 2.0.0 OK\r\n")

    def stop(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_relay(tmp_path_factory, certificates) -> Iterator[SmtpSink]:
    """aiosmtpd requiring STARTTLS before anything, and AUTH (inside TLS) before MAIL."""
    _, cert, key = certificates
    server = SmtpSink(tmp_path_factory.mktemp("tls-relay"), auth=f"jmap:{PASSWORD}", tls=(cert, key))
    yield server
    server.stop()


@pytest.fixture
def recorder() -> Iterator[RecordingRelay]:
    relay = RecordingRelay()
    yield relay
    relay.stop()


def use_relay(services, monkeypatch, config) -> SmtpRelay:
    """Make the submissions of ``services`` go through a relay built from ``config``."""
    relay = SmtpRelay(config)
    monkeypatch.setattr(services.submissions, "relay", relay)
    return relay


def secured(config, address: str, **overrides):
    settings = dict(smtp_relay=address, smtp_relay_user="jmap", smtp_relay_password=PASSWORD, smtp_relay_starttls=True)
    return config.with_overrides(**{**settings, **overrides})


# --- STARTTLS ------------------------------------------------------------------------------------------------------


def test_starttls_with_auth_inside_tls_and_the_certificate_verified(
    alice, services, config, monkeypatch, tls_relay, certificates
):
    tls_relay.clear()
    ca, _, _ = certificates
    use_relay(services, monkeypatch, secured(config, tls_relay.address))  # the system's CAs: ours is unknown
    error = refused(alice, draft(services, alice.account_id))
    assert error["type"] == "forbiddenToSend"
    assert tls_relay.address not in error["description"] and "certificate" not in error["description"].lower()
    assert tls_relay.messages() == []

    use_relay(services, monkeypatch, secured(config, tls_relay.address, smtp_relay_ca_file=ca))
    created = submit(alice, draft(services, alice.account_id))["created"]["k"]
    assert created["deliveryStatus"]["carol@remote.example"]["delivered"] == "unknown"
    [sent] = tls_relay.wait(1)
    assert sent["tls"] is True and sent["login"] == "jmap"  # AUTH and the message went inside the TLS session
    assert sent["data"].startswith(b"From: Alice <alice@example.org>\r\n")


def test_a_relay_without_starttls_gets_nothing_and_the_client_a_generic_reason(
    alice, services, config, monkeypatch, recorder
):
    use_relay(services, monkeypatch, secured(config, recorder.address))
    error = refused(alice, draft(services, alice.account_id, body="The secret plan.\r\n"))
    assert error["type"] == "forbiddenToSend" and "nothing was sent" in error["description"]
    for leak in (recorder.address, str(recorder.server.server_port), "STARTTLS", "Error"):
        assert leak not in error["description"], error
    sent = bytes(recorder.received).upper()  # smtplib writes its verbs in lower case
    assert sent.startswith(b"EHLO ") and b"AUTH" not in sent and b"MAIL FROM" not in sent
    assert b"SECRET PLAN" not in sent


def test_the_password_is_not_sent_in_clear_to_a_relay_off_loopback(alice, services, config, monkeypatch, recorder):
    """STARTTLS off, the relay reached at an address that is not loopback (as the check sees it): no AUTH."""
    use_relay(services, monkeypatch, secured(config, recorder.address, smtp_relay_starttls=False))
    monkeypatch.setattr(smarthost, "is_loopback_host", lambda host: False)
    error = refused(alice, draft(services, alice.account_id))
    assert error["type"] == "forbiddenToSend"
    sent = bytes(recorder.received).upper()
    assert sent.startswith(b"EHLO ") and b"AUTH" not in sent and b"MAIL FROM" not in sent


def test_on_loopback_auth_without_tls_is_allowed(alice, services, config, monkeypatch, recorder):
    use_relay(services, monkeypatch, secured(config, recorder.address, smtp_relay_starttls=False))
    assert submit(alice, draft(services, alice.account_id))["created"]
    sent = bytes(recorder.received).upper()
    assert b"AUTH PLAIN" in sent and b"MAIL FROM:<ALICE@EXAMPLE.ORG>" in sent


# --- what the client is told ---------------------------------------------------------------------------------------


def test_relay_failures_reach_the_log_not_the_client(alice, services, config, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="jmapmono.sending")
    down = f"127.0.0.1:{free_port()}"
    use_relay(services, monkeypatch, config.with_overrides(smtp_relay=down))
    error = refused(alice, draft(services, alice.account_id))
    assert error == {
        "type": "forbiddenToSend",
        "description": "the mail relay is unavailable; nothing was sent, try again later",
    }
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=relay_failed" in logged and down in logged and "ConnectionRefusedError" in logged
    assert "event=submission_not_relayed" in logged


# --- settings ------------------------------------------------------------------------------------------------------


def test_relay_configuration(certificates):
    assert load_config({}).smtp_relay is None
    assert load_config({"JMAPMONO_SMTP_RELAY": "off"}).smtp_relay is None
    c = load_config(
        {
            "JMAPMONO_SMTP_RELAY": "smtp.example.org:587",
            "JMAPMONO_SMTP_RELAY_USER": "jmap",
            "JMAPMONO_SMTP_RELAY_PASSWORD": "secret",
            "JMAPMONO_SMTP_RELAY_STARTTLS": "on",
            "JMAPMONO_SMTP_RELAY_CA_FILE": str(certificates[0]),
        }
    )
    assert (c.smtp_relay, c.smtp_relay_user, c.smtp_relay_starttls) == ("smtp.example.org:587", "jmap", True)
    assert c.smtp_relay_ca_file == certificates[0] and load_config({}).smtp_relay_ca_file is None
    assert "secret" not in repr(c)
    login = {"JMAPMONO_SMTP_RELAY_USER": "jmap", "JMAPMONO_SMTP_RELAY_PASSWORD": "secret"}
    for on_loopback in ("127.0.0.1:25", "localhost:25", "[::1]:25", "127.0.0.2:2525"):
        assert load_config({"JMAPMONO_SMTP_RELAY": on_loopback, **login}).smtp_relay_user == "jmap"
    for bad, name in [
        ({"JMAPMONO_SMTP_RELAY": "smtp.example.org"}, "JMAPMONO_SMTP_RELAY"),
        ({"JMAPMONO_SMTP_RELAY_USER": "jmap"}, "JMAPMONO_SMTP_RELAY_PASSWORD"),
        ({"JMAPMONO_SMTP_RELAY_STARTTLS": "maybe"}, "JMAPMONO_SMTP_RELAY_STARTTLS"),
        ({"JMAPMONO_SMTP_RELAY": "smtp.example.org:25", **login}, "JMAPMONO_SMTP_RELAY_STARTTLS is off"),
        ({"JMAPMONO_SMTP_RELAY": "10.0.0.5:25", **login}, "clear text"),
        ({"JMAPMONO_SMTP_RELAY_CA_FILE": "/nonexistent/ca.pem"}, "JMAPMONO_SMTP_RELAY_CA_FILE"),
        ({"JMAPMONO_VACATION_REPLY_DAYS": "0"}, "JMAPMONO_VACATION_REPLY_DAYS"),
    ]:
        with pytest.raises(ConfigError, match=name):
            load_config(bad)


def test_format_reply_joins_multiline_replies():
    assert format_reply(250, b"OK").text == "250 OK"
    assert format_reply(550, "5.7.1 Our system has detected that this message is\n5.7.1 likely spam.").text == (
        "550 5.7.1 Our system has detected that this message is likely spam."
    )
    assert format_reply(421, b"4.3.2 a\n4.3.2 b\n4.3.2 c").text == "421 4.3.2 a b c"
