"""``runnerhost`` — start the server and talk to it.

Server side: ``serve`` (fresh local Ray + Serve + migrations), ``migrate``, ``hash-key``.
Client side (HTTP to ``--url``, key from ``--api-key`` / ``RUNNERHOST_API_KEY``):
``send``, ``runs``, ``run``, ``tail``, ``cancel``, ``transcript``, ``agents``, ``runners``.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

app = typer.Typer(name="runnerhost", no_args_is_help=True, add_completion=False,
                  help="RunnerHost: an agent-runner host on Ray.")
console = Console()
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
UrlOpt = typer.Option(DEFAULT_URL, "--url", envvar="RUNNERHOST_URL", help="Server base URL.")
KeyOpt = typer.Option(None, "--api-key", envvar="RUNNERHOST_API_KEY", help="API key (Bearer).",
                      show_default=False)


# -- helpers ---------------------------------------------------------------------------------
def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(30.0, read=None))


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _check(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    try:
        body = response.json()
        message = f"{body.get('code')}: {body.get('message')}"
    except ValueError:
        message = response.text[:300]
    _fail(f"HTTP {response.status_code} — {message}")


def _get(url: str, api_key: str | None, path: str, **params: Any) -> Any:
    try:
        with _client(url, api_key) as c:
            r = c.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__}")
    _check(r)
    return r.json()


def _when(epoch: Any) -> str:
    if not isinstance(epoch, (int, float)):
        return ""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _frames(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.strip():
            yield json.loads(line)


def _render_stream(frames: Iterator[dict[str, Any]]) -> int:
    """Print frames live (deltas inline); return the process exit code (1 on run.failed)."""
    code = 0
    in_text = False
    for frame in frames:
        kind, data = frame.get("type"), frame.get("data") or {}
        if kind == "message.delta":
            console.print((data.get("chunk") or {}).get("content", ""), end="", markup=False, highlight=False)
            in_text = True
            continue
        if in_text:
            console.print()
            in_text = False
        if kind == "run.started":
            console.print(f"[dim]run {frame.get('run_id')} started ({data.get('runner_id', '')})[/]")
        elif kind == "run.queued":
            console.print(f"[yellow]run {frame.get('run_id')} queued behind {data.get('behind')}[/]")
        elif kind == "event.steered":
            console.print(f"[cyan]steered into active run {data.get('claimed_by_run_id')}[/]")
        elif kind == "run.completed":
            console.print(f"[green]✓ completed[/] [dim]({data.get('finish_reason', '')})[/]")
        elif kind == "run.failed":
            console.print(f"[red]✗ failed[/] {data.get('code')}: {data.get('error')}")
            code = 1
        elif kind == "message.completed":
            pass
        else:
            console.print(f"[dim]{kind} {json.dumps(data)[:200]}[/]", markup=True, highlight=False)
    if in_text:
        console.print()
    return code


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("localhost",) else "127.0.0.1", port))
            return True
        except OSError:
            return False


# -- server side -------------------------------------------------------------------------------
@app.command()
def serve(
    host: Optional[str] = typer.Option(None, "--host", help="Bind address (default 127.0.0.1)."),
    port: Optional[int] = typer.Option(None, "--port", help="HTTP port (default 8000)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file (runnerhost.toml)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Data dir of the embedded store."),
) -> None:
    """Start a fresh local Ray, run migrations and serve the HTTP API until Ctrl-C."""
    from protocol.logs import install_log_redaction

    from .config import ConfigError, load_settings

    install_log_redaction()  # this driver; Ray runs the same hook in every worker it starts (below)
    try:
        settings = load_settings(config, overrides={
            "server": {"host": host, "port": port},
            "storage": {"data_dir": str(data_dir) if data_dir else None}})
        settings.check_bind()
    except ConfigError as exc:
        _fail(str(exc), 2)
    bind, port_ = settings.server.host, settings.server.port
    if not _port_free(bind, port_):
        _fail(f"port {port_} on {bind} is already in use (pick another with --port)", 2)
    if not settings.auth_enabled:
        console.print(Panel(
            "[bold]No API keys are configured.[/]\nThe server binds loopback only "
            f"([bold]{bind}[/]) and accepts [bold]any local request without a key[/].\n"
            f"Add {escape('[[api_keys]]')} to the config (see `runnerhost hash-key`) or set RUNNERHOST_API_KEYS "
            "before exposing it.", title="⚠ unauthenticated", border_style="yellow"))

    import ray
    from ray import serve as ray_serve

    from actors.placement import local_ray_resources
    from store.migrate import upgrade

    from .deployment import APP_NAME, build_app, serve_logging

    export_database_url(settings)
    started_ray = False
    try:
        with console.status("[bold]Running database migrations…") as status:
            upgrade(settings.database_url)
            status.update("[bold]Starting a local Ray…")
            ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                     namespace=settings.host.namespace,
                     resources=local_ray_resources(settings.pools.node_run_slots),
                     runtime_env=settings.runtime_env())
            started_ray = True
            status.update("[bold]Starting Serve and the host…")
            logging_config = serve_logging("WARNING")
            ray_serve.start(http_options={"host": bind, "port": port_}, logging_config=logging_config)
            ray_serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False,
                          logging_config=logging_config)
        shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
        url = f"http://{shown}:{port_}"
        auth = "" if not settings.auth_enabled else ' -H "Authorization: Bearer $RUNNERHOST_API_KEY"'
        console.print(Panel.fit(
            f"[bold green]RunnerHost is up[/] at [link={url}]{url}[/]   (docs: {url}/docs)\n"
            f"database: {escape(_safe_url(settings.database_url))}\n"
            "Ctrl-C stops Serve and Ray.", border_style="green"))
        console.print("Try it:", style="bold")
        console.print(
            f"curl -N -X POST {url}/v1/events{auth} -H 'Content-Type: application/json' "
            "-d '{\"agent_id\": \"echo\", \"event\": {\"event_type\": \"message.received\", "
            "\"conversation_id\": \"c1\", \"input\": {\"text\": \"hello\"}}}'",
            markup=False, highlight=False, soft_wrap=True)
        console.print(f"runnerhost send hello --agent echo --conversation c1 --url {url}",
                      markup=False, highlight=False, soft_wrap=True)
        console.file.flush()
        _stop_on_signals()
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        if started_ray:
            with console.status("[bold]Shutting down Serve and Ray…"):
                try:
                    ray_serve.shutdown()
                finally:
                    ray.shutdown()
            console.print("[dim]stopped.[/]")


def export_database_url(settings: Any) -> None:
    """A database URL with a password reaches Ray workers only through the environment they
    inherit from this process — exported here, before Ray starts — never by value in actor or
    deployment arguments (see :meth:`serve.config.Settings.deployable`)."""
    from .config import ENV_PREFIX, has_password
    url = settings.storage.database_url
    if url and has_password(url):
        os.environ[ENV_PREFIX + "DATABASE_URL"] = url


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both shut down cleanly — even when started with SIGINT ignored
    (a background job of a non-interactive shell inherits SIG_IGN)."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable>"


@app.command()
def migrate(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RUNNERHOST_DATABASE_URL"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir"),
) -> None:
    """Upgrade the database schema to head."""
    from store.migrate import upgrade

    from .config import ConfigError, load_settings
    try:
        settings = load_settings(config, overrides={"storage": {
            "database_url": database_url, "data_dir": str(data_dir) if data_dir else None}})
    except ConfigError as exc:
        _fail(str(exc), 2)
    with console.status("Migrating…"):
        upgrade(settings.database_url)
    console.print(f"[green]✓[/] {_safe_url(settings.database_url)} is at head")


@app.command("hash-key")
def hash_key_cmd(
    key: Optional[str] = typer.Argument(None, help="The key to hash; omit to generate a new one."),
    scope: str = typer.Option("admin", "--scope", help="ingest | read | admin (for the snippet)."),
    name: str = typer.Option("key", "--name", help="Name for the snippet."),
) -> None:
    """Print the SHA-256 digest of an API key (and a config snippet)."""
    from .config import SCOPES, hash_key
    if scope not in SCOPES:
        _fail(f"scope must be one of {', '.join(SCOPES)}", 2)
    generated = key is None
    if generated:
        key = "rh_" + secrets.token_urlsafe(32)
    digest = hash_key(key)
    if generated:
        console.print(f"key:    [bold]{key}[/]   [dim](shown once — hand it to the client)[/]")
    console.print(f"sha256: {digest}")
    console.print("\n[dim]runnerhost.toml:[/]")
    console.print(f'[[api_keys]]\nname = "{name}"\nsha256 = "{digest}"\nscopes = ["{scope}"]',
                  markup=False, highlight=False)


# -- client side --------------------------------------------------------------------------------
@app.command()
def send(
    text: str = typer.Argument(..., help="Message text."),
    agent: Optional[str] = typer.Option(None, "--agent", "-a", help="agent_id (omit to resolve by binding)."),
    conversation: str = typer.Option(None, "--conversation", "-c", help="conversation_id (default: new)."),
    event_type: str = typer.Option("message.received", "--event-type"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="--no-wait: print the run id and return."),
    url: str = UrlOpt,
    api_key: Optional[str] = KeyOpt,
) -> None:
    """Send a message event and stream the reply live."""
    body = {"agent_id": agent, "event": {
        "event_type": event_type, "source": "api",
        "conversation_id": conversation or f"cli-{uuid.uuid4().hex[:8]}",
        "actor": {"actor_type": "user", "actor_id": os.environ.get("USER") or "cli"},
        "input": {"text": text}}}
    try:
        with _client(url, api_key) as c:
            if not wait:
                r = c.post("/v1/events", params={"wait": "false"}, json=body)
                _check(r)
                console.print(r.json()["run_id"])
                return
            with c.stream("POST", "/v1/events", json=body) as r:
                _check(r)
                code = _render_stream(_frames(r))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__}")
    raise typer.Exit(code)


@app.command()
def tail(run_id: str = typer.Argument(...), url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Join a run's frame stream (live, or replayed from the ledger) until its terminal frame."""
    try:
        with _client(url, api_key) as c, c.stream("GET", f"/v1/runs/{run_id}/stream") as r:
            _check(r)
            code = _render_stream(_frames(r))
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__}")
    raise typer.Exit(code)


@app.command()
def cancel(run_id: str = typer.Argument(...), reason: Optional[str] = typer.Option(None, "--reason"),
           url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Cancel an active run."""
    try:
        with _client(url, api_key) as c:
            r = c.post(f"/v1/runs/{run_id}/cancel", json={"reason": reason})
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {type(exc).__name__}")
    _check(r)
    console.print(f"[yellow]cancel requested[/] for {run_id}")


_STATUS_STYLE = {"completed": "green", "failed": "red", "cancelled": "yellow", "timeout": "red",
                 "running": "cyan", "created": "dim"}


@app.command()
def runs(conversation: Optional[str] = typer.Option(None, "--conversation", "-c"),
         status: Optional[str] = typer.Option(None, "--status"),
         limit: int = typer.Option(20, "--limit", min=1, max=100),
         url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Recent runs, newest first."""
    page = _get(url, api_key, "/v1/runs", conversation_id=conversation, status=status, limit=limit)
    table = Table(title=f"runs ({page.get('total_count', len(page['items']))} total)")
    for col in ("run_id", "status", "agent", "runner", "conversation", "created"):
        table.add_column(col)
    for r in page["items"]:
        style = _STATUS_STYLE.get(r["status"], "")
        table.add_row(r["run_id"], f"[{style}]{r['status']}[/]" if style else r["status"], r.get("agent_id") or "",
                      r.get("runner_id") or "", r.get("conversation_id") or "", _when(r.get("created_at")))
    console.print(table)


@app.command()
def run(run_id: str = typer.Argument(...), url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """One run: its ledger record and every recorded frame."""
    record = _get(url, api_key, f"/v1/runs/{run_id}")
    style = _STATUS_STYLE.get(record["status"], "")
    console.print(Panel.fit(
        f"[bold]{record['run_id']}[/]  [{style}]{record['status']}[/] {record.get('status_reason') or ''}\n"
        f"agent {record.get('agent_id')}  runner {record.get('runner_id')}  binding {record.get('binding_id')}\n"
        f"conversation {record.get('conversation_id')}  event {record.get('event_id')}\n"
        f"created {_when(record.get('created_at'))}  finished {_when(record.get('finished_at'))}"))
    table = Table(title="ledger")
    for col in ("seq", "type", "data"):
        table.add_column(col, overflow="fold")
    cursor = None
    while True:
        page = _get(url, api_key, f"/v1/runs/{run_id}/events", cursor=cursor, limit=100)
        for e in page["items"]:
            table.add_row(str(e["sequence"]), e["type"], json.dumps(e.get("data"), ensure_ascii=False)[:300])
        cursor = page.get("next_cursor")
        if not page.get("has_more") or not cursor:
            break
    console.print(table)


@app.command()
def transcript(conversation: str = typer.Argument(...), limit: int = typer.Option(50, "--limit", min=1, max=100),
               url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """The newest transcript items of a conversation."""
    page = _get(url, api_key, f"/v1/conversations/{conversation}/transcript", limit=limit)
    table = Table(title=f"transcript of {conversation}")
    for col in ("seq", "role", "type", "content", "run"):
        table.add_column(col, overflow="fold")
    for item in page["items"]:
        table.add_row(str(item.get("seq")), item["role"], item.get("item_type") or "",
                      item.get("content") or "", item.get("run_id") or "")
    console.print(table)


@app.command()
def agents(url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Configured agents."""
    rows = _get(url, api_key, "/v1/agents")
    table = Table(title="agents")
    for col in ("agent_id", "version", "runner", "strategy", "enabled", "event types"):
        table.add_column(col)
    for a in rows:
        cfg = a["config"]
        table.add_row(a["agent_id"], str(a["version"]), cfg["runner_id"], cfg.get("multitask_strategy", ""),
                      str(cfg.get("enabled", True)), ", ".join(cfg.get("event_types", [])))
    console.print(table)


@app.command()
def runners(url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Discovered runners."""
    rows = _get(url, api_key, "/v1/runners")
    table = Table(title="runners")
    for col in ("id", "label", "version", "source", "capabilities"):
        table.add_column(col)
    for d in rows:
        caps = ", ".join(k for k, v in (d.get("capabilities") or {}).items() if v)
        table.add_row(d["id"], d.get("label", ""), d.get("version", ""), d.get("source", ""), caps)
    console.print(table)


@app.command()
def ingest(kb_id: str = typer.Argument(..., help="Knowledge base id."),
           files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, readable=True,
                                              help="UTF-8 text files; each becomes one document (id = file name)."),
           url: str = UrlOpt, api_key: Optional[str] = KeyOpt) -> None:
    """Ingest text files into a knowledge base (replacing documents of the same name)."""
    from rich.progress import Progress
    total = 0
    with _client(url, api_key) as client, Progress(console=console) as progress:
        task = progress.add_task(f"ingesting into {kb_id}", total=len(files))
        for path in files:
            try:
                content = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                _fail(f"{path} is not UTF-8 text")
            try:
                r = client.put(f"/v1/knowledge/{kb_id}/documents/{path.name}",
                               json={"content": content, "title": path.stem, "metadata": {"path": str(path)}})
            except httpx.HTTPError as exc:
                _fail(f"cannot reach {url}: {type(exc).__name__}")
            _check(r)
            total += r.json()["chunks"]
            progress.advance(task)
    console.print(f"[green]{len(files)} document(s), {total} chunk(s) in {kb_id}[/]")


if __name__ == "__main__":  # pragma: no cover
    app()
