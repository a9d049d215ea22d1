"""A small httpx client of the prunehive service; the URL and token come from flags or the environment."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

TERMINAL = ("succeeded", "failed", "cancelled")


class ClientError(ValueError):
    """A refused or failed request, in one line (the CLI prints it and exits 2)."""


class ServiceClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the prunehive server at {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise ClientError(f"server answered {response.status_code}: {_detail(response)}")
        return response

    def submit(self, text: str, json_body: bool = False) -> str:
        content_type = "application/json" if json_body else "application/yaml"
        data = self.request("POST", "/jobs", content=text.encode(), headers={"Content-Type": content_type}).json()
        return str(data["job_id"])

    def jobs(self, limit: int = 50) -> dict[str, Any]:
        return dict(self.request("GET", "/jobs", params={"limit": limit}).json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/jobs/{job_id}").json())

    def trials(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"/jobs/{job_id}/trials").json()["trials"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"/jobs/{job_id}/cancel").json())

    def logs(self, job_id: str) -> str:
        return self.request("GET", f"/jobs/{job_id}/logs").text

    def wait(
        self, job_id: str, on_update: Callable[[dict[str, Any]], None] | None = None, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        """Poll until the job is finished; returns its final detail."""
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            time.sleep(poll_seconds)


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
    if isinstance(detail, list) and detail:  # FastAPI's own validation errors
        first = detail[0]
        return f"{'.'.join(str(p) for p in first.get('loc', []))}: {first.get('msg')}"
    return str(detail)


def connect(server: str | None, token: str | None) -> ServiceClient:
    """From flags, else PRUNEHIVE_SERVER / PRUNEHIVE_TOKEN."""
    url = server or os.environ.get("PRUNEHIVE_SERVER")
    if not url:
        raise ClientError("no server: pass --server URL or set PRUNEHIVE_SERVER")
    secret = token or os.environ.get("PRUNEHIVE_TOKEN")
    if not secret:
        raise ClientError("no token: pass --token or set PRUNEHIVE_TOKEN (from `prunehive users add NAME`)")
    return ServiceClient(url, secret)
