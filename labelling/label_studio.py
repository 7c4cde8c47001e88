"""A running Label Studio, over its REST API (the standard library's urllib: label.py needs no SDK).

Authentication takes either kind of key Label Studio 1.23 issues: a personal access token (a JWT refresh
token, the default) is exchanged for an access token (POST /api/token/refresh, then `Bearer`); any other key
is a legacy token (`Token`), which an organisation must enable first. Every failure (no server, a refused
key, an error answer) is a one-line UserError naming the call.
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ElementTree

from common.errors import UserError
from labelling.annotations import CONTROL

JWT = re.compile(r"^[\w-]+\.[\w-]+\.[\w-]+$")  # three base64url parts: a personal access token
TIMEOUT_SECONDS = 120.0


class LabelStudio:
    def __init__(self, url: str, api_key: str, timeout: float = TIMEOUT_SECONDS) -> None:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"--label-studio {url!r} is not an http(s) address, e.g. http://localhost:8080")
        self.url, self.timeout = url.rstrip("/"), timeout
        if JWT.match(api_key):
            access = self._request("POST", "/api/token/refresh", {"refresh": api_key}, {})
            self.headers = {"Authorization": f"Bearer {access['access']}"}
        else:
            self.headers = {"Authorization": f"Token {api_key}"}

    def _request(self, method: str, path: str, body, headers: dict):
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                content = response.read()
        except urllib.error.HTTPError as error:
            raise UserError(f"Label Studio at {self.url} answered {error.code} to {method} {path}: "
                            f"{_detail(error.read())}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise UserError(f"cannot reach Label Studio at {self.url} ({reason}); is it running?") from None
        try:
            return json.loads(content) if content else None
        except json.JSONDecodeError:
            raise UserError(f"Label Studio at {self.url} answered {method} {path} with something not JSON "
                            f"(is {self.url} a Label Studio?)") from None

    def call(self, method: str, path: str, body=None):
        return self._request(method, path, body, self.headers)

    def create_project(self, title: str, label_config: str) -> int:
        return int(self.call("POST", "/api/projects", {"title": title, "label_config": label_config})["id"])

    def project(self, project: int) -> dict:
        return self.call("GET", f"/api/projects/{project}")

    def local_storages(self, project: int) -> list[dict]:
        return self.call("GET", f"/api/storages/localfiles?project={project}")

    def add_local_storage(self, project: int, path: str, title: str) -> int:
        """Let the project serve the images under `path` (Label Studio must run with
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and a LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT above it)."""
        body = {"project": project, "title": title, "path": path, "use_blob_urls": False}
        return int(self.call("POST", "/api/storages/localfiles", body)["id"])

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        return int(self.call("POST", f"/api/projects/{project}/import", tasks)["task_count"])

    def export(self, project: int) -> list[dict]:
        """Every task of the project in the JSON export format (annotated or not, all annotations)."""
        return self.call("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")


def _detail(content: bytes) -> str:
    try:
        answer = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return (content.decode(errors="replace").strip().splitlines() or ["(empty answer)"])[0][:200]
    if isinstance(answer, dict):
        detail = answer.get("detail") or answer
        errors = answer.get("validation_errors")
        return f"{detail}{f' {errors}' if errors else ''}"[:300]
    return str(answer)[:300]


def config_classes(label_config: str) -> list[str] | None:
    """The choices of the labelling config's Choices control named `label` (None: there is none)."""
    try:
        root = ElementTree.fromstring(label_config)
    except ElementTree.ParseError:
        return None
    for control in root.iter("Choices"):
        if control.get("name") == CONTROL:
            return [choice.get("value") for choice in control.iter("Choice")]
    return None

