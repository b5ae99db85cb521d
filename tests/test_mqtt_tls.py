"""MQTT over TLS with user names and passwords, for real: a mosquitto TLS listener (a CA and a
server certificate made for the test, a password file made with ``mosquitto_passwd``, anonymous
clients refused), ``MqttPublisher`` and ``MqttSource`` on ``mqtts://USER:PASSWORD@HOST:PORT``.

A source that trusts the CA and knows its password gets the samples; a wrong password and an
untrusted server certificate each keep the link down with a message that says why. Passwords
never reach links, logs or printed sources.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Collector, Mosquitto, running
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from twin.live.mqtt import PASSWORD_ENV, MqttConfig, MqttPublisher, MqttSource
from twin.live.sources import parse_source, redact_url
from twin.live.telemetry import Link

TOPIC = "plant1/bottling/filler/speed"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it: (ca.pem, server.pem, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("twin test CA"))
        .issuer_name(_name("twin test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = d / "ca.pem", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(key))
    return paths


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """mosquitto with only a TLS listener, users ``twin``/``gateway`` by password."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not Path(tool).is_file():
        pytest.fail("mosquitto_passwd is missing: it comes with mosquitto (`make test`)")
    ca, cert, key = make_pki(tmp_path)
    passwords = tmp_path / "passwords"
    subprocess.run([tool, "-b", "-c", str(passwords), "twin", "twin-secret"], check=True)
    subprocess.run([tool, "-b", str(passwords), "gateway", "gw-secret"], check=True)
    m = Mosquitto(tmp_path)
    m.conf.write_text(
        f"listener {m.port} 127.0.0.1\n"
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
        "user root\n"
        f"log_dest file {tmp_path / 'mosquitto.log'}\n"
    )
    m.start()
    yield m, ca
    m.stop()


def _config(port: int, who: str, ca: Path | None, client_id: str) -> MqttConfig:
    return MqttConfig(
        url=f"mqtts://{who}@127.0.0.1:{port}",
        client_id=client_id,
        tls_context=ssl.create_default_context(cafile=str(ca)) if ca else None,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
    )


def _link_details(got: Collector) -> list[str]:
    return [i.detail for i in got.items if isinstance(i, Link) and not i.up]


def test_samples_over_tls_with_passwords(tls_broker: tuple[Mosquitto, Path]) -> None:
    broker, ca = tls_broker

    async def main() -> None:
        got = Collector()
        source = MqttSource(
            _config(broker.port, "twin:twin-secret", ca, "twin-tls"), got, addresses=[TOPIC]
        )
        gateway = _config(broker.port, "gateway:gw-secret", ca, "gw-tls")
        async with running(source), MqttPublisher(gateway) as pub:
            await got.until(lambda _: got.links() == [True])
            for k in range(50):
                assert await pub.publish(TOPIC, k, ts=1_700_000_000.0 + k)
            await got.until(lambda _: len(got.samples()) == 50)
        assert [s.value for s in got.samples()] == list(range(50))
        (up,) = [i for i in got.items if isinstance(i, Link) and i.up]
        assert "twin:***@127.0.0.1" in up.detail and "twin-secret" not in up.detail

    asyncio.run(asyncio.wait_for(main(), 30))


def test_password_from_the_environment(
    tls_broker: tuple[Mosquitto, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mqtts://twin@...`` (no password in the URL, so none on a command line) takes
    ``TWIN_MQTT_PASSWORD``; a password in the URL wins over it."""
    broker, ca = tls_broker
    monkeypatch.setenv(PASSWORD_ENV, "twin-secret")
    assert _config(broker.port, "twin", ca, "x").credentials() == ("twin", "twin-secret")
    assert _config(broker.port, "twin:other", ca, "x").credentials() == ("twin", "other")

    async def main() -> None:
        got = Collector()
        source = MqttSource(_config(broker.port, "twin", ca, "twin-env"), got, addresses=[TOPIC])
        async with running(source):
            await got.until(lambda _: got.links() == [True])

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize(
    ("who", "trust", "says"),
    [
        ("twin:wrong-pass-123", True, "not authorised"),  # mosquitto 2 answers code 5, not 4
        ("twin:twin-secret", False, "CERTIFICATE_VERIFY_FAILED"),
    ],
    ids=["wrong-password", "untrusted-server"],
)
def test_refused_connections_keep_the_link_down(
    tls_broker: tuple[Mosquitto, Path],
    who: str,
    trust: bool,
    says: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker, ca = tls_broker
    caplog.set_level(logging.INFO, logger="twin.live.mqtt")

    async def main() -> None:
        got = Collector()
        source = MqttSource(
            _config(broker.port, who, ca if trust else None, "twin-refused"),
            got,
            addresses=[TOPIC],
        )
        async with running(source):
            await got.until(lambda _: any(says in d for d in _link_details(got)))
            await asyncio.sleep(0.5)  # it keeps retrying, and never gets in
        assert got.links() and not any(got.links()), got.links()
        assert got.samples() == []

    asyncio.run(asyncio.wait_for(main(), 30))
    password = who.split(":")[1]
    assert "reconnecting" in caplog.text and "twin:***@127.0.0.1" in caplog.text
    assert password not in caplog.text


def test_passwords_never_printed() -> None:
    assert redact_url("mqtts://twin:s3cret@broker:8883") == "mqtts://twin:***@broker:8883"
    assert redact_url("mqtt://broker:1883") == "mqtt://broker:1883"
    assert redact_url("mqtt://only-user@broker:1883") == "mqtt://only-user@broker:1883"
    assert "s3cret" not in str(parse_source("mqtts://twin:s3cret@broker:8883?sparkplug=1"))
