"""DICOM TLS for the SCP and the export SCU, with certificates made in the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.db.engine import upgrade
from node.export import OutputFile, add_to_outbox, deliver_due
from node.service import Node
from node.settings import configure
from tests.helpers import dcmtk, echo_ok, make_dx, run, write


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, issuer_key, issuer_name, *, ca: bool = False, key=None):  # type: ignore[no-untyped-def]
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(issuer_key or key, hashes.SHA256())


def _write(folder: Path, name: str, key, cert) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _issue("CXR Node test CA", None, None, ca=True)
    server_key, server_cert = _issue("cxr-node", ca_key, ca_cert.subject)
    client_key, client_cert = _issue("modality", ca_key, ca_cert.subject)
    _, ca_path = _write(folder, "ca", ca_key, ca_cert)
    server_key_path, server_path = _write(folder, "server", server_key, server_cert)
    client_key_path, client_path = _write(folder, "client", client_key, client_cert)
    return {
        "ca": ca_path,
        "server": server_path,
        "server_key": server_key_path,
        "client": client_path,
        "client_key": client_key_path,
    }


@pytest.fixture
def tls_node(node_config, pki):  # type: ignore[no-untyped-def]
    settings = configure(tls_cert_file=pki["server"], tls_key_file=pki["server_key"], tls_ca_file=pki["ca"])
    node = Node(settings)
    node.start()
    yield node
    node.stop()


def _client_ctx(pki: dict[str, Path], with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if with_cert:
        ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
    return ctx


def test_tls_association_works_and_plain_fails(tls_node: Node, pki: dict[str, Path]) -> None:
    _, port = tls_node.address
    assert echo_ok(port, (_client_ctx(pki), "localhost"))
    assert not echo_ok(port)  # plain DICOM to the TLS port
    assert not echo_ok(port, (_client_ctx(pki, with_cert=False), "localhost"))  # no client cert


def test_dcmtk_echoscu_over_tls(tls_node: Node, pki: dict[str, Path]) -> None:
    _, port = tls_node.address
    done = run(
        [
            dcmtk("echoscu"),
            "+tls",
            str(pki["client_key"]),
            str(pki["client"]),
            "+cf",
            str(pki["ca"]),
            "-aec",
            "CXRNODE",
            "127.0.0.1",
            str(port),
        ]
    )
    assert done.returncode == 0, done.stderr
    plain = run([dcmtk("echoscu"), "-aec", "CXRNODE", "127.0.0.1", str(port)])
    assert plain.returncode != 0


def test_export_over_tls(tls_node: Node, pki: dict[str, Path], tmp_path: Path, cr_chest: Path) -> None:
    """The export SCU speaks TLS to a TLS destination (here: the TLS node itself)."""
    _, port = tls_node.address
    settings = configure(destinations=[f"CXRNODE@127.0.0.1:{port}"], export_tls=True)
    upgrade()
    ds = make_dx(cr_chest)
    path = write(ds, tmp_path / "out.dcm")
    add_to_outbox([OutputFile("sc", path, ds.SOPInstanceUID, ds.StudyInstanceUID, None)], settings)
    assert deliver_due(settings) == {"sent": 1}
    assert tls_node.ingest.spool.contains(ds.SOPInstanceUID)


def test_tls_settings_must_come_in_pairs(node_config, pki) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="go together"):
        configure(tls_cert_file=pki["server"])
