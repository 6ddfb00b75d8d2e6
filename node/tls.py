"""TLS contexts for DICOM associations (PS3.15 B.1, TLS 1.2 or newer).

The SCP presents ``tls_cert_file``; with ``tls_ca_file`` it also requires and
verifies the modality's certificate (mutual TLS), which is how a node knows who
is calling beyond the AE title.
"""

from __future__ import annotations

import ssl

from node.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The SCP's context, or None when TLS is not configured."""
    if not settings.tls_enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    if settings.tls_ca_file is not None:
        ctx.load_verify_locations(cafile=str(settings.tls_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(settings: Settings) -> ssl.SSLContext | None:
    """The export SCU's context when ``export_tls`` is on: verify the PACS, show our cert."""
    if not settings.export_tls:
        return None
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH,
        cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None,
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_enabled:
        ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    return ctx
