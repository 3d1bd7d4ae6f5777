"""Which replica owns which ScaledObject when every replica is active (`--shards auto`).

Pure values, no I/O: the live members (from their Leases, scaler.kube.members) form a `Ring`;
an object belongs to the member with the highest rendezvous score (highest random weight) for
its key. When a member joins or leaves, only the objects whose top-scoring member changed move:
about 1/n of them, and never between two members that both stay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, str]


@dataclass(frozen=True, slots=True, order=True)
class Member:
    identity: str
    address: str  # HOST:PORT where peers reach its metrics (scaler.service's peer listener)


def score(identity: str, key: Key) -> int:
    """The member's weight for the object: 64 bits of BLAKE2b over both names."""
    text = f"{identity}\x00{key[0]}\x00{key[1]}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Ring:
    members: tuple[Member, ...] = ()  # sorted by identity

    @classmethod
    def of(cls, members: Iterable[Member]) -> Ring:
        return cls(tuple(sorted(set(members))))

    def __len__(self) -> int:
        return len(self.members)

    def identities(self) -> tuple[str, ...]:
        return tuple(m.identity for m in self.members)

    def owner(self, key: Key) -> Member | None:
        """The member that polls and writes the object (None when no member is live)."""
        best: Member | None = None
        best_score = -1
        for m in self.members:
            s = score(m.identity, key)
            if s > best_score:  # ties (2**-64) go to the identity sorted first
                best, best_score = m, s
        return best

    def member(self, identity: str) -> Member | None:
        for m in self.members:
            if m.identity == identity:
                return m
        return None
