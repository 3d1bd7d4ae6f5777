"""`--shards auto`: this replica's peer listener and peer client (metrics_api.peer).

Both follow Tidal's managed certificate (scaler.certmanager): the listener serves the shared
serving certificate and trusts the Secret's CA bundle; the client presents a certificate with
the common name `metrics_api.peer.PEER_CN` that this replica issues itself, in memory and in its
private PEM directory, from the CA that signs now — again whenever the material changes. The
CA key never leaves the Secret and this process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from metrics_api.certs import issue_client
from metrics_api.peer import PEER_CN, PeerClient, PeerCredentials, PeerTls
from metrics_api.pemfiles import PemDir
from scaler.certmanager import ManagedCertificate
from scaler.servingcert import CertMaterial, ca_certificates

log = logging.getLogger(__name__)


class Peering:
    def __init__(
        self,
        certificate: ManagedCertificate,
        pem_dir: PemDir,
        registry: CollectorRegistry,
        *,
        validity: float,
        clock: Callable[[], float],
    ) -> None:
        if certificate.material is None:
            raise ValueError("the managed certificate is not loaded yet")
        self._certificate = certificate
        self._pem_dir = pem_dir
        self._validity = validity
        self._clock = clock
        self.tls = PeerTls(self.credentials(certificate.material))
        self.client = PeerClient(self.tls, registry)
        certificate.on_change.append(self._follow)

    def credentials(self, material: CertMaterial) -> PeerCredentials:
        cert, key = issue_client(
            ca_certificates(material)[0], material.ca_key, PEER_CN, self._clock(), self._validity
        )
        client_cert, client_key = self._pem_dir.write_pair(cert, key)
        server_cert, server_key = self._certificate.files
        return PeerCredentials(
            ca_bundle=material.bundle,
            server_cert=server_cert,
            server_key=server_key,
            client_cert=client_cert,
            client_key=client_key,
            server_name=self._certificate.target.hosts[0],
        )

    def _follow(self, material: CertMaterial) -> None:
        self.tls.update(self.credentials(material))
