"""label.py sync against a real Label Studio server this module starts and stops (its own virtual environment,
.venv-label-studio, made by `make test`; FKAL_LABEL_STUDIO names its label-studio command). The test annotates
through the REST API as an annotator would, then sync must bring exactly those labels home."""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT, assert_one_line_error
from labelling.annotations import Annotation
from labelling.batch_files import labelling_config
from labelling.label_studio import config_classes
from labelling.project import Project
from labelling.sync import split_disputes
from test_label import CLASSES, label_py

USER, PASSWORD, LEGACY_TOKEN = "annotator@example.org", "fkal-test-password", "fkal0legacy0token0123"
STARTUP_SECONDS = 300
NAMES = CLASSES.split(",")


def label_studio_command() -> Path:
    """The label-studio command: FKAL_LABEL_STUDIO (set by make test, which builds it: missing is a failure),
    else the Makefile's venv when a developer made it (missing: skipped with the way to run it)."""
    given = os.environ.get("FKAL_LABEL_STUDIO")
    command = Path(given) if given else REPO_ROOT / ".venv-label-studio" / "bin" / "label-studio"
    if not command.is_file():
        if given:
            pytest.fail(f"FKAL_LABEL_STUDIO={given} does not exist (make test builds .venv-label-studio)")
        pytest.skip("Label Studio's venv is missing: run `make test` (it builds .venv-label-studio)")
    return command if command.is_absolute() else REPO_ROOT / command


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A started Label Studio with a logged-in session (for what only the web UI's session may do)."""

    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url, self.process = url, process
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def login(self) -> None:
        page = self.opener.open(f"{self.url}/user/login/", timeout=60).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": token}).encode()
        self.opener.open(urllib.request.Request(f"{self.url}/user/login/", data=form,
                                                headers={"Referer": f"{self.url}/user/login/"}), timeout=60)

    def session_call(self, method: str, path: str, body=None):
        csrf = next(cookie.value for cookie in self.jar if cookie.name == "csrftoken")
        request = urllib.request.Request(
            self.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-CSRFToken": csrf, "Referer": f"{self.url}/"})
        with self.opener.open(request, timeout=60) as response:
            content = response.read()
            return (json.loads(content) if content else None), response.headers.get("Content-Type", "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    command = label_studio_command()
    base = tmp_path_factory.mktemp("label-studio")
    documents, data = base / "documents", base / "data"
    documents.mkdir()
    port = free_port()
    environment = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data),
                   "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                   "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(documents)}
    log = open(base / "server.log", "wb")
    process = subprocess.Popen(
        [str(command), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port), "--username", USER,
         "--password", PASSWORD, "--user-token", LEGACY_TOKEN, "--data-dir", str(data)],
        env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"Label Studio exited ({process.returncode}); see {base / 'server.log'}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if b"UP" in answer.read():
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"Label Studio did not answer /health in {STARTUP_SECONDS}s"
            time.sleep(2)
        started = Server(url, process)
        started.documents = documents
        started.login()
        yield started
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def api(server: Server, key_header: str, method: str, path: str, body=None):
    request = urllib.request.Request(server.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": key_header})
    with urllib.request.urlopen(request, timeout=60) as response:
        content = response.read()
        return json.loads(content) if content else None, response.headers.get("Content-Type", "")


def choice(label: str) -> dict:
    return {"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]}


def test_sync_pushes_the_batch_and_brings_home_exactly_the_annotations_made_in_label_studio(server, digits_data):
    images = server.documents / "images"
    images.mkdir()
    truth = {}
    for i in range(24):
        Image.fromarray(digits_data.test.images[i, 0].numpy()).save(images / f"digit{i:02d}.png")
        truth[f"digit{i:02d}.png"] = NAMES[int(digits_data.test.labels[i])]
    project = server.documents.parent / "project"
    assert label_py("init", project, "--images", images, "--classes", CLASSES, "--model", "lenet",
                    "--image-size", "28", "--start", "random").returncode == 0
    assert label_py("next", project, "--budget", "6").returncode == 0
    token, _type = server.session_call("POST", "/api/token/", {})  # a personal access token, as the UI makes one
    key = token["token"]

    first = label_py("sync", project, "--label-studio", server.url, "--api-key", key)
    assert first.returncode == 0, first.stderr
    assert "(new): pulled 0 new labels" in first.stdout and "pushed 6 tasks" in first.stdout
    ls_project = int(re.search(r"/projects/(\d+)", first.stdout).group(1))
    access = api(server, "", "POST", "/api/token/refresh", {"refresh": key})[0]["access"]
    bearer = f"Bearer {access}"
    listed = api(server, bearer, "GET", f"/api/tasks?project={ls_project}&fields=all")[0]["tasks"]
    batch = [line.split(",")[1] for line in (project / "batches/001/batch.csv").read_text().splitlines()[1:]]
    assert sorted(task["data"]["fkal_path"] for task in listed) == sorted(batch)
    request = urllib.request.Request(server.url + listed[0]["data"]["image"], headers={"Authorization": bearer})
    with urllib.request.urlopen(request, timeout=60) as picture:  # Label Studio serves the user's own file
        assert picture.headers["Content-Type"] == "image/png"
        assert picture.read() == (images / listed[0]["data"]["fkal_path"]).read_bytes()

    by_path = {task["data"]["fkal_path"]: task["id"] for task in listed}
    annotated, disputed = batch[:4], batch[4]
    for path in annotated:  # what an annotator's submit does
        api(server, bearer, "POST", f"/api/tasks/{by_path[path]}/annotations", choice(truth[path]))
    api(server, bearer, "POST", f"/api/tasks/{by_path[disputed]}/annotations", choice("zero"))
    api(server, bearer, "POST", f"/api/tasks/{by_path[disputed]}/annotations", choice("one"))
    skipped = api(server, bearer, "POST", f"/api/tasks/{by_path[batch[5]]}/annotations",
                  {**choice("two"), "was_cancelled": True})
    assert skipped[0]["was_cancelled"]

    second = label_py("sync", project, "--label-studio", server.url, "--api-key", key)
    assert second.returncode == 0, second.stderr
    assert "pulled 4 new labels, 0 changed, 0 already known; pushed 0 tasks" in second.stdout
    assert f"disputed: {disputed}: 'zero' by annotator" in second.stdout and "'one'" in second.stdout
    opened = Project.open(project)
    try:
        assert {path: NAMES[label] for path, label in opened.current_labels().items()} == \
            {path: truth[path] for path in annotated}
    finally:
        opened.close()

    assert label_py("next", project, "--budget", "5").returncode == 0
    third = label_py("sync", project, "--label-studio", server.url, "--api-key", key)
    assert "pulled 0 new labels, 0 changed, 4 already known; pushed 5 tasks" in third.stdout, third.stdout
    tasks = api(server, bearer, "GET", f"/api/tasks?project={ls_project}&fields=all")[0]["tasks"]
    assert len(tasks) == 11 and len({task["data"]["fkal_path"] for task in tasks}) == 11
    suggested = [task for task in tasks if task["data"]["fkal_path"] not in batch]
    assert all(task["total_predictions"] == 1 for task in suggested)  # the network's suggestion, pre-annotated

    # the legacy token (off by default in 1.23) once the organisation enables it
    server.session_call("POST", "/api/jwt/settings", {"legacy_api_tokens_enabled": True, "api_tokens_enabled": True})
    legacy = label_py("sync", project, "--label-studio", server.url, "--api-key", LEGACY_TOKEN)
    assert legacy.returncode == 0 and "pushed 0 tasks" in legacy.stdout, legacy.stderr

    other = api(server, bearer, "POST", "/api/projects",
                {"title": "other classes", "label_config": labelling_config(["cat", "dog"])})[0]["id"]
    wrong = label_py("sync", project, "--label-studio", server.url, "--api-key", key, "--ls-project", other)
    assert "has no Choices control named 'label' with the classes" in assert_one_line_error(wrong)
    refused = label_py("sync", project, "--label-studio", server.url, "--api-key", "not-a-key")
    assert "answered 401" in assert_one_line_error(refused)


def test_sync_names_a_server_that_is_not_there_or_an_address_that_is_not_one(tmp_path, digits_data):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(digits_data.test.images[i, 0].numpy()).save(images / f"d{i}.png")
    assert label_py("init", tmp_path / "p", "--images", images, "--classes", CLASSES, "--model", "lenet",
                    "--image-size", "28").returncode == 0
    result = label_py("sync", tmp_path / "p", "--label-studio", f"http://127.0.0.1:{free_port()}", "--api-key", "k")
    assert "cannot reach Label Studio" in assert_one_line_error(result)
    for address in ("notaurl", "ftp://host/", "http://"):
        result = label_py("sync", tmp_path / "p", "--label-studio", address, "--api-key", "k")
        assert "is not an http(s) address" in assert_one_line_error(result)


def test_disputes_are_split_from_agreed_annotations_and_configs_are_read_for_their_classes(tmp_path):
    class FakeProject:
        images_root = tmp_path

    found = [Annotation("t1", "a.png", "cat", "1"), Annotation("t1", "a.png", "cat", "2"),
             Annotation("t2", "b.png", "cat", "1"), Annotation("t2", "b.png", "dog", "2"),
             Annotation("t3", str(tmp_path / "c.png"), "dog", "1")]
    agreed, disputed = split_disputes(found, FakeProject())
    assert [a.where for a in agreed] == ["t1", "t1", "t3"]
    assert disputed == {"b.png": [("cat", "1"), ("dog", "2")]}
    assert config_classes(labelling_config(["cat", "dog & fox"])) == ["cat", "dog & fox"]
    assert config_classes("<View><Choices name='other'><Choice value='x'/></Choices></View>") is None
    assert config_classes("not xml") is None
