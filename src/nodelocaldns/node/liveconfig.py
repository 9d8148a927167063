"""The agent's live configuration: both mounted directories -> ``-conf`` -> the running server.

At start-up ``initial`` renders ``-basecorefile`` + the kube-dns ConfigMap, checks the result with the
server's own parser and writes ``-conf``. A bad ConfigMap is not fatal: like node-cache, the template
is served without it and the error is counted. Neither is a template that cannot be read or a
``-conf`` that cannot be written (kubespray mounts a finished Corefile as ``-conf`` and no template):
node-cache then counts a ``configmap`` error and CoreDNS serves ``-conf`` as it is, and so does this
agent. Only when ``-conf`` is not a usable Corefile either does start-up fail (exit 1).

Then both directories are polled; a change is rendered and checked off the event loop, handed to
the server's ``prepare`` (parse, plan, build: all that can fail on the text), written, and then
committed (listening sockets stay open). With ``-reloadwithsignal`` the commit goes through the
SIGUSR1 handler instead, which re-reads ``-conf`` as node-cache's CoreDNS does. A change that fails
anywhere leaves the last good Corefile both served and on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import replace
from typing import Any

from nodelocaldns.errors import ConfigError, TemplateError
from nodelocaldns.node.configsync import (
    Inputs,
    build_corefile,
    check_corefile,
    read_error,
    template_from_state,
    write_atomic,
)
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.kubednscm import KubeDNSConfig, config_from_state
from nodelocaldns.node.render import RenderResult
from nodelocaldns.node.setup_metrics import SetupMetrics
from nodelocaldns.node.watch import DirectoryState, scan_directory, watch_directory
from nodelocaldns.server.server import Server

log = logging.getLogger("nodelocaldns.node")


class LiveConfig:
    def __init__(
        self,
        params: NodeCacheParams,
        env: Mapping[str, str],
        metrics: SetupMetrics,
        *,
        watch_interval: float,
        signal_reload_timeout: float,
    ) -> None:
        self.params = params
        self.env = dict(env)
        self.metrics = metrics
        self.watch_interval = watch_interval
        self.signal_reload_timeout = signal_reload_timeout
        self.inputs: Inputs | None = None
        """What the served Corefile was rendered from; None while ``-conf`` is served as it is."""
        self.kubedns = KubeDNSConfig()
        """The kube-dns ConfigMap as last parsed, kept for when a template shows up."""
        self.server: Server | None = None
        self.initial_text = ""
        self._first_digest: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._closing = False
        self._watchers: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._signal_waiter: asyncio.Future[bool] | None = None

    @property
    def served_text(self) -> str:
        """The Corefile the server runs now (what ``-conf`` holds)."""
        return self.server.text if self.server is not None else self.initial_text

    # -- start-up ----------------------------------------------------------------------------------

    async def initial(self) -> str | None:
        """Render, check and write ``-conf``, or fall back to ``-conf`` as it is; the text to serve,
        or None (after logging why) if there is nothing usable."""
        p = self.params
        template: str | None = None
        try:
            template_state = await asyncio.to_thread(scan_directory, _dir_of(p.base_corefile))
            self._first_digest["template"] = template_state.digest
            template = template_from_state(template_state, p.base_corefile)
        except TemplateError as exc:
            problem = exc.reason
        except OSError as exc:
            problem = read_error(p.base_corefile, exc)
        if template is None:
            self.config_error(f"Failed to read node-cache coreFile {p.base_corefile} - {problem}")
        self.kubedns = await self._initial_kubedns()
        if template is None:
            return await self._conf_as_it_is(f"the template {p.base_corefile} cannot be read ({problem})")
        result = await self._render_initial(Inputs(template, self.kubedns))
        if result is None:
            return None
        try:
            write_atomic(p.corefile, result.text)
        except OSError as exc:
            # node-cache's words; CoreDNS then loads whatever -conf holds.
            self.config_error(f"Failed to write config file {p.corefile} - err {read_error(p.corefile, exc)}")
            return await self._conf_as_it_is(f"{p.corefile} cannot be written")
        self._log_render(result)
        self.initial_text = result.text
        return result.text

    async def _initial_kubedns(self) -> KubeDNSConfig:
        p = self.params
        if p.kubedns_cm is None:
            log.info("Skipping kube-dns configmap sync as no directory was specified")
            return KubeDNSConfig()
        try:
            kube_state = await asyncio.to_thread(scan_directory, p.kubedns_cm)
            self._first_digest["kubedns"] = kube_state.digest
            return config_from_state(kube_state)
        except (ConfigError, OSError) as exc:
            self.config_error(f"Failed to sync kube-dns config directory {p.kubedns_cm}, err: {exc}")
            return KubeDNSConfig()

    async def _render_initial(self, inputs: Inputs) -> RenderResult | None:
        """Render ``inputs``; without the ConfigMap if that is what breaks it. Sets ``self.inputs``."""
        p = self.params
        try:
            result = await asyncio.to_thread(build_corefile, inputs, p, self.env)
        except ConfigError as exc:
            if inputs.kubedns == KubeDNSConfig():
                log.error("%s", exc)
                return None
            # node-cache first writes the template without the ConfigMap; a ConfigMap that does not
            # render leaves exactly that in place. So does this.
            self.config_error(f"kube-dns ConfigMap not applied: {exc}")
            inputs = Inputs(inputs.template)
            try:
                result = await asyncio.to_thread(build_corefile, inputs, p, self.env)
            except ConfigError as exc2:
                log.error("%s", exc2)
                return None
        self.inputs = inputs
        return result

    async def _conf_as_it_is(self, problem: str) -> str | None:
        """node-cache's fallback: CoreDNS loads ``-conf`` whatever happened to the template."""
        path = self.params.corefile
        self.inputs = None
        fix = (
            f"mount the template at {self.params.base_corefile} (-basecorefile) or a complete Corefile"
            f" at {path} (-conf)"
        )
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            log.error(
                "No Corefile to serve: %s, and -conf %s: %s; %s", problem, path, read_error(path, exc), fix
            )
            return None
        except UnicodeDecodeError as exc:
            log.error(
                "No Corefile to serve: %s, and -conf %s is not UTF-8 text (%s); %s", problem, path, exc, fix
            )
            return None
        try:
            await asyncio.to_thread(check_corefile, text, path)
        except ConfigError as exc:
            log.error("No Corefile to serve: %s, and -conf is not valid: %s", problem, exc)
            return None
        log.warning("Serving %s as it is: %s", path, problem)
        log.info("Using config file:\n%s", text)
        self.initial_text = text
        return text

    def start(self, server: Server) -> None:
        """Follow both directories from now on, applying changes to ``server``."""
        self.server = server
        template_dir = _dir_of(self.params.base_corefile)
        self._watchers.append(
            asyncio.create_task(watch_directory(template_dir, self.watch_interval, self._on_template_state))
        )
        if self.params.kubedns_cm is not None:
            self._watchers.append(
                asyncio.create_task(
                    watch_directory(self.params.kubedns_cm, self.watch_interval, self._on_kubedns_state)
                )
            )

    async def close(self) -> None:
        """Let a change in progress finish, then apply no more."""
        async with self._lock:
            self._closing = True
        await self.cancel()

    async def cancel(self) -> None:
        for task in [*self._watchers, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._watchers, *self._tasks, return_exceptions=True)

    # -- changes -----------------------------------------------------------------------------------

    def _already_seen(self, key: str, state: DirectoryState) -> bool:
        # watch_directory always reports its first scan; start-up has applied that content already.
        return self._first_digest.pop(key, None) == state.digest

    async def _on_template_state(self, state: DirectoryState) -> None:
        if self._already_seen("template", state) or self.server is None:
            return
        base = self.params.base_corefile
        try:
            template = template_from_state(state, base)
        except TemplateError as exc:
            if self.inputs is None:  # still serving -conf as it is, as node-cache does
                self.config_error(f"Failed to read node-cache coreFile {base} - {exc.reason}")
            else:
                self.config_error(
                    f"Corefile template change not applied, keeping the last good Corefile: {exc}"
                )
            return
        inputs = (
            Inputs(template, self.kubedns) if self.inputs is None else replace(self.inputs, template=template)
        )
        await self.apply(inputs, "Corefile template")

    async def _on_kubedns_state(self, state: DirectoryState) -> None:
        if self._already_seen("kubedns", state) or self.server is None:
            return
        try:
            config = config_from_state(state)
        except ConfigError as exc:
            self.config_error(f"Failed to sync kube-dns config directory {state.path}, err: {exc}")
            return
        self.kubedns = config
        if self.inputs is None:
            self.config_error(
                f"Failed to read node-cache coreFile {self.params.base_corefile} - the kube-dns ConfigMap"
                f" change waits for the template; serving {self.params.corefile} as it is"
            )
            return
        await self.apply(replace(self.inputs, kubedns=config), "kube-dns ConfigMap")

    async def apply(self, inputs: Inputs, what: str) -> None:
        """Render ``inputs``; if that gives a new valid Corefile, write it and switch to it live."""
        async with self._lock:
            server = self.server
            if self._closing or server is None:
                return
            try:
                result = await asyncio.to_thread(build_corefile, inputs, self.params, self.env)
            except ConfigError as exc:
                self.config_error(f"{what} change not applied, keeping the last good Corefile: {exc}")
                return
            if result.text == self.served_text:
                self.inputs = inputs
                return
            self._log_render(result)
            if await self._switch_to(server, result.text):
                self.inputs = inputs

    async def _switch_to(self, server: Server, text: str) -> bool:
        last_good = self.served_text
        path = self.params.corefile
        if self.params.reload_with_signal:
            ok = self._write(path, text) and await self._reload_via_signal()
        else:
            ok = await self._prepare_write_commit(server, path, text)
        if ok:
            return True
        self.config_error("The new Corefile could not be applied; keeping the last good Corefile")
        try:
            write_atomic(path, last_good)
        except OSError as exc:
            log.error("Failed to restore the Corefile %s: %s", path, exc)
        return False

    async def _prepare_write_commit(self, server: Server, path: str, text: str) -> bool:
        # -conf is written only once the server has accepted the text, and before the switch, so
        # what is on disk is what serves (or is about to).
        return await server.reload(text, before_commit=lambda: self._write(path, text))

    def _write(self, path: str, text: str) -> bool:
        try:
            write_atomic(path, text)
        except OSError as exc:
            self.config_error(f"Failed to write the Corefile {path}: {exc}")
            return False
        return True

    async def _reload_via_signal(self) -> bool:
        """node-cache's ``-reloadwithsignal``: SIGUSR1 to ourselves; the handler re-reads ``-conf``."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._signal_waiter = waiter
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await asyncio.wait_for(asyncio.shield(waiter), self.signal_reload_timeout)
        except TimeoutError:
            log.error("No reload after SIGUSR1 within %gs", self.signal_reload_timeout)
            return False
        finally:
            self._signal_waiter = None

    def on_sigusr1(self) -> None:
        self._spawn(self._reload_from_file())

    async def _reload_from_file(self) -> None:
        waiter = self._signal_waiter
        ok = False
        if self.server is not None and not self._closing:
            ok = await self.server.reload()
        if waiter is not None and not waiter.done():
            waiter.set_result(ok)

    # -- helpers -----------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def config_error(self, message: str) -> None:
        log.error("%s", message)
        self.metrics.inc("configmap")

    def _log_render(self, result: RenderResult) -> None:
        for warning in result.warnings:
            log.warning("%s", warning)
        log.info("%s", result.summary)
        log.info("Using config file:\n%s", result.text)


def _dir_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))
