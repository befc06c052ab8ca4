"""The ``pyrunsc`` command line (click with rich-click).

Global flags follow runc and runsc: ``--root``, ``--log``, ``--log-format``,
``--debug``, ``--platform``, ``--file-access``, ``--overlay``, ``--network``,
``--strace``. Data goes to stdout; logs and warnings to stderr (or ``--log``).
The error that ends a command is logged like the rest, as runc does (a JSON
``{"level": "error", ...}`` line with ``--log-format json``); when logs go to
a file, stderr still gets it as one line. Control characters in anything
printed are shown as escapes.

Exit status: 0 on success, 1 on a runtime failure, 2 on bad usage or bad input
(spec, YAML, options). Bad input never shows a traceback; ``--debug`` shows one
for real failures.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import stat
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click
import rich_click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import FILE_ACCESS, Config
from .deployment import Deployment, load_deployment
from .document import visible
from .errors import ConfigError, ImageError, PyrunscError
from .mounts import create_restore_environment, mount_rows, resolve_all
from .plugins import Plugins
from .spec import Spec, default_spec, display_path, load_bundle, show_path
from .state import StateStore

if TYPE_CHECKING:
    from .checkpoint.image import Inspection

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
    log_file: str | None = None
    log_format: str = "text"
    #: The ``name:`` of the deployment last loaded (the default container ID).
    deployment_name: str | None = None

    def get_plugins(self) -> Plugins:
        if self.plugins is None:
            self.plugins = Plugins()
        return self.plugins

    def config(self, deployment: Deployment | None = None, *, need_platform: bool = False) -> Config:
        """Flags over the deployment's ``runtime:`` over the defaults.

        The platform must be an installed one when it was chosen explicitly
        (``--platform``, ``runtime.platform``) or when the command needs one
        (``need_platform``); a command that runs nothing works without the
        default platform's plugin."""
        flags = dict(self.flags)
        if self.root is not None:
            flags["root_dir"] = self.root
        runtime = deployment.runtime if deployment else {}
        config = Config.resolve(flags, runtime)
        if not (need_platform or "platform" in flags or "platform" in runtime):
            return config
        platforms = self.get_plugins().registry.platforms
        if config.platform not in platforms:
            raise ConfigError(
                f"unknown platform {config.platform!r}; installed: {', '.join(sorted(platforms)) or 'none'}",
                field="--platform",
            )
        return config


class TextFormatter(logging.Formatter):
    """``pyrunsc: warning: ...`` on stderr; with a timestamp in a log file.
    Control characters in messages are shown as escapes (:func:`visible`)."""

    def __init__(self, timestamps: bool) -> None:
        super().__init__("%(asctime)s %(level)s %(message)s" if timestamps else "pyrunsc: %(level)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.level = record.levelname.lower()
        # The formatted copy only: other handlers see the record unchanged.
        shown = logging.makeLogRecord(record.__dict__)
        shown.msg, shown.args = visible(record.getMessage()), None
        return super().format(shown)


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


class _LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that reports a failed write once, in one line, rather
    than with logging's traceback for every record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"pyrunsc: warning: cannot write to the log: {error}", file=sys.__stderr__)


@dataclass
class _LogSetup:
    """How logs are written now: to ``file`` (None: stderr) in ``format``."""

    file: str | None
    format: str
    handler: logging.Handler | None = None


#: The current logging setup, for :func:`report_error`.
_log_setup: _LogSetup | None = None


def open_log(path: str) -> TextIO:
    """``path`` opened for appending log lines; ConfigError ``--log: cannot
    open ...`` (exit status 2) if it cannot be. A FIFO without a reader is
    refused rather than waited for."""
    if not path:
        raise ConfigError("cannot open '': the path is empty", field="--log")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        raise ConfigError(f"cannot open {show_path(path)}: {e.strerror or e}", field="--log") from None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            # What open(path, "a") does; files such as /proc/version refuse it.
            os.lseek(fd, 0, os.SEEK_END)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except OSError as e:
        os.close(fd)
        raise ConfigError(f"cannot open {show_path(path)}: {e.strerror or e}", field="--log") from None
    return os.fdopen(fd, "a", encoding="utf-8")


def setup_logging(log_file: str | os.PathLike[str] | None, log_format: str, debug: bool) -> None:
    """Send pyrunsc's log to ``log_file`` (or stderr) in ``log_format``.

    ConfigError (``--log: cannot open ...``) when the file cannot be opened;
    the previous setup then stays, but errors are reported in ``log_format``
    on stderr."""
    global _log_setup
    path = None if log_file is None else os.fspath(log_file)
    try:
        stream = open_log(path) if path is not None else None
    except ConfigError:
        _log_setup = _LogSetup(None, log_format)
        raise
    root = logging.getLogger("pyrunsc")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handler = _LogHandler(stream if stream is not None else sys.stderr)
    if stream is not None:
        level = logging.DEBUG if debug else logging.INFO
    else:
        level = logging.DEBUG if debug else logging.WARNING
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(TextFormatter(timestamps=stream is not None))
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(level)
    _log_setup = _LogSetup(path, log_format, handler)


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def report_error(message: str, exc_info: ExcInfo | None = None) -> None:
    """Report the error that ends the command, as the logs are set up.

    Logs on stderr: one line in the log format (``pyrunsc: error: ...`` or a
    JSON ``{"level": "error", ...}`` line), with the traceback when given.
    Logs in a file (``--log``): the entry goes there, and stderr still gets
    the one-line human message (and the traceback when given)."""
    record = logging.LogRecord("pyrunsc", logging.ERROR, __file__, 0, message, None, exc_info)
    setup = _log_setup
    if setup is not None and setup.file is not None and setup.handler is not None:
        setup.handler.handle(record)
        if exc_info is not None:
            traceback.print_exception(*exc_info, file=sys.stderr)
        click.echo(f"pyrunsc: error: {visible(message)}", err=True)
        return
    formatter: logging.Formatter
    if setup is not None and setup.format == "json":
        formatter = JSONFormatter()
    else:
        formatter = TextFormatter(timestamps=False)
    click.echo(formatter.format(record), err=True)


def _log_usage_error(error: click.ClickException) -> None:
    """Record a usage error in the ``--log`` file (click prints it on stderr)."""
    setup = _log_setup
    if setup is not None and setup.file is not None and setup.handler is not None:
        record = logging.LogRecord(
            "pyrunsc", logging.ERROR, __file__, 0, error.format_message(), None, None
        )
        setup.handler.handle(record)


def fail(error: PyrunscError, debug: bool) -> NoReturn:
    """Report ``error`` (see :func:`report_error`) and exit with its status;
    with ``debug``, a runtime failure (not bad input) shows its traceback."""
    exc_info: ExcInfo | None = None
    if debug and not isinstance(error, ConfigError):
        exc_info = (type(error), error, error.__traceback__)
    report_error(str(error), exc_info)
    sys.exit(error.exit_code)


class PyrunscGroup(rich_click.RichGroup):
    """Turns PyrunscError into a message and an exit status, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PyrunscError as e:
            fail(e, _debug(ctx))
        except click.ClickException as e:
            _log_usage_error(e)
            raise
        except (click.exceptions.Exit, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as e:
            debug = _debug(ctx)
            hint = "" if debug else " (run with --debug for a traceback)"
            report_error(
                f"internal error: {type(e).__name__}: {e}{hint}",
                (type(e), e, e.__traceback__) if debug else None,
            )
            sys.exit(1)


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_object(State)
    return bool(obj and obj.debug)


@click.group(cls=PyrunscGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Folder for container state (default: /run/pyrunsc as root, else "
                   "$XDG_RUNTIME_DIR/pyrunsc, else /tmp/pyrunsc-UID).")
@click.option("--log", "log_file", default=None, metavar="FILE",
              help="Write logs to this file (appending) instead of stderr.")
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
def cli(ctx: click.Context, /, root: str | None, log_file: str | None, log_format: str, **settings: Any) -> None:
    """pyrunsc: a sandbox runtime whose kernel is written in Python."""
    state = ctx.ensure_object(State)
    state.debug = bool(settings["debug"])
    state.log_file, state.log_format = log_file, log_format
    setup_logging(log_file, log_format, state.debug)
    if settings["strace"]:
        # strace lines are INFO records: let them through whatever the level.
        logging.getLogger("pyrunsc.strace").setLevel(logging.INFO)
        for h in logging.getLogger("pyrunsc").handlers:
            h.setLevel(min(h.level, logging.INFO))
    if root is not None and not root:
        raise ConfigError("must not be empty (leave --root out for the default)", field="--root")
    state.root = Path(root) if root is not None else None
    # Only flags given on the command line take precedence over a deployment.
    state.flags = {
        name: settings[name]
        for name in _SETTINGS
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }


def stdout_console() -> Console:
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)


def cell(text: str) -> str:
    """``text`` for a rich table cell: markup escaped, control characters
    shown as escapes (a spec value must not drive the terminal)."""
    return escape(visible(text))


_FORMAT_HELP = "Output format: a table to read, or JSON for programs."


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


# pyrunsc plugins


@cli.command("plugins")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help=_FORMAT_HELP)
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
        provides = [f"filesystem {cell(f)}" for f in r["filesystems"]]
        for p in r["platforms"]:
            state_text = "[green]available[/]" if p["available"] else f"[yellow]unavailable: {cell(p['reason'])}[/]"
            provides.append(f"platform {cell(p['name'])} ({state_text})")
        status = {"loaded": "[green]loaded[/]", "disabled": "[dim]disabled[/]"}.get(
            r["status"], f"[red]broken: {cell(r['error'] or '')}[/]"
        )
        if r["status"] == "disabled":
            status += f" [dim]({cell(r['error'] or '')})[/]"
        table.add_row(
            cell(r["name"]), cell(r["distribution"]), cell(r["version"]),
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
    shown = display_path(target)
    if os.path.lexists(target):
        raise ConfigError("already exists; remove it first", file=shown)
    if os.path.lexists(bundle) and not os.path.isdir(bundle):
        raise ConfigError(f"{show_path(bundle)} is not a folder", field="--bundle")
    try:
        bundle.mkdir(parents=True, exist_ok=True)
        write_atomic(target, json.dumps(default_spec(), indent="\t") + "\n", replace=False)
    except FileExistsError:
        raise ConfigError("already exists; remove it first", file=shown) from None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise ConfigError(f"cannot use {show_path(bundle)}: {e.strerror}", field="--bundle") from None
        raise PyrunscError(f"cannot write {shown}: {e.strerror or e}") from e


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


def load_input(
    state: State, bundle: Path | None, deployment: Path | None, *, need_platform: bool = False
) -> tuple[Spec, Config]:
    """The spec and settings from ``--bundle`` or ``--deployment`` (default: bundle ``.``)."""
    if bundle is not None and deployment is not None:
        raise click.UsageError("give --bundle or --deployment, not both")
    if deployment is not None:
        plugins = state.get_plugins()
        dep = load_deployment(deployment, platforms=sorted(plugins.registry.platforms))
        state.deployment_name = dep.name
        config = state.config(dep, need_platform=need_platform)
        if config.debug and not state.debug:
            # runtime.debug in the deployment means what --debug means.
            state.debug = True
            root = logging.getLogger("pyrunsc")
            root.setLevel(logging.DEBUG)
            for handler in root.handlers:
                handler.setLevel(logging.DEBUG)
        return dep.spec, config
    return load_bundle(bundle or Path(".")), state.config(need_platform=need_platform)


@cli.command("mounts")
@click.option("--bundle", "-b", type=click.Path(path_type=Path), default=None,
              help="Bundle folder with config.json (default: the current folder).")
@click.option("--deployment", "-d", type=click.Path(path_type=Path), default=None,
              help="YAML deployment file.")
@click.option("--restore-env", is_flag=True, help="Show the restore environment instead.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help=_FORMAT_HELP)
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
                table.add_row(cell(name), cell(a.dev), ",".join(a.flags.names()), cell(a.data))
        stdout_console().print(table)
        return
    resolved = resolve_all(plugins, spec, config)
    rows = mount_rows(resolved)
    if fmt == "json":
        emit_json(rows)
        return
    table = Table(title=f"compiled mounts of {cell(spec.file)}", title_justify="left")
    for col in ("destination", "type", "filesystem", "device", "flags", "data", "source"):
        table.add_column(col, overflow="fold")
    for row in rows:
        fs_name = row["filesystem"] + (" +overlay" if row["overlay"] else "")
        table.add_row(
            cell(row["destination"]), cell(row["type"]), cell(fs_name), cell(row["device"]),
            ",".join(row["flags"]), cell(row["data"]), cell(row["source"]),
        )
    stdout_console().print(table)



# Running containers (runc's run, state, list, kill, delete).


def parse_signal(text: str) -> int:
    """A signal as runc takes it: a name with or without SIG, or a number."""
    t = text.strip().upper()
    if t.isdigit():
        n = int(t)
        if 1 <= n <= 64:
            return n
    else:
        name = t if t.startswith("SIG") else "SIG" + t
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    raise ConfigError(f"unknown signal {text!r}; give a name like TERM or SIGKILL, or a number 1-64",
                      field="SIGNAL")


def _store(state: State, config: Config | None = None) -> StateStore:
    root = state.root or (config.root_dir if config else Config.resolve({}, None).root_dir)
    return StateStore(root)


def _container_id(given: str | None, deployment: Path | None, state: State) -> str:
    if given:
        return given
    if deployment is not None:
        name = state.deployment_name
        if name:
            return name
    raise click.UsageError("give a container ID (or a `name:` in the deployment)")


input_options = [
    click.option("--bundle", "-b", type=click.Path(path_type=Path), default=None,
                 help="Bundle folder with config.json (default: the current folder)."),
    click.option("--deployment", "-d", type=click.Path(path_type=Path), default=None, help="YAML deployment file."),
]


def with_input(fn: Any) -> Any:
    for opt in reversed(input_options):
        fn = opt(fn)
    return fn


@cli.command("run")
@with_input
@click.option("--detach", is_flag=True, help="Return once the container runs; it keeps the stdio given to it.")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the sandbox process's pid to this file.")
@click.argument("container_id", required=False)
@click.pass_context
def run_cmd(ctx: click.Context, bundle: Path | None, deployment: Path | None, detach: bool, pid_file: Path | None,
            container_id: str | None) -> None:
    """Create and run a container; exit with its status (128+N if killed by signal N)."""

    state: State = ctx.obj
    spec, config = load_input(state, bundle, deployment, need_platform=True)
    cid = _container_id(container_id, deployment, state)
    from . import sandbox

    code = sandbox.start(state.get_plugins(), _store(state, config), spec, config, cid, detach=detach,
                         pid_file=pid_file)
    ctx.exit(code)


@cli.command("checkpoint")
@click.option("--image-path", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The image folder to write; it must not exist.")
@click.option("--leave-running", is_flag=True, help="Keep the container running after the checkpoint.")
@click.option("--compression", type=click.Choice(["none", "zstd"]), default="none", show_default=True,
              help="Compress the memory pages and the kernel state.")
@click.option("--image-key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Sign the image with this key (default: the key under --root, made if missing).")
@click.argument("container_id")
@click.pass_obj
def checkpoint_cmd(state: State, image_path: Path, leave_running: bool, compression: str, key_file: Path | None,
                   container_id: str) -> None:
    """Save a running container to an image folder; it then stops, unless --leave-running.

    Every task is paused at a safe point while its state and memory are
    written. The folder appears complete or not at all; a failed checkpoint
    leaves the container running.
    """
    from .checkpoint.key import resolve_key
    from .checkpoint.progress import progress_for
    from .control import request

    store = _store(state)
    store.load(container_id)  # a missing container is named before anything else
    root = state.root or Config.resolve({}, None).root_dir
    key = resolve_key(root, key_file, create=True)
    assert key is not None
    path = Path(os.path.abspath(image_path))
    if os.path.lexists(path):
        raise ImageError("already exists; remove it or choose another path", file=os.fspath(image_path))
    args = {"image_path": os.fspath(path), "key": key.hex(), "compression": compression,
            "leave_running": leave_running}
    with progress_for() as progress:
        result = request(store, container_id, "checkpoint", args, progress=progress, timeout=CHECKPOINT_TIMEOUT)
    if not leave_running:
        _wait_stopped(store, container_id)
    log.info("checkpoint of %s: %s", container_id, result)


#: How long ``checkpoint`` waits for each word from the sandbox, in seconds.
CHECKPOINT_TIMEOUT = 600.0


def _wait_stopped(store: StateStore, cid: str, timeout: float = 30.0) -> None:
    """Wait until the checkpointed container's sandbox process has ended.

    Ended means exited, reaped or not: the sandbox of a detached container
    is not our child, and its reaper (init, a subreaper) may take its time
    (seconds, under some inits). A pidfd becomes readable at the exit itself.
    """
    import select

    import psutil

    try:
        st = store.load(cid)
    except PyrunscError:
        return  # a foreground run already removed it
    try:
        pidfd = os.pidfd_open(st.pid)
    except ProcessLookupError:
        return
    except OSError:  # no pidfds (Linux < 5.3): wait for the reaping
        try:
            psutil.Process(st.pid).wait(timeout=timeout)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            raise PyrunscError(f"container {cid!r} was checkpointed but its sandbox did not stop within "
                               f"{timeout:g} s") from None
        return
    try:
        ended = select.select([pidfd], [], [], timeout)[0]
    finally:
        os.close(pidfd)
    if not ended:
        raise PyrunscError(f"container {cid!r} was checkpointed but its sandbox did not stop within {timeout:g} s")


@cli.command("restore")
@click.option("--image-path", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The image folder a checkpoint wrote.")
@with_input
@click.option("--detach", is_flag=True, help="Return once the container runs; it keeps the stdio given to it.")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the sandbox process's pid to this file.")
@click.option("--image-key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Check the image's MAC with this key (default: the key under --root).")
@click.argument("container_id", required=False)
@click.pass_context
def restore_cmd(ctx: click.Context, image_path: Path, bundle: Path | None, deployment: Path | None, detach: bool,
                pid_file: Path | None, key_file: Path | None, container_id: str | None) -> None:
    """Start a container from a checkpoint image; it continues where it stopped.

    The bundle or deployment gives the mounts' host sources now (a mount may
    have moved); any other difference from the image's mounts is refused.
    The container gets this command's stdin, stdout and stderr, and, as with
    run, the exit status is the container's unless --detach.
    """
    from .checkpoint.key import resolve_key
    from .checkpoint.restore import mark, open_checked

    mark("command started")
    state: State = ctx.obj
    spec, config = load_input(state, bundle, deployment, need_platform=True)
    cid = _container_id(container_id, deployment, state)
    plugins = state.get_plugins()
    root = state.root or config.root_dir
    key = resolve_key(root, key_file, create=False)
    if key is None:
        raise ImageError(f"no image key at {os.fspath(root / 'image.key')}; give --image-key FILE",
                         file=os.fspath(image_path))
    image = open_checked(image_path, key, mount_rows(resolve_all(plugins, spec, config)))
    mark("image checked")
    from . import sandbox

    code = sandbox.start(plugins, _store(state, config), spec, config, cid, detach=detach, pid_file=pid_file,
                         image=image)
    ctx.exit(code)


@cli.command("state")
@click.argument("container_id")
@click.pass_obj
def state_cmd(state: State, container_id: str) -> None:
    """Print a container's OCI state as JSON."""
    emit_json(_store(state).load(container_id).oci())


@cli.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
@click.pass_obj
def list_cmd(state: State, fmt: str) -> None:
    """List containers under --root."""
    rows = [s.oci() for s in _store(state).list()]
    if fmt == "json":
        emit_json(rows)
        return
    table = Table(title="containers", title_justify="left")
    for col in ("id", "pid", "status", "bundle", "created"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(escape(r["id"]), str(r["pid"]), r["status"], escape(r["bundle"]), r["created"])
    stdout_console().print(table)


@cli.command("ps")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help=_FORMAT_HELP)
@click.argument("container_id")
@click.pass_obj
def ps_cmd(state: State, fmt: str, container_id: str) -> None:
    """List the processes of a running container, and the host resources its sandbox uses."""

    from .control import command_line, ps_report

    report = ps_report(_store(state), container_id)
    if fmt == "json":
        emit_json(report)
        return
    table = Table(title=f"processes of container {cell(container_id)}", title_justify="left")
    for col in ("UID", "PID", "PPID", "THREADS", "STATE", "STIME", "COMMAND"):
        table.add_column(col, overflow="fold", justify="right" if col in ("UID", "PID", "PPID", "THREADS") else "left")
    for p in report["processes"]:
        table.add_row(str(p["uid"]), str(p["pid"]), str(p["ppid"]), str(len(p["threads"])), p["state"], p["stime"],
                      cell(command_line(p)))
    console = stdout_console()
    console.print(table)
    console.print(escape(host_summary(report["host"])))


def _size(n: int) -> str:
    """Bytes in binary units, one decimal: ``85.1 MiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{n} B" if i == 0 else f"{value:.1f} {units[i]}"


def host_summary(host: dict[str, Any]) -> str:
    """The host-usage line under ``pyrunsc ps``'s table: ``host: sentry 4242
    + 3 stubs + gofer 4240: CPU 1.5% (0.61 s), RSS 84.5 MiB, PSS 58.4 MiB``."""
    procs = host["processes"]
    parts = [f"{r['role']} {r['pid']}" for r in procs if r["role"] != "stub"]
    stubs = sum(1 for r in procs if r["role"] == "stub")
    if stubs:
        parts.insert(1 if parts and procs[0]["role"] == "sentry" else 0, f"{stubs} stub{'s' if stubs > 1 else ''}")
    line = (f"host: {' + '.join(parts) or 'no process'}: CPU {host['cpu_percent']:.1f}% ({host['cpu_time']:.2f} s), "
            f"RSS {_size(host['rss'])}")
    if host["pss"] is not None:
        line += f", PSS {_size(host['pss'])}"
    return line


@cli.command("kill")
@click.argument("container_id")
@click.argument("signal_name", metavar="[SIGNAL]", required=False, default="TERM")
@click.pass_obj
def kill_cmd(state: State, container_id: str, signal_name: str) -> None:
    """Send SIGNAL (default TERM) to the container's init."""

    from . import sandbox

    sandbox.kill(_store(state), container_id, parse_signal(signal_name))


@cli.command("delete")
@click.option("--force", "-f", is_flag=True, help="Kill a running container first.")
@click.argument("container_id")
@click.pass_obj
def delete_cmd(state: State, force: bool, container_id: str) -> None:
    """Delete a stopped container (and its state)."""

    from . import sandbox

    sandbox.delete(_store(state), container_id, force=force)


# Checkpoint images (issue 7).


@cli.group("image", cls=rich_click.RichGroup)
def image_group() -> None:
    """Look into checkpoint images."""


def _image_key(state: State, key_file: Path | None) -> tuple[bytes | None, str]:
    """The key to check images with, and where it came from (for messages):
    ``--image-key``, else the root's key, which is not created here."""
    from .checkpoint.key import KEY_FILE, resolve_key

    root = state.root or Config.resolve({}, None).root_dir
    key = resolve_key(root, key_file, create=False)
    return key, os.fspath(key_file) if key_file is not None else os.fspath(root / KEY_FILE)


@image_group.command("inspect")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help=_FORMAT_HELP)
@click.option("--image-key", "key_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="FILE", help="Check the MAC with this key (default: the key under --root).")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.pass_obj
def image_inspect_cmd(state: State, fmt: str, key_file: Path | None, directory: Path) -> None:
    """Show a checkpoint image's header, and whether its MAC and checksums verify.

    Exit status 2 if the image is unreadable, altered, truncated or made with
    another key; the header is still shown when it can be read.
    """
    from .checkpoint.image import inspect_image
    from .checkpoint.progress import BarProgress, Progress

    key, key_source = _image_key(state, key_file)
    progress: Progress = BarProgress(sys.stderr) if sys.stderr.isatty() else Progress()
    try:
        found = inspect_image(directory, key, progress=progress)
    finally:
        if isinstance(progress, BarProgress):
            progress.close()
    if fmt == "json":
        emit_json(found.to_json())
    else:
        _print_inspection(found, key_source)
    if key is None:
        log.warning("no image key at %s: the MAC was not checked (give --image-key FILE)", key_source)
    if found.problems:
        raise ImageError("; ".join(found.problems), file=os.fspath(directory))


def _print_inspection(found: Inspection, key_source: str) -> None:
    """``pyrunsc image inspect``'s tables: the header, mounts, tasks, tmpfs."""
    from .checkpoint.progress import format_bytes

    h = found.header

    def text(value: Any) -> str:
        return cell(value if isinstance(value, str) else json.dumps(value))

    def size(value: Any) -> str:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return f"{format_bytes(value)} ({value} bytes)" if ok else text(value)

    def get(*names: str) -> Any:
        value: Any = h
        for name in names:
            value = value.get(name) if isinstance(value, dict) else None
        return value

    console = stdout_console()
    if found.mac is True:
        verdict = "[green]verified[/]" if not found.problems else "[red]MAC ok, parts damaged[/]"
    elif found.mac is False:
        verdict = "[red]NOT VERIFIED: the MAC does not verify[/]"
    else:
        verdict = "[yellow]MAC not checked: no key[/]"
    table = Table(title=f"checkpoint image {cell(os.fspath(found.path))}: {verdict}", title_justify="left",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    memory = get("memory") or {}
    committed, saved = get("memory", "committed"), get("memory", "saved")
    zero = committed - saved if isinstance(committed, int) and isinstance(saved, int) else None
    extents = get("memory", "extents")
    rows = [
        ("format", str(found.version)),
        ("pyrunsc version", text(get("pyrunsc_version"))),
        ("created", text(get("created"))),
        ("platform", text(get("platform"))),
        ("container id", text(get("container_id"))),
        ("spec digest", text(get("spec_digest"))),
        ("compression", text(get("compression"))),
        ("memory file", size(memory.get("file_size")) if isinstance(memory, dict) else text(memory)),
        ("memory committed", size(committed)),
        ("memory saved", f"{size(saved)} in {len(extents) if isinstance(extents, list) else '?'} extents"),
        ("zero pages skipped", size(zero)),
        ("kernel blob", size(get("parts", "kernel", "raw_size"))),
    ]
    for name, st in found.files.items():
        rows.append((name, f"{size(st['size'])}, {format_bytes(st['allocated'])} on disk"))
    rows.append(("key", f"id {text(get('key_id'))}; checked with {cell(key_source)}"
                 if found.mac is not None else f"id {text(get('key_id'))}; no key at {cell(key_source)}"))
    rows.append(("MAC", {True: "[green]ok[/]", False: "[red]mismatch[/]", None: "[yellow]unchecked[/]"}[found.mac]))
    rows.append(("checksums", "[green]ok[/]" if not found.problems else
                 "[red]" + cell("; ".join(found.problems)) + "[/]"))
    for field_name, value in rows:
        table.add_row(field_name, value)
    console.print(table)

    mounts = get("mounts")
    if isinstance(mounts, list) and mounts:
        mt = Table(title="compiled mounts", title_justify="left")
        cols = ("destination", "type", "filesystem", "device", "flags", "source")
        for col in cols:
            mt.add_column(col, overflow="fold")
        for m in mounts:
            m = m if isinstance(m, dict) else {}
            mt.add_row(*(text(",".join(m[c]) if c == "flags" and isinstance(m.get(c), list) else m.get(c, ""))
                         for c in cols))
        console.print(mt)
    for title, items in (("tasks", get("tasks")), ("tmpfs", get("tmpfs"))):
        if not isinstance(items, list) or not items:
            continue
        cols_seen: list[str] = []
        for item in items:
            for k in item if isinstance(item, dict) else ():
                if k not in cols_seen:
                    cols_seen.append(k)
        tt = Table(title=f"{title} ({len(items)})", title_justify="left")
        for col in cols_seen:
            tt.add_column(cell(col), overflow="fold")
        for item in items:
            item = item if isinstance(item, dict) else {}
            tt.add_row(*(size(item.get(c)) if c == "bytes" else text(item.get(c, "")) for c in cols_seen))
        console.print(tt)
    plugins = get("plugins")
    if isinstance(plugins, dict) and plugins:
        console.print("plugins: " + text(plugins))


def _global_flags(args: list[str]) -> dict[str, str]:
    """The global flags given before the command (``--log V``, ``--log=V``,
    ``--debug``), found without click, which parses them only after the
    plugins have loaded. The values of the global flags that take one are
    skipped, so ``--root /x --log f`` finds ``--log``; a later flag of the
    same name wins, as in click."""
    takes_value = {
        opt for p in cli.params if isinstance(p, click.Option) and not p.is_flag and not p.count
        for opt in p.opts
    }
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or arg == "-" or not arg.startswith("-"):
            break  # the subcommand: global flags come before it
        name, eq, value = arg.partition("=")
        if name in takes_value:
            if not eq:
                if i + 1 >= len(args):
                    break
                i += 1
                value = args[i]
            found[name] = value
        elif arg == "--debug":
            found[arg] = ""
        i += 1
    return found


def ensure_stdio() -> None:
    """Open /dev/null on any of fds 0, 1 and 2 the caller left closed, so that
    no file pyrunsc opens (a gofer socket, the memory file) lands there and
    becomes the container's stdio."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower fd was closed too and took it; keep both as /dev/null
                os.dup2(opened, fd)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - the process's stdout
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the process's stderr


def main(argv: list[str] | None = None) -> None:
    """The console script: load plugins, let them add commands, run."""
    ensure_stdio()
    state = State()
    # Plugins load (and may warn) before click parses the flags: honour the
    # logging flags already.
    args = sys.argv[1:] if argv is None else argv
    flags = _global_flags(args)
    try:
        setup_logging(flags.get("--log"), flags.get("--log-format") or "text", "--debug" in flags)
        state.get_plugins().add_commands(cli)
    except PyrunscError as e:
        fail(e, False)
    cli.main(args=argv, prog_name="pyrunsc", obj=state)
