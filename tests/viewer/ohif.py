"""OHIF (the npm package's prebuilt app) served on loopback, with Orthanc's DICOMweb behind it.

One origin serves both the app and ``/dicom-web/`` (proxied to Orthanc's
DICOMweb plugin), so the browser needs no CORS. ``app-config.js`` is ours:
one DICOMweb data source, no study list, nothing fetched from outside.
"""

from __future__ import annotations

import mimetypes
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

OHIF_VERSION = "3.13.2"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")

APP_CONFIG = """window.config = {
  routerBasename: null,
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: false,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  investigationalUseDialog: { option: 'never' },
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (tests)',
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
"""


def ohif_dir() -> Path:
    """The unpacked ``dist`` of npm's ``@ohif/app`` (deploy/test.sh puts it there)."""
    default = Path.home() / ".cache" / "cxr-node" / f"ohif-{OHIF_VERSION}"
    path = Path(os.environ.get("CXR_NODE_OHIF_DIR", default))
    if not (path / "index.html").is_file():
        pytest.fail(f"OHIF {OHIF_VERSION} not found at {path}: run deploy/test.sh (npm pack @ohif/app)")
    return path


def dicomweb_config() -> dict[str, object]:
    """Orthanc configuration that loads the DICOMweb plugin (Debian's orthanc-dicomweb)."""
    if not DICOMWEB_PLUGIN.exists():
        pytest.fail(f"{DICOMWEB_PLUGIN} missing: apt-get install orthanc-dicomweb")
    return {
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
    }


class OhifServer:
    """The OHIF app and a proxy of ``/dicom-web/`` to ``orthanc_url``, on 127.0.0.1."""

    def __init__(self, root: Path, orthanc_url: str) -> None:
        self.root = root
        self.orthanc_url = orthanc_url.rstrip("/")
        self.requests: list[str] = []  # paths asked for, to tell what the viewer loaded
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> OhifServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if self.path.startswith("/dicom-web/"):
                    self._proxy()
                    return
                path = self.path.split("?", 1)[0]
                if path == "/app-config.js":
                    self._send(200, APP_CONFIG.encode(), "application/javascript")
                    return
                file = (server.root / path.lstrip("/")).resolve()
                if not file.is_file() or server.root.resolve() not in file.parents:
                    file = server.root / "index.html"  # the app's own routes (/viewer, ...)
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix == ".wasm":
                    kind = "application/wasm"
                self._send(200, file.read_bytes(), kind)

            def _proxy(self) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("accept",)}
                request = urllib.request.Request(server.orthanc_url + self.path, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        body, status = response.read(), response.status
                        kind = response.headers.get("Content-Type", "application/octet-stream")
                except urllib.error.HTTPError as exc:
                    body, status = exc.read(), exc.code
                    kind = exc.headers.get("Content-Type", "text/plain")
                self._send(status, body, kind)

        return Handler
