"""The ``pyrunsc`` command line (click with rich-click).

Global flags follow runc and runsc: ``--root``, ``--log``, ``--log-format``,
``--debug``, ``--platform``, ``--file-access``, ``--overlay``, ``--network``,
``--strace``. Data goes to stdout; logs and warnings to stderr (or ``--log``).

Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage or bad input
(spec, YAML, options). Bad input never shows a traceback; ``--debug`` shows one
for real failures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click
import rich_click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import FILE_ACCESS, Config
from .deployment import Deployment, load_deployment
from .errors import ConfigError, PyrunscError
from .mounts import create_restore_environment, resolve_all
from .plugins import Plugins
from .spec import Spec, default_spec, load_bundle

log = logging.getLogger("pyrunsc")

#: Global flags that are Config settings, by click parameter name.
_SETTINGS = ("platform", "file_access", "overlay", "network", "debug", "strace")


@dataclass
class State:
    """What the group callback hands to subcommands (``ctx.obj``)."""

    plugins: Plugins | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None
    debug: bool = False

    def get_plugins(self) -> Plugins:
        if self.plugins is None:
            self.plugins = Plugins()
        return self.plugins

    def config(self, deployment: Deployment | None = None) -> Config:
        """Flags over the deployment's ``runtime:`` over the defaults."""
        flags = dict(self.flags)
        if self.root is not None:
            flags["root_dir"] = self.root
        config = Config.resolve(flags, deployment.runtime if deployment else None)
        platforms = self.get_plugins().registry.platforms
        if config.platform not in platforms:
            raise ConfigError(
                f"unknown platform {config.platform!r}; installed: {', '.join(sorted(platforms)) or 'none'}",
                field="--platform",
            )
        return config


class TextFormatter(logging.Formatter):
    """``pyrunsc: warning: ...`` on stderr; with a timestamp in a log file."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__("%(asctime)s %(level)s %(message)s" if timestamps else "pyrunsc: %(level)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.level = record.levelname.lower()
        return super().format(record)


class JSONFormatter(logging.Formatter):
    """JSON lines ``{"level", "msg", "time"}``, as runc's ``--log-format json``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(log_file: Path | None, log_format: str, debug: bool) -> None:
    """Send pyrunsc's log to ``log_file`` (or stderr) in ``log_format``."""
    root = logging.getLogger("pyrunsc")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler: logging.Handler
    if log_file is not None:
        handler = logging.FileHandler(log_file, encoding="utf-8")
        level = logging.DEBUG if debug else logging.INFO
    else:
        handler = logging.StreamHandler(sys.stderr)
        level = logging.DEBUG if debug else logging.WARNING
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps=log_file is not None))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)


def fail(error: PyrunscError, debug: bool) -> NoReturn:
    """Report ``error`` on stderr and exit with its status."""
    if debug and not isinstance(error, ConfigError):
        traceback.print_exc(file=sys.stderr)
    click.echo(f"pyrunsc: error: {error}", err=True)
    sys.exit(error.exit_code)


class PyrunscGroup(rich_click.RichGroup):
    """Turns PyrunscError into a message and an exit status, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyrunscError as e:
            fail(e, _debug(ctx))
        except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            if _debug(ctx):
                raise
            click.echo(
                f"pyrunsc: internal error: {type(e).__name__}: {e} (run with --debug for a traceback)",
                err=True,
            )
            sys.exit(1)


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_object(State)
    return bool(obj and obj.debug)


@click.group(cls=PyrunscGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for container state [default: /run/pyrunsc as root, else $XDG_RUNTIME_DIR/pyrunsc].")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write logs to this file instead of stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log format; json writes {level, msg, time} lines.")
@click.option("--debug", is_flag=True, help="Debug logs, and tracebacks for runtime failures.")
@click.option("--platform", default="ptrace", show_default=True,
              help="Platform plugin that runs application code (ptrace, kvm).")
@click.option("--file-access", type=click.Choice(FILE_ACCESS), default="proxy", show_default=True,
              help="proxy: a gofer serves host files over 9P; direct: the sentry opens them.")
@click.option("--overlay/--no-overlay", default=False, show_default=True,
              help="A tmpfs overlay over the root and writable bind mounts.")
@click.option("--network", default="none", show_default=True, help="Network mode; only 'none' for now.")
@click.option("--strace", is_flag=True, help="Log every system call the sandbox makes.")
@click.version_option(package_name="pyrunsc", prog_name="pyrunsc")
@click.pass_context
def cli(ctx: click.Context, /, root: Path | None, log_file: Path | None, log_format: str, **settings: Any) -> None:
    """pyrunsc: a sandbox runtime whose kernel is written in Python."""
    state = ctx.ensure_object(State)
    state.root = root
    state.debug = bool(settings["debug"])
    # Only flags given on the command line take precedence over a deployment.
    state.flags = {
        name: settings[name]
        for name in _SETTINGS
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    setup_logging(log_file, log_format, state.debug)


def stdout_console() -> Console:
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


# pyrunsc plugins


@cli.command("plugins")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def plugins_cmd(state: State, fmt: str) -> None:
    """List plugins: distribution, version, hooks, what they provide, or their error."""
    plugins = state.get_plugins()
    rows: list[dict[str, Any]] = []
    for info in plugins.infos:
        entry = info.to_json()
        entry["platforms"] = []
        for name in info.platforms:
            cls = plugins.registry.platform(name)
            try:
                reason = cls.probe() if cls else "not registered"
            except Exception as e:
                reason = f"probe failed: {type(e).__name__}: {e}"
            entry["platforms"].append({"name": name, "available": reason is None, "reason": reason})
        rows.append(entry)
    if fmt == "json":
        emit_json(rows)
        return
    table = Table(title="pyrunsc plugins", title_justify="left")
    for col in ("plugin", "distribution", "version", "provides", "hooks", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        provides = [f"filesystem {escape(f)}" for f in r["filesystems"]]
        for p in r["platforms"]:
            state_text = "[green]available[/]" if p["available"] else f"[yellow]unavailable: {escape(p['reason'])}[/]"
            provides.append(f"platform {escape(p['name'])} ({state_text})")
        status = {"loaded": "[green]loaded[/]", "disabled": "[dim]disabled[/]"}.get(
            r["status"], f"[red]broken: {escape(r['error'] or '')}[/]"
        )
        if r["status"] == "disabled":
            status += f" [dim]({escape(r['error'] or '')})[/]"
        table.add_row(
            escape(r["name"]), escape(r["distribution"]), escape(r["version"]),
            "\n".join(provides), ", ".join(r["hooks"]), status,
        )
    stdout_console().print(table)


# pyrunsc spec


@cli.command("spec")
@click.option("--bundle", "-b", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Bundle folder to write config.json into.")
def spec_cmd(bundle: Path) -> None:
    """Write a default config.json for a bundle, like `runc spec`."""
    target = bundle / "config.json"
    if target.exists():
        raise ConfigError("already exists; remove it first", file=str(target))
    try:
        bundle.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps(default_spec(), indent="\t") + "\n", replace=False)
    except FileExistsError:
        raise ConfigError("already exists; remove it first", file=str(target)) from None
    except OSError as e:
        raise PyrunscError(f"cannot write {target}: {e.strerror or e}") from e


def write_atomic(path: Path, text: str, mode: int = 0o644, *, replace: bool = True) -> None:
    """Write ``text`` to ``path`` so that readers see all of it or nothing.

    With ``replace=False`` an existing ``path`` is never overwritten, even one
    that appears while writing: FileExistsError.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: no window to clobber it
    finally:
        Path(tmp).unlink(missing_ok=True)


# pyrunsc mounts


def load_input(state: State, bundle: Path | None, deployment: Path | None) -> tuple[Spec, Config]:
    """The spec and settings from ``--bundle`` or ``--deployment`` (default: bundle ``.``)."""
    if bundle is not None and deployment is not None:
        raise click.UsageError("give --bundle or --deployment, not both")
    if deployment is not None:
        plugins = state.get_plugins()
        dep = load_deployment(deployment, platforms=sorted(plugins.registry.platforms))
        config = state.config(dep)
        if config.debug and not state.debug:
            # runtime.debug in the deployment means what --debug means.
            state.debug = True
            root = logging.getLogger("pyrunsc")
            root.setLevel(logging.DEBUG)
            for handler in root.handlers:
                handler.setLevel(logging.DEBUG)
        return dep.spec, config
    return load_bundle(bundle or Path(".")), state.config()


@cli.command("mounts")
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=None,
              help="Bundle folder with config.json [default: .].")
@click.option("--deployment", "-d", type=click.Path(path_type=Path), default=None,
              help="YAML deployment file.")
@click.option("--restore-env", is_flag=True, help="Show the restore environment instead.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def mounts_cmd(state: State, bundle: Path | None, deployment: Path | None, restore_env: bool, fmt: str) -> None:
    """Show the compiled mounts of a bundle or deployment, or its restore environment."""
    spec, config = load_input(state, bundle, deployment)
    plugins = state.get_plugins()
    if restore_env:
        renv = create_restore_environment(plugins, spec, config)
        if fmt == "json":
            emit_json(renv.to_json())
            return
        table = Table(title=f"restore environment ({config.file_access} file access)", title_justify="left")
        for col in ("filesystem", "device", "flags", "data"):
            table.add_column(col, overflow="fold")
        for name, args in renv.mount_sources.items():
            for a in args:
                table.add_row(escape(name), escape(a.dev), ",".join(a.flags.names()), escape(a.data))
        stdout_console().print(table)
        return
    resolved = resolve_all(plugins, spec, config)
    rows: list[dict[str, Any]] = [
        {
            "destination": r.mount.destination,
            "type": r.mount.type,
            "filesystem": r.fs_name,
            "device": r.device,
            "flags": r.flags.all_names(),
            "data": ",".join(r.data),
            "source": r.mount.source,
            "overlay": r.overlay,
        }
        for r in resolved
    ]
    if fmt == "json":
        emit_json(rows)
        return
    table = Table(title=f"compiled mounts of {escape(spec.file)}", title_justify="left")
    for col in ("destination", "type", "filesystem", "device", "flags", "data", "source"):
        table.add_column(col, overflow="fold")
    for row in rows:
        fs_name = row["filesystem"] + (" +overlay" if row["overlay"] else "")
        table.add_row(
            escape(row["destination"]), escape(row["type"]), escape(fs_name), escape(row["device"]),
            ",".join(row["flags"]), escape(row["data"]), escape(row["source"]),
        )
    stdout_console().print(table)


def _flag_value(args: list[str], flag: str, kind: type[Any]) -> Any:
    """The value of a global ``flag`` given as ``--flag V`` or ``--flag=V``, before the command."""
    for i, arg in enumerate(args):
        if not arg.startswith("-"):
            return None  # the subcommand: global flags come before it
        if arg == flag and i + 1 < len(args):
            return kind(args[i + 1])
        if arg.startswith(flag + "="):
            return kind(arg.split("=", 1)[1])
    return None


def main(argv: list[str] | None = None) -> None:
    """The console script: load plugins, let them add commands, run."""
    state = State()
    # Plugins load (and may warn) before click parses the flags: honour the
    # logging flags already.
    args = sys.argv[1:] if argv is None else argv
    setup_logging(_flag_value(args, "--log", Path), _flag_value(args, "--log-format", str) or "text", "--debug" in args)
    try:
        state.get_plugins().add_commands(cli)
    except PyrunscError as e:
        fail(e, False)
    cli.main(args=argv, prog_name="pyrunsc", obj=state)
