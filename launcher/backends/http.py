"""One small HTTP client for every provider: httpx, with tenacity retries on 429, 5xx and connection
errors (honouring ``Retry-After``), and never a retry on 400/401/403/404 (they will not get better).

The API key travels in the Authorization header only, never in a URL, and no error message built here
contains it.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, stop_after_delay

from launcher.errors import AuthRejected, ProviderError

RETRY_STATUSES = {429, 500, 502, 503, 504}


class RetryableHTTPError(Exception):
    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.retry_after = status, retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


@dataclass
class RetryPolicy:
    attempts: int = 6
    max_total_s: float = 120.0
    base_s: float = 0.5
    cap_s: float = 20.0
    #: seconds for one request (connect, read)
    timeout_s: float = 30.0

    @classmethod
    def quick(cls) -> RetryPolicy:
        """For lookups a user waits on (prices, lists): an answer, or a failure, within seconds."""
        return cls(attempts=2, max_total_s=6.0, base_s=0.5, cap_s=2.0, timeout_s=5.0)

    def wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(self.cap_s, self.base_s * 2 ** (state.attempt_number - 1))
        if isinstance(exc, RetryableHTTPError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), 60.0, self.max_total_s)
        return backoff


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryableHTTPError | httpx.TransportError)


class HTTPClient:
    def __init__(self, base_url: str, api_key: str, provider: str, key_env: str, *,
                 policy: RetryPolicy | None = None) -> None:
        self.provider, self.key_env = provider, key_env
        self.policy = policy or RetryPolicy()
        self._client = httpx.Client(base_url=base_url, timeout=self.policy.timeout_s,
                                    headers={"Authorization": f"Bearer {api_key}",
                                             "User-Agent": "rtrain", "Accept": "application/json"})

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The response of a request that is neither retryable nor an auth failure (the caller reads
        4xx bodies: providers put their error messages there)."""
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self.policy.attempts) | stop_after_delay(self.policy.max_total_s),
            wait=self.policy.wait, reraise=True,
        )
        try:
            response: httpx.Response = retrying(self._once, method, url, **kwargs)
        except RetryableHTTPError as exc:
            raise ProviderError(f"{self.provider} API kept failing ({exc}); gave up after "
                                f"{self.policy.attempts} tries") from None
        except httpx.TransportError as exc:
            raise ProviderError(f"cannot reach the {self.provider} API: {type(exc).__name__}: {exc}") from None
        if response.status_code in (401, 403):
            raise AuthRejected(f"{self.provider} rejected the API key (HTTP {response.status_code}): check "
                               f"{self.key_env}")
        return response

    def _once(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self._client.request(method, url, **kwargs)
        if response.status_code in RETRY_STATUSES:
            raise RetryableHTTPError(response.status_code, parse_retry_after(response.headers.get("Retry-After")),
                                     response.text[:200])
        return response
