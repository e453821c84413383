"""Issue 28, item 6: the dashboard is locked.

A real Voila server started as ``make dashboard`` starts it (the Makefile's recipe, on a free
loopback port; tests/dashboard_server.py) is asked what the audit asked: a GET without the token
(it answered 200 and started a kernel each time), a GET with a foreign Host header (DNS
rebinding: it answered 200), a GET with the printed URL, and whether idle kernels outlive their
page. Kernels are counted twice: the server's kernel processes (psutil) and its log's
"Kernel started" lines. The culling server uses a short idle time (the script's --cull-idle-s).
"""

import http.client
import re
import subprocess
import sys
import time
import urllib.parse

import pytest
from dashboard_server import ROOT, locked_dashboard, make_dashboard_command, server_env

SCRIPT = ROOT / "scripts" / "serve_dashboard.py"


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    # culling on a short clock: a refused request must start nothing at all, which the log's count shows whenever it is read
    with locked_dashboard(tmp_path_factory.mktemp("dash") / "voila.log", "--cull-idle-s", "3", "--cull-interval-s", "1") as dash:
        yield dash


def _get(dash, path: str, host: str | None = None, cookie: str | None = None) -> http.client.HTTPResponse:
    """One GET as a browser or a rebinding page sends it (no redirect followed); the body is read."""
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=60)
    headers = {"Host": host or f"127.0.0.1:{dash.port}"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.text = response.read().decode("utf-8", "replace")
    conn.close()
    return response


def _login(dash, password: str, **more: str) -> http.client.HTTPResponse:
    """Post the login form as the browser does (its xsrf field and cookie from GET /login)."""
    page = _get(dash, "/login")
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    cookies = "; ".join(c.split(";")[0] for c in page.headers.get_all("Set-Cookie") or [])
    conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=60)
    conn.request("POST", "/login?next=%2F", body=urllib.parse.urlencode({"_xsrf": xsrf, "password": password, **more}),
                 headers={"Host": f"127.0.0.1:{dash.port}", "Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _wait_until(condition, what: str, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.25)


def test_make_dashboard_serves_through_the_locked_script():
    cmd = make_dashboard_command(8866)
    assert cmd[:2] == [sys.executable, str(SCRIPT)] and "--port=8866" in cmd, cmd
    assert "voila " not in (ROOT / "Makefile").read_text().split("dashboard:")[-1], "make dashboard must not call voila directly"


def test_get_without_token_is_refused_and_starts_no_kernel(dashboard):
    kernels, started = dashboard.kernels(), dashboard.kernels_started()
    for path in ("/", "/?token=", "/?token=wrong", "/?token=" + "0" * 43, "/voila/render/compression_dashboard.ipynb"):
        response = _get(dashboard, path)
        assert response.status in (302, 401, 403, 404), (path, response.status)
        if response.status == 302:
            assert urllib.parse.urlparse(response.getheader("Location")).path == "/login", (path, response.getheader("Location"))
        assert "compression" not in response.text.lower(), path  # nothing of the notebook
    for path in ("/api/kernels/00000000-0000-0000-0000-000000000000", "/voila/files/compression_dashboard.ipynb"):
        assert _get(dashboard, path).status == 403, path
    assert dashboard.kernels_started() == started, dashboard.text()[-2000:]
    assert dashboard.kernels() <= kernels  # no new kernel process


def test_foreign_host_is_refused_even_with_token_and_starts_no_kernel(dashboard):
    kernels, started = dashboard.kernels(), dashboard.kernels_started()
    for host in ("evil.example", f"evil.example:{dashboard.port}", "localhost.evil.example", "127.0.0.1.evil.example", "0.0.0.0"):
        for path in (f"/?token={dashboard.token}", "/login", "/voila/static/voila.js"):
            response = _get(dashboard, path, host=host)
            assert response.status == 403, (host, path, response.status)
    assert dashboard.kernels_started() == started, dashboard.text()[-2000:]
    assert dashboard.kernels() <= kernels
    assert "Blocking request with non-local 'Host' evil.example" in dashboard.text()


def test_token_url_serves_the_page_once_logged_in(dashboard):
    assert dashboard.url == f"http://127.0.0.1:{dashboard.port}/?token={dashboard.token}" and len(dashboard.token) >= 40
    started = dashboard.kernels_started()
    response = _get(dashboard, "/?" + urllib.parse.urlparse(dashboard.url).query)  # the printed URL
    assert response.status == 200, response.status
    assert "compression" in response.text.lower() and "voila" in response.text.lower()
    assert dashboard.kernels_started() == started + 1
    # the browser keeps the login cookie: the page is served again without the token
    cookie = "; ".join(c.split(";")[0] for c in response.headers.get_all("Set-Cookie") or [])
    assert cookie, "no login cookie set"
    assert _get(dashboard, "/", cookie=cookie).status == 200
    for host in (f"localhost:{dashboard.port}", f"[::1]:{dashboard.port}"):  # the loopback names a user may type
        assert _get(dashboard, f"/?token={dashboard.token}", host=host).status == 200, host
    # the token is printed once, as the URL; the access log scrubs it
    assert dashboard.text().count(dashboard.token) == 1, dashboard.text()[-3000:]


def test_login_form_never_writes_a_password_file(dashboard):
    """Jupyter's login form lets whoever holds the token set a new password, written to
    jupyter_server_config.json in the server's config_dir (Voila leaves it empty: the working folder)."""
    written = ROOT / "jupyter_server_config.json"
    assert not written.exists()
    response = _login(dashboard, dashboard.token, new_password="chosen by a page")
    assert response.status == 302, response.status  # the token still logs in
    assert not written.exists(), "the login form wrote a password file into the checkout"
    assert "chosen by a page" not in dashboard.text()


def test_idle_kernels_are_culled(dashboard):
    before = set(re.findall(r"Kernel started: (\S+)", dashboard.text()))
    for _ in range(3):  # pages fetched and never opened: their kernels sit idle with no connection
        assert _get(dashboard, f"/?token={dashboard.token}").status == 200
    started = set(re.findall(r"Kernel started: (\S+)", dashboard.text())) - before
    assert len(started) == 3, dashboard.text()[-2000:]
    _wait_until(lambda: all(f"Kernel shutdown: {k}" in dashboard.text() for k in started), f"idle kernels were not culled: {dashboard.text()[-2000:]}")
    assert all(f"Culling 'idle' kernel 'python3' ({k})" in dashboard.text() for k in started)
    _wait_until(lambda: not dashboard.kernels(), "kernel processes outlived their culling")  # every kernel of this server, the earlier tests' too


def test_password_from_the_environment_logs_in_instead_of_a_token(tmp_path):
    with locked_dashboard(tmp_path / "voila.log", env=server_env(WORKBENCH_DASHBOARD_PASSWORD="correct horse")) as dash:
        assert dash.token is None and "WORKBENCH_DASHBOARD_PASSWORD" in dash.text()
        assert "correct horse" not in dash.text()
        started = dash.kernels_started()
        first = _get(dash, "/")
        assert first.status == 302 and urllib.parse.urlparse(first.getheader("Location")).path == "/login", first.status
        assert _login(dash, "wrong").status == 401
        assert dash.kernels_started() == started
        ok = _login(dash, "correct horse")
        assert ok.status == 302, ok.status
        cookie = "; ".join(c.split(";")[0] for c in ok.headers.get_all("Set-Cookie") or [])
        assert _get(dash, "/", cookie=cookie).status == 200
        assert dash.kernels_started() == started + 1


@pytest.mark.parametrize("args, env, message", [
    (["--port=0"], {}, "0 is not a port number (1-65535)"),
    (["--cull-idle-s", "soon"], {}, "'soon' is not a whole number of seconds"),
    (["nowhere.ipynb"], {}, "no notebook at nowhere.ipynb"),
    ([], {"WORKBENCH_DASHBOARD_PASSWORD": " "}, "WORKBENCH_DASHBOARD_PASSWORD is set but empty"),
])
def test_bad_dashboard_arguments_are_one_line_errors(tmp_path, args, env, message):
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=server_env(**env), cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("error") or "error:" in line]
    assert len(lines) == 1 and message in lines[0], run.stderr
    assert "Traceback" not in run.stderr
