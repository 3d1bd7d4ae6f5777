"""How to reach one Kafka cluster: the settings every shared client of the cluster is keyed by."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from scaler.clients import ClientKey, TlsSettings, fingerprint


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """How to reach one Kafka cluster; the repr and the ClientKey hold no secret."""

    bootstrap: tuple[tuple[str, int], ...]
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = field(default=None, repr=False)  # contexts come from the cache
    timeout: float = 3.0  # seconds per request (and per connect)
    window: float = 0.005  # seconds a round waits for more samples to join
    metadata_max_age: float = 60.0  # seconds before watched topics' metadata is re-read
    watch_interval: float = 0.1  # seconds between the push watcher's end-offset reads

    @property
    def endpoint(self) -> str:
        return ",".join(sorted(f"{host}:{port}" for host, port in self.bootstrap))

    @property
    def tls_fingerprint(self) -> str:
        """Digest of the TLS material (for the ClientKey); "" without TLS."""
        return "" if self.tls is None else self.tls.fingerprint

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The shared TLS context, built on this thread if missing (connections use
        ``await tls.context()``, which builds off the event loop)."""
        return None if self.tls is None else self.tls.context_now()

    def key(self) -> ClientKey:
        return ClientKey(
            "kafka",
            self.endpoint,
            fingerprint(
                self.security_protocol,
                self.sasl_mechanism,
                self.username,
                self.password,
                self.tls_fingerprint,
                self.timeout,
                self.window,
                self.metadata_max_age,
            ),
        )

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()
