"""Talk to a running Dagster webserver over its GraphQL API (reload the code location).

The webserver address is ``$WAN_PIPELINE_WEBSERVER`` or ``http://127.0.0.1:3000`` (``make ui``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from wan_pipeline.errors import WanPipelineError

DEFAULT_URL = "http://127.0.0.1:3000"

_LOCATIONS = "query { workspaceOrError { __typename ... on Workspace { locationEntries { name } } } }"
_RELOAD = """mutation Reload($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
  __typename ... on WorkspaceLocationEntry { name locationOrLoadError { __typename ... on PythonError { message } } }
  ... on PythonError { message } ... on RepositoryLocationNotFound { message } ... on UnauthorizedError { message } } }"""


def webserver_url() -> str:
    return os.environ.get("WAN_PIPELINE_WEBSERVER", DEFAULT_URL).rstrip("/")


def graphql(query: str, variables: dict | None = None, url: str | None = None, timeout_s: float = 10.0) -> dict:
    """POST a GraphQL query to ``<url>/graphql``; returns ``data``.

    Raises :class:`WanPipelineError` when the webserver cannot be reached or answers errors.
    """
    url = (url or webserver_url()) + "/graphql"
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            payload = json.loads(resp.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise WanPipelineError(
            f"no Dagster webserver answering at {url} ({exc}); start it with `make ui` or set WAN_PIPELINE_WEBSERVER"
        ) from None
    if payload.get("errors"):
        raise WanPipelineError(f"{url}: {payload['errors'][0].get('message')}")
    return payload["data"]


def reload_code_locations(url: str | None = None, timeout_s: float = 60.0) -> list[str]:
    """Reload every code location of the webserver (new stories, changed scene lists).

    Returns the names reloaded. Raises :class:`WanPipelineError` when unreachable or a location
    fails to load (with its error message).
    """
    data = graphql(_LOCATIONS, url=url, timeout_s=timeout_s)
    names = [e["name"] for e in data["workspaceOrError"].get("locationEntries", [])]
    for name in names:
        res = graphql(_RELOAD, {"name": name}, url=url, timeout_s=timeout_s)["reloadRepositoryLocation"]
        error = res.get("message") or ((res.get("locationOrLoadError") or {}).get("message"))
        if error:
            raise WanPipelineError(f"reloading code location {name!r} failed: {error}")
    return names
