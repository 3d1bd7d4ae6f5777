"""Why a piece of a round is missing: per-piece failures and the round-wide one."""

from __future__ import annotations

from dataclasses import dataclass

import aiokafka.errors as kafka_errors

from scaler.errors import QueryError, ScalerError


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one piece of a round is missing; `error()` makes a fresh exception per waiter."""

    message: str
    query: bool = False  # the source answered, unusably (QueryError) vs could not be read
    retriable: bool = False  # a broker's transient answer (no leader yet...): the watcher waits

    def error(self) -> ScalerError:
        return QueryError(self.message) if self.query else ScalerError(self.message)


class RoundFailed(Exception):
    """A round could not proceed at all (no broker reachable, metadata unreadable)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def broker_error(code: int) -> str:
    error = kafka_errors.for_code(code)
    return f"{getattr(error, 'message', error.__name__)} ({code})"
