"""What `tidal status` and `tidal explain` share: reading the daemon's debug endpoint
(scaler.debug) and writing times, ages and values the way both print them."""

from __future__ import annotations

import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from scaler.errors import TidalError

JSON = dict[str, Any]
DEFAULT_ADDRESS = "127.0.0.1:8080"
ADDRESS_HELP = (
    "the daemon's metrics port, host:port (default %(default)s; e.g. after "
    "`kubectl -n tidal-system port-forward deploy/tidal 8080`)"
)
TIMEOUT = 10.0


class EndpointError(TidalError):
    """The debug endpoint could not be read (the daemon is down, or the object is unknown)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def fetch(address: str, path: str, **query: str) -> JSON:
    """GET http://ADDRESS/PATH and decode its JSON."""
    base = address if "://" in address else f"http://{address}"
    url = base.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body: JSON = json.load(response)
            return body
    except urllib.error.HTTPError as exc:
        try:
            message = str(json.load(exc).get("error") or exc.reason)
        except (ValueError, AttributeError):
            message = str(exc.reason)
        raise EndpointError(message, exc.code) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(f"cannot read {url}: {reason}") from exc


def duration(seconds: float | None) -> str:
    """3 s, 4 min 12 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, sec = divmod(s, 60)
        return f"{m} min {sec} s" if sec else f"{m} min"
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h} h {rest // 60} min" if rest // 60 else f"{h} h"
    d, rest = divmod(s, 86400)
    return f"{d} d {rest // 3600} h" if rest // 3600 else f"{d} d"


def clock(epoch: float | None) -> str:
    """Wall time of the day in UTC (12:01:05), the date too when it is not today's."""
    if epoch is None:
        return "-"
    at = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    if at.date() != dt.datetime.now(tz=dt.UTC).date():
        return at.strftime("%Y-%m-%d %H:%M:%S")
    return at.strftime("%H:%M:%S")


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
