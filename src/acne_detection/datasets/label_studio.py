"""``LabelStudioProject``: a Label Studio project as a Kedro dataset, over its REST API.

Saving creates the project (once, by title, with the labelling configuration), points a
local-files storage at the photo folder (read-only: the photos are served from where they
are, never uploaded or copied) and imports the tasks whose photo the project does not hold
yet, each with the model's pre-annotation. A task already there, and whatever a reviewer did
on it, is never touched. Loading exports every task of the project with its annotations and
predictions (Label Studio's JSON export).

The client is plain HTTP (``requests``): Label Studio's SDK would replace OpenCV and numpy in
the project's environment. A personal access token (``make labelstudio`` writes one, mode 600)
is exchanged at ``/api/token/refresh/`` for a short-lived bearer token, renewed when it expires.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

logger = logging.getLogger(__name__)


class LabelStudioClient:
    """Label Studio's REST API with a personal access token.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8080``.
        token: the personal access token (a JWT refresh token).
    """

    def __init__(self, url: str, token: str, *, timeout: float = 60) -> None:
        import requests

        self.url, self._token, self._timeout = url.rstrip("/"), token, timeout
        self._session = requests.Session()
        self._access: str | None = None

    def _refresh(self) -> None:
        answer = self._session.post(
            f"{self.url}/api/token/refresh/", json={"refresh": self._token}, timeout=self._timeout
        )
        if answer.status_code != 200:
            raise DatasetError(
                f"Label Studio at {self.url} refused the access token ({answer.status_code}: {answer.text[:200]}); "
                "make labelstudio writes a valid one to data/labelstudio/secrets/token"
            )
        self._access = answer.json()["access"]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; JSON in (``json=``), JSON out. Raises ``DatasetError`` naming the call."""
        import requests

        if self._access is None:
            self._refresh()
        for attempt in (1, 2):
            try:
                answer = self._session.request(
                    method,
                    f"{self.url}{path}",
                    headers={"Authorization": f"Bearer {self._access}"},
                    timeout=self._timeout,
                    **kwargs,
                )
            except requests.ConnectionError as err:
                raise DatasetError(
                    f"Label Studio does not answer at {self.url} ({type(err).__name__}); start it with make labelstudio"
                ) from None
            if answer.status_code == 401 and attempt == 1:  # the bearer token expired: renew it once
                self._refresh()
                continue
            if answer.status_code >= 400:
                raise DatasetError(f"Label Studio {method} {path}: {answer.status_code} {answer.text[:300]}")
            return answer.json() if answer.content else None
        return None

    def project_by_title(self, title: str) -> dict[str, Any] | None:
        found = self.request("GET", "/api/projects/", params={"title": title, "page_size": 1000})
        projects = found.get("results", found) if isinstance(found, dict) else found
        return next((p for p in projects if p.get("title") == title), None)

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task of a project as Label Studio's JSON export gives it (predictions by id only)."""
        return self.request(
            "GET", f"/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"}
        )

    def tasks(self, project: int) -> list[dict[str, Any]]:
        """Every task of a project, with its annotations and predictions: the JSON export with
        each task's predictions and reviewers filled in."""
        tasks = self.export(project)
        by_task: dict[int, list[dict[str, Any]]] = {}
        for prediction in self.request("GET", "/api/predictions/", params={"project": project}) or []:
            by_task.setdefault(prediction["task"], []).append(prediction)
        users = {
            u["id"]: {"id": u["id"], "email": u.get("email", "")} for u in self.request("GET", "/api/users/") or []
        }

        def _named(annotation: dict[str, Any]) -> dict[str, Any]:  # the reviewer by e-mail, not by number
            who = annotation.get("completed_by")
            return {**annotation, "completed_by": users.get(who, who) if isinstance(who, int) else who}

        return [
            {
                **task,
                "predictions": by_task.get(task["id"], []),
                "annotations": [_named(a) for a in task["annotations"]],
            }
            for task in tasks
        ]


class LabelStudioProject(AbstractDataset[dict[str, Any], list[dict[str, Any]]]):
    """A Label Studio project the ``review`` pipeline fills and the reviewed export comes from.

    Example catalog entry::

        label_studio_project:
          type: acne_detection.datasets.LabelStudioProject
          url: http://127.0.0.1:8080
          title: acne review
          token_file: data/labelstudio/secrets/token

    Args:
        url: the Label Studio server.
        title: the project's title (created on first save).
        token_file: the personal access token's file.
    """

    def __init__(self, *, url: str, title: str, token_file: str, metadata: dict[str, Any] | None = None) -> None:
        self._url, self._title, self._token_file = url, title, Path(token_file)
        self.metadata = metadata

    def _client(self) -> LabelStudioClient:
        if not self._token_file.is_file():
            raise DatasetError(
                f"{self._token_file}: no Label Studio access token; `make labelstudio` starts the server and writes it"
            )
        return LabelStudioClient(self._url, self._token_file.read_text(encoding="utf-8").strip())

    def save(self, data: dict[str, Any]) -> None:
        """Create or update the project from ``data``: ``label_config``, ``photo_folder`` (an
        absolute folder under Label Studio's document root) and ``tasks``."""
        client = self._client()
        project = client.project_by_title(self._title) or client.request(
            "POST", "/api/projects/", json={"title": self._title, "label_config": data["label_config"]}
        )
        folder = str(Path(data["photo_folder"]).resolve())
        storages = client.request("GET", "/api/storages/localfiles", params={"project": project["id"]}) or []
        if not any(s.get("path") == folder for s in storages):
            client.request(
                "POST",
                "/api/storages/localfiles",
                json={"project": project["id"], "path": folder, "use_blob_urls": True, "title": "photos (read-only)"},
            )
        held = {str(t.get("data", {}).get("photo")) for t in client.export(project["id"])}
        new = [t for t in data["tasks"] if t["data"]["photo"] not in held]
        if new:
            client.request("POST", f"/api/projects/{project['id']}/import", json=new)
        logger.info(
            "Label Studio project '%s' (%s/projects/%s): %d new photos pre-annotated, %d already there (untouched)",
            self._title,
            self._url,
            project["id"],
            len(new),
            len(data["tasks"]) - len(new),
        )

    def load(self) -> list[dict[str, Any]]:
        client = self._client()
        project = client.project_by_title(self._title)
        if project is None:
            raise DatasetError(f"Label Studio at {self._url} has no project '{self._title}': run the review pipeline")
        return client.tasks(project["id"])

    def _exists(self) -> bool:
        try:
            return self._client().project_by_title(self._title) is not None
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"url": self._url, "title": self._title, "token_file": str(self._token_file)}
