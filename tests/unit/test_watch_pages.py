"""Watcher's paged list when a continue token has expired.

The API server is a fake ON PURPOSE here: a continue token expires (410) only when etcd has
compacted the list's snapshot away in the middle of a list, which a real control plane cannot be
made to do at a chosen page. Paging itself, and deletions reported across pages, are tested
against the real API server in tests/integration/test_watch_paging.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from scaler.errors import KubeError
from scaler.kube.client import JSON
from scaler.kube.watch import Watcher, object_key


def _cm(name: str, rv: str = "1") -> JSON:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}}


class ExpiringLists:
    """Answers a list's first page, then 410 for its continuation; an unpaged list gets `now`."""

    def __init__(self, first_page: list[JSON], now: list[JSON]) -> None:
        self.first_page, self.now = first_page, now
        self.queries: list[dict[str, Any]] = []

    async def get(self, path: str, *, accept: str = "", **query: Any) -> JSON:
        self.queries.append(query)
        if "continue" in query:
            raise KubeError("the provided continue parameter is too old", 410)
        if "limit" in query:
            return {
                "metadata": {"resourceVersion": "10", "continue": "t1"},
                "items": self.first_page,
            }
        return {"metadata": {"resourceVersion": "20"}, "items": self.now}


async def test_an_expired_continuation_restarts_the_list_unpaged_and_forgets_the_old_snapshot() -> (
    None
):
    api = ExpiringLists(first_page=[_cm("a"), _cm("b.gone")], now=[_cm("a"), _cm("c.new")])
    events: list[tuple[str, str]] = []

    async def record(kind: str, obj: JSON) -> None:
        events.append((kind, object_key(obj)[1]))

    watcher = Watcher(api, "/api/v1/configmaps", record, page_size=2)  # type: ignore[arg-type]
    rv = await watcher._list()

    assert rv == "20"  # the watch resumes from the snapshot the cache now holds
    assert [("limit" in q, "continue" in q) for q in api.queries] == [
        (True, False),
        (True, True),
        (False, False),
    ]
    assert sorted(k[1] for k in watcher.objects) == ["a", "c.new"]
    # b.gone came from the expired snapshot's first page: reported, then found gone.
    assert events == [
        ("ADDED", "a"),
        ("ADDED", "b.gone"),
        ("DELETED", "b.gone"),
        ("ADDED", "c.new"),
    ]
    assert watcher.failing_since is None
    assert watcher.list_pages == 2


async def test_a_410_on_the_first_page_is_not_a_continuation_and_propagates() -> None:
    class Gone:
        async def get(self, path: str, **query: Any) -> JSON:
            raise KubeError("gone", 410)

    async def ignore(kind: str, obj: JSON) -> None:
        return None

    watcher = Watcher(Gone(), "/api/v1/configmaps", ignore)  # type: ignore[arg-type]
    with pytest.raises(KubeError) as caught:  # run() retries it with backoff
        await watcher._list()
    assert caught.value.status == 410
