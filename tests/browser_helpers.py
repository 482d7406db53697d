"""Helpers for the browser test (tests/test_browser.py): a throw-away JupyterLab server and the
page-side checks run in headless Chromium through Playwright.

No paper equation is implemented here; this module only drives the notebooks' front end:

* `chromium_executable()` finds the system Chromium (Debian's `chromium` package); Playwright's
  own browser download is never used (the closed network refuses it).
* `JupyterLabServer` starts `jupyter lab` from this interpreter on a free localhost port, with a
  random token, an isolated Jupyter config/settings/runtime folder, a `python3` kernelspec that
  points at `sys.executable`, and `ALPHAEDIT_SMALL=1`; `stop()` ends the server and every kernel
  it started, by process id.
* `LabNotebook` opens one notebook in a Playwright page and runs/inspects it: Run All Cells,
  polling until every code cell has an execution count, errors, plotly figures, slider moves,
  and screenshots.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Flags that keep Chromium quiet on a closed network (no background connections, no GPU).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ENABLE_HINT = ("install Debian's chromium (`sudo apt-get install chromium`, or run `sudo scripts/ensure_chromium.sh`), "
               "or point ALPHAEDIT_CHROMIUM at a Chromium/Chrome executable")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
ERROR_TEXT = re.compile(r"Traceback|\b\w*Error\b")


def in_ci() -> bool:
    """True under CI (env CI=true/1/yes), where missing prerequisites must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def chromium_executable() -> str | None:
    """Path of the Chromium to drive: $ALPHAEDIT_CHROMIUM, else /usr/bin/chromium, else `chromium` on PATH."""
    override = os.environ.get("ALPHAEDIT_CHROMIUM")
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise ValueError(f"ALPHAEDIT_CHROMIUM={override!r} is not an executable file; point it at a Chromium "
                             f"binary or unset it to use {DEFAULT_CHROMIUM}")
        return override
    if os.path.isfile(DEFAULT_CHROMIUM) and os.access(DEFAULT_CHROMIUM, os.X_OK):
        return DEFAULT_CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1), encoding="utf-8")


# ------------------------------------------------------------------------------------------ server
class JupyterLabServer:
    """`jupyter lab` on 127.0.0.1 serving `root_dir`, isolated from the user's Jupyter set-up.

    Use as a context manager (or call `start()` and, always, `stop()`).
    """

    def __init__(self, root_dir: Path, work_dir: Path, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 180.0):
        root_dir, work_dir = Path(root_dir), Path(work_dir)
        if not root_dir.is_dir():
            raise ValueError(f"root_dir {root_dir} is not a folder; pass the (temporary) notebooks folder to serve")
        self.root_dir, self.work_dir = root_dir, work_dir
        self.extra_env = dict(env or {})
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._children: dict[int, float] = {}  # pid -> create_time of kernels this server started

    # -- set-up ------------------------------------------------------------------------------
    def _prepare_dirs(self) -> dict[str, str]:
        w = self.work_dir
        kdir = w / "jupyter_path" / "kernels" / "python3"
        _write_json(kdir / "kernel.json", {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"})
        settings = w / "lab_settings"
        # All cells attached to the DOM (no windowing), no scrolling past the end, no toasts, no news.
        _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                    {"windowingMode": "none", "scrollPastEnd": False, "recordTiming": True})
        _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True})
        dirs = {"JUPYTER_CONFIG_DIR": w / "config", "JUPYTER_DATA_DIR": w / "data", "JUPYTER_RUNTIME_DIR": w / "runtime",
                "JUPYTERLAB_SETTINGS_DIR": settings, "JUPYTERLAB_WORKSPACES_DIR": w / "workspaces",
                "IPYTHONDIR": w / "ipython"}
        for d in dirs.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        env = {k: str(v) for k, v in dirs.items()}
        env["JUPYTER_PATH"] = str(w / "jupyter_path")
        env["JUPYTER_PLATFORM_DIRS"] = "1"
        return env

    def start(self) -> "JupyterLabServer":
        env = dict(os.environ)
        env.update(self._prepare_dirs())
        env.update(self.extra_env)
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               "--port-retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
               "--LabApp.news_url=None", "--LabApp.extension_manager=readonly"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI and containers run as root
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=self.root_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with code {self.proc.returncode} while starting; log:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                self.api("GET", "/lab", raw=True)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"jupyter lab did not answer on {self.base_url} within {self.startup_timeout_s:.0f} s; "
                                   f"log:\n{self.log_tail()}")
            time.sleep(0.5)

    def __enter__(self) -> "JupyterLabServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- REST ----------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base_url}{path}{sep}token={self.token}"

    def api(self, method: str, path: str, body=None, raw: bool = False, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def session_for(self, nb_path: str) -> dict | None:
        """The server's session (with kernel execution_state) of the notebook at nb_path, if any."""
        for s in self.api("GET", "/api/sessions"):
            if s.get("path") == nb_path:
                return s
        return None

    def kernel_state(self, nb_path: str) -> str | None:
        s = self.session_for(nb_path)
        return (s.get("kernel") or {}).get("execution_state") if s else None

    def shutdown_session(self, nb_path: str) -> None:
        """Shut the notebook's kernel down (frees the CPU for the next notebook)."""
        s = self.session_for(nb_path)
        if s:
            self._remember_children()
            self.api("DELETE", f"/api/sessions/{s['id']}")

    def read_notebook(self, nb_path: str) -> dict:
        """The notebook as saved on disk, via the contents API (outputs included)."""
        return self.api("GET", f"/api/contents/{urllib.parse.quote(nb_path)}?content=1&type=notebook")["content"]

    # -- teardown ------------------------------------------------------------------------------
    def _remember_children(self) -> None:
        """Record the pids of the server's child processes (the kernels run in sessions of their own)."""
        if self.proc is None:
            return
        try:
            import psutil

            for c in psutil.Process(self.proc.pid).children(recursive=True):
                self._children[c.pid] = c.create_time()
        except Exception:  # noqa: BLE001 - the server may already be gone
            pass

    def _kill_leftover_kernels(self) -> None:
        """SIGKILL kernels this server started that outlived it (same pid *and* start time, so never a
        process that merely reused the pid). Needs psutil (a dependency of ipykernel)."""
        try:
            import psutil
        except ImportError:
            return
        for pid, created in sorted(self._children.items()):
            try:
                if psutil.Process(pid).create_time() == created:
                    os.kill(pid, signal.SIGKILL)
            except (psutil.Error, OSError):
                pass

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            if self._log:
                self._log.flush()
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL) and any kernel it left, by process id."""
        if self.proc is None:
            return
        self._remember_children()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # own session: only the server and its direct group
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._kill_leftover_kernels()
        if self._log:
            self._log.close()
            self._log = None


# ------------------------------------------------------------------------------------------ page
# Page-side probes (run in the browser with page.evaluate). They look only at the visible notebook.
_JS_STATE = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  if (!panel) return null;
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')];
  const out = cells.map((c, i) => {
    const prompt = (c.querySelector('.jp-InputArea-prompt') || {}).textContent || '';
    const src = (c.querySelector('.jp-InputArea-editor .cm-content') || {}).textContent || '';
    return {i, prompt: prompt.trim(), empty: src.trim().length === 0};
  });
  const errors = [...panel.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
    .map(e => {
      const cell = e.closest('.jp-CodeCell');
      return {cell: cells.indexOf(cell), text: e.innerText.slice(0, 3000)};
    });
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return {cells: out, stderr: errors, indicator: ind ? ind.getAttribute('data-status') : null};
}"""

_JS_PLOTLY = """() => {
  const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const cells = [...panel.querySelectorAll('.jp-Notebook .jp-Cell.jp-CodeCell')];
  // jupyterlab-plotly's mime renderer (application/vnd.plotly.v1+json) marks its output node .jp-RenderedPlotly
  const mime = panel.querySelectorAll('.jp-OutputArea-output.jp-RenderedPlotly').length;
  const plots = [...panel.querySelectorAll('.js-plotly-plot')].map(el => {
    const r = el.getBoundingClientRect();
    const fl = el._fullLayout || null;
    return {
      cell: cells.indexOf(el.closest('.jp-CodeCell')),
      svg: el.querySelectorAll('svg.main-svg').length,
      canvas: el.querySelectorAll('canvas').length,
      width: r.width, height: r.height,
      traces: (el._fullData || []).length,
      trace_types: [...new Set((el._fullData || []).map(t => t.type))],
      gl3d: !!(fl && fl._has && fl._has('gl3d')),
      gl_ok: !!(fl && fl.scene && fl.scene._scene && fl.scene._scene.glplot),
      webgl_error: /WebGL is not supported/i.test(el.innerText || ''),
    };
  });
  return {mime, plots};
}"""

# The output a slider drives: widget text (HTML/labels/outputs) outside the slider itself, and images.
_JS_LINKED = """(cell) => {
  const area = cell.querySelector('.jp-OutputArea') || cell;
  const texts = [...area.querySelectorAll('.widget-html-content, .widget-output, .widget-label, .widget-textarea textarea, .widget-text input')]
    .filter(e => !e.closest('.widget-slider'))
    .map(e => (e.value !== undefined && e.tagName !== 'DIV' ? e.value : e.innerText) || '');
  const hash = s => { let h = 2166136261 >>> 0; for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; } return h.toString(16) + ':' + s.length; };
  // <img> with a source only: plotly's renderer keeps an empty placeholder <img> beside its SVG
  const images = [...area.querySelectorAll('img')].map(i => i.getAttribute('src') || '').filter(s => s).map(hash);
  const sliders = [...area.querySelectorAll('.widget-slider')].map(s => ({
    readout: ((s.querySelector('.widget-readout') || {}).innerText || '').trim(),
    value: (s.querySelector('.noUi-handle') || {getAttribute: () => null}).getAttribute('aria-valuenow'),
    label: ((s.querySelector('.widget-label') || {}).innerText || '').trim(),
  }));
  return {text: texts.join('\\n').trim(), images, sliders};
}"""


@dataclass
class RunResult:
    seconds: float
    prompts: list[str]
    stderr: list[dict]
    state_history: list[str] = field(default_factory=list)


class LabNotebook:
    """One notebook open in JupyterLab in a Playwright page."""

    def __init__(self, page, server: JupyterLabServer, nb_path: str, out_dir: Path):
        self.page, self.server, self.nb_path, self.out_dir = page, server, nb_path, Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.console: list[str] = []
        page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))

    # -- opening and running ---------------------------------------------------------------------
    def open(self, timeout_s: float) -> float:
        """Load JupyterLab with this notebook (fresh workspace); wait for its cells and an idle kernel."""
        t0 = time.monotonic()
        ws = "t" + hashlib.sha1(self.nb_path.encode()).hexdigest()[:8]
        path = urllib.parse.quote(self.nb_path)
        self.page.goto(self.server.url(f"/lab/workspaces/{ws}/tree/{path}?reset"), timeout=timeout_s * 1000)
        self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell").first.wait_for(
            state="attached", timeout=timeout_s * 1000)
        self._poll(lambda: self.server.kernel_state(self.nb_path) == "idle", timeout_s - (time.monotonic() - t0),
                   f"the kernel of {self.nb_path} to start and become idle")
        return time.monotonic() - t0

    def run_all(self, timeout_s: float, poll_s: float = 1.0) -> RunResult:
        """Run → Run All Cells, then poll until every non-empty code cell has an execution count.

        Stops early (and returns) when the kernel is idle, nothing is queued, and some cell still
        has no count (Run All stopped at an error). Raises TimeoutError after timeout_s.
        """
        self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first.click(position={"x": 5, "y": 5})
        self._menu("Run", "Run All Cells")
        t0 = time.monotonic()
        history: list[str] = []
        started = False
        settled = 0
        while True:
            st = self.page.evaluate(_JS_STATE)
            prompts = [c["prompt"] for c in st["cells"] if not c["empty"]]
            queued = sum(p.startswith("[*]") for p in prompts)
            done = sum(bool(re.match(r"^\[\d+\]", p)) for p in prompts)
            started = started or queued > 0 or done > 0
            kstate = self.server.kernel_state(self.nb_path)
            summary = f"{time.monotonic() - t0:6.1f}s kernel={kstate} done={done}/{len(prompts)} queued={queued}"
            if not history or history[-1].split(" ", 1)[1] != summary.split(" ", 1)[1]:
                history.append(summary)
            if started and queued == 0 and kstate == "idle":
                settled += 1
                if settled >= 2 or done == len(prompts):
                    return RunResult(time.monotonic() - t0, prompts, st["stderr"], history)
            else:
                settled = 0
            if time.monotonic() - t0 > timeout_s:
                self.screenshot_notebook("timeout")
                raise TimeoutError(f"{self.nb_path}: cells still running after {timeout_s:.0f} s; last state: {summary}; "
                                   f"prompts: {prompts}")
            time.sleep(poll_s)

    def _menu(self, top: str, item: str) -> None:
        """Click a main-menu entry, e.g. _menu('Run', 'Run All Cells')."""
        self.page.locator("#jp-top-panel .lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(top)}$")).first.click()
        self.page.locator(".lm-Menu .lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).first.click()

    def save(self, timeout_s: float = 60.0) -> dict:
        """File → Save Notebook; return the saved notebook (read back through the contents API)."""
        before = self.server.api("GET", f"/api/contents/{urllib.parse.quote(self.nb_path)}?content=0")["last_modified"]
        self._menu("File", "Save Notebook")
        self._poll(lambda: self.server.api("GET", f"/api/contents/{urllib.parse.quote(self.nb_path)}?content=0")
                   ["last_modified"] != before, timeout_s, f"{self.nb_path} to be saved")
        nb = self.server.read_notebook(self.nb_path)
        _write_json(self.out_dir / f"{Path(self.nb_path).stem}.executed.ipynb", nb)
        return nb

    # -- inspection ------------------------------------------------------------------------------
    def plotly(self) -> dict:
        return self.page.evaluate(_JS_PLOTLY)

    def wait_for_plotly(self, minimum: int, timeout_s: float) -> dict:
        """Poll until ≥ minimum plotly figures are drawn (traces, SVG or canvas, non-zero size)."""
        def ok():
            info = self.plotly()
            drawn = [p for p in info["plots"] if p["traces"] > 0 and (p["svg"] or p["canvas"]) and p["width"] > 0]
            return len(drawn) >= minimum and len(drawn) == len(info["plots"])

        try:
            self._poll(ok, timeout_s, f"{minimum} plotly figure(s) to render")
        except TimeoutError:
            pass  # the caller asserts on the details
        return self.plotly()

    def linked_state(self, cell) -> dict:
        return cell.evaluate(_JS_LINKED)

    def move_slider(self, cell, timeout_s: float) -> tuple[dict, dict, str]:
        """Move the cell's first slider with the keyboard (Home, or End if already at the minimum);
        wait until the output it drives changes. Returns (before, after, keys pressed)."""
        slider = cell.locator(".widget-slider").first
        handle = slider.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        before = self.linked_state(cell)
        v0 = handle.get_attribute("aria-valuenow")
        handle.focus()
        key = "Home"
        self.page.keyboard.press(key)
        self._poll(lambda: handle.get_attribute("aria-valuenow") != v0, 5, "the slider handle to move", raise_=False)
        if handle.get_attribute("aria-valuenow") == v0:  # already at the minimum
            key = "End"
            self.page.keyboard.press(key)
        self._poll(lambda: self._changed(before, self.linked_state(cell)), timeout_s,
                   "the slider's output to change", raise_=False)
        return before, self.linked_state(cell), key

    @staticmethod
    def _changed(a: dict, b: dict) -> bool:
        """The driven output changed: its text, and its images too when it has any."""
        text_changed = a["text"] != b["text"]
        return text_changed and (a["images"] != b["images"] if a["images"] else True)

    # -- screenshots -----------------------------------------------------------------------------
    def screenshot_notebook(self, name: str, max_height: int = 16000) -> Path:
        """A screenshot of the whole notebook: the viewport is stretched to the notebook's height."""
        path = self.out_dir / f"{name}.png"
        vp = self.page.viewport_size
        scroller = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer"
        try:
            h = self.page.evaluate(f"() => {{ const s = document.querySelector('{scroller}'); "
                                   "return s ? s.scrollHeight - s.clientHeight : 0; }")
            if h > 0:
                self.page.set_viewport_size({"width": vp["width"], "height": min(max_height, vp["height"] + int(h) + 40)})
                self.page.wait_for_timeout(500)
            self.page.screenshot(path=str(path), full_page=True)
        finally:
            self.page.set_viewport_size(vp)
        return path

    # -- utilities ---------------------------------------------------------------------------------
    def _poll(self, cond, timeout_s: float, what: str, interval_s: float = 0.5, raise_: bool = True) -> bool:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        while True:
            try:
                if cond():
                    return True
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                if raise_:
                    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
                return False
            time.sleep(interval_s)

    def write_console_log(self) -> None:
        (self.out_dir / "browser-console.log").write_text("\n".join(self.console), encoding="utf-8")


def saved_outputs(nb: dict) -> tuple[int, list[tuple[int, str, str]]]:
    """(number of plotly outputs, [(cell index, ename, evalue) of error outputs]) of a saved notebook."""
    n_plotly, errors = 0, []
    for i, c in enumerate(nb.get("cells", [])):
        for o in c.get("outputs", []) if c.get("cell_type") == "code" else []:
            if PLOTLY_MIME in (o.get("data") or {}):
                n_plotly += 1
            if o.get("output_type") == "error":
                errors.append((i, o.get("ename", ""), o.get("evalue", "")))
    return n_plotly, errors


def kernel_seconds(nb: dict) -> list[tuple[int, float]]:
    """[(cell index, seconds from busy to execute_reply)] from JupyterLab's recordTiming metadata."""
    from datetime import datetime

    out = []
    for i, c in enumerate(nb.get("cells", [])):
        ex = (c.get("metadata") or {}).get("execution") or {}
        a, b = ex.get("iopub.status.busy"), ex.get("shell.execute_reply")
        if a and b:
            t = (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(a.replace("Z", "+00:00")))
            out.append((i, round(t.total_seconds(), 2)))
    return out
