"""Safe HTTP fetching for URL and web-API sources.

- Only http(s). Every host is resolved first and refused when any of its addresses is
  not globally routable (loopback, private, link-local, the cloud metadata services,
  carrier-grade NAT, reserved...), unless its network is explicitly allowed in config.
  Redirects are followed by hand, and every hop is checked again.
- Bounded size (Content-Length first, then a running count while streaming), a
  per-request timeout, retries with exponential backoff on timeouts, connection errors,
  5xx and 429 (honouring Retry-After, capped).
- Image responses are checked by content type and by magic bytes.
- Secrets (API keys in query strings) never reach messages: callers pass them to
  ``redact`` and every reason text goes through it.

Known limit: the address check and the connection resolve the name separately, so a DNS
server that answers differently within milliseconds (rebinding) is not defended against.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, Field

from flywheel.filters.decode import sniff_image_type

class FetchSettings(BaseModel):
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, description="extra attempts after the first")
    backoff_s: float = Field(0.5, ge=0)
    max_retry_after_s: float = Field(60.0, ge=0)
    max_bytes: int = Field(25_000_000, ge=1)
    max_redirects: int = Field(5, ge=0)
    concurrency: int = Field(8, ge=1)
    allowed_networks: list[str] = Field(default_factory=list, description="CIDRs allowed despite not being global, e.g. 127.0.0.0/8 in tests")
    user_agent: str = "cosmicman-flywheel/0.1 (dataset research)"


@dataclass
class FetchResult:
    status: str  # ok / http_error / timeout / too_large / not_image / blocked / error
    reason: str | None = None
    data: bytes | None = None
    media_type: str | None = None
    final_url: str | None = None
    http_status: int | None = None
    attempts: int = 0
    headers: Mapping[str, str] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class SafeFetcher:
    def __init__(self, settings: FetchSettings | None = None, secrets: Iterable[str] = ()):
        self.settings = settings or FetchSettings()
        self._allowed = [ipaddress.ip_network(n, strict=False) for n in self.settings.allowed_networks]
        self._secrets = [s for s in secrets if s]
        self._client = httpx.Client(timeout=self.settings.timeout_s, follow_redirects=False,
                                    headers={"User-Agent": self.settings.user_agent})

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    # ---- address policy ---------------------------------------------------------------
    def _address_allowed(self, ip: ipaddress._BaseAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self._allowed):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: str) -> str | None:
        """Why ``url`` may not be fetched, or None when it may."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"scheme {parts.scheme or '(none)'!r} is not http(s)"
        host = parts.hostname
        if not host:
            return "no host in URL"
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return "invalid port"
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            return f"cannot resolve {host}: {exc.strerror}"
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if not self._address_allowed(ip):
                return f"{host} resolves to non-public address {ip}"
        return None

    # ---- requests ---------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.settings.backoff_s * (2 ** attempt)
        if retry_after:
            try:
                delay = float(retry_after)
            except ValueError:
                delay = self.settings.backoff_s * (2 ** attempt)
        time.sleep(min(max(delay, 0.0), self.settings.max_retry_after_s))

    def get(self, url: str, *, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            expect_image: bool = True) -> FetchResult:
        attempts = 0
        last: FetchResult | None = None
        for attempt in range(self.settings.retries + 1):
            attempts += 1
            result = self._get_once(url, params, headers, expect_image)
            result.attempts = attempts
            retry_after = (result.headers or {}).get("retry-after") if result.http_status == 429 else None
            transient = result.status in ("timeout", "error") or (result.http_status or 0) >= 500 or result.http_status == 429
            if result.ok or not transient or attempt == self.settings.retries:
                return result
            last = result
            self._backoff(attempt, retry_after)
        return last  # pragma: no cover - the loop always returns

    def _get_once(self, url: str, params, headers, expect_image: bool) -> FetchResult:
        current = url
        query = params
        for _ in range(self.settings.max_redirects + 1):
            blocked = self.check_url(current)
            if blocked:
                return FetchResult("blocked", self.redact(blocked), final_url=self.redact(current))
            try:
                with self._client.stream("GET", current, params=query, headers=headers) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            return FetchResult("http_error", f"redirect {resp.status_code} without Location", http_status=resp.status_code)
                        current = urljoin(str(resp.url), location)
                        query = None
                        continue
                    hdrs = {k.lower(): v for k, v in resp.headers.items()}
                    if resp.status_code >= 400:
                        return FetchResult("http_error", f"HTTP {resp.status_code}", http_status=resp.status_code,
                                           final_url=self.redact(str(resp.url)), headers=hdrs)
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > self.settings.max_bytes:
                        return FetchResult("too_large", f"Content-Length {declared} > {self.settings.max_bytes}",
                                           http_status=resp.status_code, headers=hdrs)
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > self.settings.max_bytes:
                            return FetchResult("too_large", f"body exceeds {self.settings.max_bytes} bytes",
                                               http_status=resp.status_code, headers=hdrs)
                        chunks.append(chunk)
                    data = b"".join(chunks)
                    ctype = (resp.headers.get("content-type") or "").split(";")[0].strip().lower()
                    final = self.redact(str(resp.url))
            except httpx.TimeoutException:
                return FetchResult("timeout", f"no complete response within {self.settings.timeout_s}s")
            except httpx.HTTPError as exc:
                return FetchResult("error", self.redact(f"{type(exc).__name__}: {exc}"))
            if not expect_image:
                return FetchResult("ok", data=data, media_type=ctype, final_url=final, http_status=resp.status_code, headers=hdrs)
            sniffed = sniff_image_type(data[:16])
            if sniffed is None:
                return FetchResult("not_image", f"content type {ctype or '(none)'}, no image signature",
                                   media_type=ctype, final_url=final, http_status=resp.status_code)
            if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
                return FetchResult("not_image", f"content type {ctype} for {sniffed} bytes", media_type=ctype,
                                   final_url=final, http_status=resp.status_code)
            return FetchResult("ok", data=data, media_type=sniffed, final_url=final, http_status=resp.status_code, headers=hdrs)
        return FetchResult("http_error", f"more than {self.settings.max_redirects} redirects")
