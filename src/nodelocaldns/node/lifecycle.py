"""The node-cache agent's life: start-up order, live configuration, self-healing, shutdown.

Start-up (node-cache's order, made explicit):

1. render ``-basecorefile`` + the kube-dns ConfigMap, check it with the server's own parser, write
   ``-conf`` atomically. A bad ConfigMap is not fatal: like node-cache, the template is served
   without it and the error is counted. Neither is a template that cannot be read or a ``-conf``
   that cannot be written (kubespray mounts a finished Corefile as ``-conf`` and no template):
   node-cache then counts a ``configmap`` error and CoreDNS serves ``-conf`` as it is, and so does
   this agent. Only when ``-conf`` is not a usable Corefile either does start-up fail (exit 1).
2. remove rules an earlier run left for addresses that are no longer ours (see ``_remove_stale_rules``);
3. the interface and its addresses, so ``bind`` can succeed; no rules yet;
4. the DNS server: every listener bound, health/ready/metrics up;
5. only then the NOTRACK/ACCEPT rules: a server that failed to start never black-holes the node's DNS;
6. the pidfile, as the "fully up" signal.

Then: the rules and the interface are re-checked every ``-syncinterval``; both mounted directories
are polled and a change is rendered, checked, written and applied live with ``Instance.reload``
(listening sockets stay open), or through the SIGUSR1 handler with ``-reloadwithsignal``.

Shutdown on SIGTERM/SIGINT (a second signal exits at once), or exit 1 when the loop plugin fires:
not ready -> lameduck (still answering) -> delete the rules -> stop listening and drain -> remove
the addresses. Rules go *before* the sockets close, as node-cache does (its teardown runs before
``caddy.Stop``): from that moment kube-proxy's DNAT takes the kube-dns ClusterIP again while the
link-local address is still answered, so no query meets a closed port on a local address with
NOTRACK rules in front of it. ``-skipteardown`` keeps rules and addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError, SetupError, TemplateError
from nodelocaldns.node.backend import RulesBackend
from nodelocaldns.node.configsync import (
    Inputs,
    build_corefile,
    check_corefile,
    read_error,
    template_from_state,
    write_atomic,
)
from nodelocaldns.node.diagnose import bind_hint, listen_addresses, listen_keys
from nodelocaldns.node.factory import select_backend
from nodelocaldns.node.failsafe import rules_for
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.interface import InterfaceSpec
from nodelocaldns.node.kubednscm import KubeDNSConfig, config_from_state
from nodelocaldns.node.leftovers import remove_from_other_backends, stale_rules
from nodelocaldns.node.networker import NetWorker
from nodelocaldns.node.nft import NftBackend
from nodelocaldns.node.reconcile import Reconciler, ReconcileReport
from nodelocaldns.node.render import RenderResult
from nodelocaldns.node.rules import Rule, desired_rules, format_rule_go
from nodelocaldns.node.setup_metrics import SetupMetrics, serve_setup_metrics
from nodelocaldns.node.watch import DirectoryState, scan_directory, watch_directory
from nodelocaldns.server.httpd import HTTPServer
from nodelocaldns.server.instance import Instance

log = logging.getLogger("nodelocaldns.node")
T = TypeVar("T")


@dataclass(frozen=True)
class AgentOptions:
    """Knobs that are not node-cache flags."""

    watch_interval: float = 10.0
    """Seconds between polls of the template and kube-dns ConfigMap directories (node-cache: 10 s)."""
    drain: float = 5.0
    """Upper bound for answering in-flight queries after the listeners close."""
    tick_timeout: float = 20.0
    """How long shutdown waits for a reconcile tick that is already running (xtables lock waits)."""
    signal_reload_timeout: float = 30.0
    """How long a ``-reloadwithsignal`` change waits for the SIGUSR1 handler's verdict."""
    version: str = __version__


class NodeAgent:
    """One run of the agent. ``await NodeAgent(params, env).run()`` returns the exit code."""

    def __init__(
        self,
        params: NodeCacheParams,
        env: Mapping[str, str],
        options: AgentOptions | None = None,
        *,
        force_exit: Callable[[int], None] = os._exit,
    ) -> None:
        self.params = params
        self.env = dict(env)
        self.options = options or AgentOptions()
        self.force_exit = force_exit
        self.metrics = SetupMetrics()
        ips = tuple(ip.compressed for ip in params.local_ips)
        self.rules: tuple[Rule, ...] = (
            tuple(desired_rules(ips, params.dns_port, params.health_port)) if params.setup_iptables else ()
        )
        self.iface = InterfaceSpec(params.interface_name, ips) if params.setup_interface else None
        self.backend: RulesBackend | None = None
        self.reconciler: Reconciler | None = None
        self.inst: Instance | None = None
        self.inputs: Inputs | None = None
        """What the served Corefile was rendered from; None while ``-conf`` is served as it is."""
        self.kubedns = KubeDNSConfig()
        """The kube-dns ConfigMap as last parsed, kept for when a template shows up."""
        self.net: NetWorker | None = None
        self._initial_text = ""
        self._first_digest: dict[str, str] = {}
        self._apply_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._closing = False
        self._signals = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._metrics_server: HTTPServer | None = None
        self._signal_waiter: asyncio.Future[bool] | None = None
        self._pidfile_written = False
        # /ready (when the Corefile has `ready`) waits for the first complete network setup.
        self._setup_complete = not (params.setup_interface or params.setup_iptables)
        self._setup_problem = "node network setup in progress"

    # -- the whole run -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
        loop.add_signal_handler(signal.SIGTERM, self._on_stop_signal, signal.SIGTERM)
        loop.add_signal_handler(signal.SIGINT, self._on_stop_signal, signal.SIGINT)
        loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)
        self.net = NetWorker()
        try:
            code = await self._start()
            if code is not None:
                return code
            return await self._serve_until_done()
        except Exception:
            log.exception("Unexpected error, tearing down")
            await self._emergency_teardown()
            return 1
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            for task in [*self._tasks, *self._watchers]:
                task.cancel()
            await asyncio.gather(*self._tasks, *self._watchers, return_exceptions=True)
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            self.net.close()

    @property
    def served_text(self) -> str:
        """The Corefile the server runs now (what ``-conf`` holds)."""
        return self.inst.text if self.inst is not None else self._initial_text

    # -- start-up ----------------------------------------------------------------------------------

    async def _start(self) -> int | None:
        p = self.params
        log.info("Using Corefile %s", p.corefile)
        log.info("Using Pidfile %s", p.pidfile or "")
        text = await self._initial_corefile()
        if text is None:
            return 1
        self._initial_text = text
        await self._start_setup_metrics()

        if p.setup_iptables:
            self.backend = await self._net(select_backend(p.rules_backend))
            log.info("Using %s for the nodelocaldns rules", self.backend.name)
            ips = [ip.compressed for ip in p.local_ips]
            self.rules = await self._net(
                rules_for(self.backend, ips, p.dns_port, p.health_port, self.metrics, log)
            )
        self.reconciler = Reconciler(
            self.backend, self.iface, self.metrics, p.sync_interval, rules=self.rules, logger=log
        )
        await self._remove_stale_rules()
        # The addresses must exist before the listeners bind to them; the rules wait for the server.
        setup = await self._net(self.reconciler.reconcile_once(with_rules=False))

        self.inst = Instance(text, p.corefile)
        self.inst.extra_ready_checks.append(self._ready_check)
        try:
            await self.inst.start()
        except (ConfigError, OSError) as exc:
            await self.inst.stop(0)
            self.inst = None
            hint = bind_hint(exc, listen_keys(text))
            if setup.errors:
                hint += f" (the interface setup failed first: {'; '.join(str(e) for e in setup.errors)})"
            log.error("Failed to start the DNS server on %s: %s%s", listen_addresses(text), exc, hint)
            await self._teardown_after_failed_start()
            return 1
        self._banner(self.inst)

        if not self._stop.is_set():
            self._note_setup(await self._net(self.reconciler.reconcile_once(with_rules=True)))
            self._write_pidfile()
            self._sync_task = asyncio.create_task(self._sync_loop())
            self._start_watchers()
        return None

    async def _initial_corefile(self) -> str | None:
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
            self._config_error(f"Failed to read node-cache coreFile {p.base_corefile} - {problem}")
        self.kubedns = await self._initial_kubedns()
        if template is None:
            return self._conf_as_it_is(f"the template {p.base_corefile} cannot be read ({problem})")
        result = self._render_initial(Inputs(template, self.kubedns))
        if result is None:
            return None
        try:
            write_atomic(p.corefile, result.text)
        except OSError as exc:
            # node-cache's words; CoreDNS then loads whatever -conf holds.
            self._config_error(
                f"Failed to write config file {p.corefile} - err {read_error(p.corefile, exc)}"
            )
            return self._conf_as_it_is(f"{p.corefile} cannot be written")
        self._log_render(result)
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
            self._config_error(f"Failed to sync kube-dns config directory {p.kubedns_cm}, err: {exc}")
            return KubeDNSConfig()

    def _render_initial(self, inputs: Inputs) -> RenderResult | None:
        """Render ``inputs``; without the ConfigMap if that is what breaks it. Sets ``self.inputs``."""
        p = self.params
        try:
            result = build_corefile(inputs, p, self.env)
        except ConfigError as exc:
            if inputs.kubedns == KubeDNSConfig():
                log.error("%s", exc)
                return None
            # node-cache first writes the template without the ConfigMap; a ConfigMap that does not
            # render leaves exactly that in place. So does this.
            self._config_error(f"kube-dns ConfigMap not applied: {exc}")
            inputs = Inputs(inputs.template)
            try:
                result = build_corefile(inputs, p, self.env)
            except ConfigError as exc2:
                log.error("%s", exc2)
                return None
        self.inputs = inputs
        return result

    def _conf_as_it_is(self, problem: str) -> str | None:
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
            check_corefile(text, path)
        except ConfigError as exc:
            log.error("No Corefile to serve: %s, and -conf is not valid: %s", problem, exc)
            return None
        log.warning("Serving %s as it is: %s", path, problem)
        log.info("Using config file:\n%s", text)
        return text

    async def _start_setup_metrics(self) -> None:
        addr = self.params.metrics_listen_address
        try:
            self._metrics_server = await serve_setup_metrics(addr, self.metrics)
        except (OSError, ConfigError) as exc:
            # node-cache logs and runs without its own metrics; DNS matters more than a scrape target.
            log.error("Failed to start metrics handler on %s: %s", addr, exc)

    async def _remove_stale_rules(self) -> None:
        """Delete rules carrying our comments for addresses that are not ours any more.

        A SIGKILLed or OOM-killed run leaves its rules behind. Rules for our current addresses are
        simply adopted (the first tick makes them exactly one copy each). Rules for an address we no
        longer hold are dangerous: a NOTRACK rule for the kube-dns ClusterIP after a switch to IPVS
        mode bypasses kube-proxy's DNAT with nobody listening. Rules for our own addresses with
        other ports (a second DaemonSet's ``-health-port``) are left alone. Our rules in a backend we
        no longer use (``-rules-backend`` changed) go too; see ``leftovers.py``. The nft backend
        needs nothing more: its first tick replaces its whole table.
        """
        backend = self.backend
        if backend is None:
            return
        await self._net(remove_from_other_backends(backend, self.rules, logger=log))
        if isinstance(backend, NftBackend):
            return
        ours = {ip.compressed for ip in self.params.local_ips}
        try:
            owned = await self._net(backend.list_owned())
            stale = stale_rules(owned, self.rules, ours)
            if not stale:
                return
            deleted = await self._net(backend.delete(stale))
        except SetupError as exc:
            self.metrics.count(exc)
            log.error("Failed to check for stale nodelocaldns rules: %s", exc)
            return
        for rule in stale:
            log.info("Deleted stale nodelocaldns rule - %s", format_rule_go(rule))
        log.info("Deleted %d stale nodelocaldns rules left by an earlier run", deleted)

    async def _teardown_after_failed_start(self) -> None:
        # Only what this run added: an address or rule that was there before (another instance,
        # an operator's, the run before a restart) is not ours to take away because we failed.
        if self.params.skip_teardown or self.reconciler is None:
            return
        await self._net(self.reconciler.teardown(only_added=True))

    def _banner(self, inst: Instance) -> None:
        if self.params.quiet:
            return
        for lst in inst.listeners.values():
            for zone in sorted(lst.router.zones):
                log.info("%s:%d on %s", zone, lst.port, lst.host or "*")
        log.info("nodelocaldns-%s", self.options.version)

    def _note_setup(self, report: ReconcileReport) -> None:
        if report.ok:
            self._setup_complete = True
        elif not self._setup_complete:
            self._setup_problem = "node network setup failed: " + "; ".join(str(e) for e in report.errors)

    def _ready_check(self) -> str | None:
        """Not ready until the interface and the rules were in place once. After that a failing tick
        (an xtables lock timeout) does not flap readiness: the rules from before are still there."""
        return None if self._setup_complete else self._setup_problem

    def _write_pidfile(self) -> None:
        path = self.params.pidfile
        if not path:
            return
        try:
            write_atomic(path, f"{os.getpid()}\n")
        except OSError as exc:
            log.error("Could not write pidfile %s: %s", path, exc)
            return
        self._pidfile_written = True

    # -- running -----------------------------------------------------------------------------------

    async def _serve_until_done(self) -> int:
        inst = self.inst
        assert inst is not None
        fatal = asyncio.ensure_future(inst.fatal_event.wait())
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([fatal, stopped], return_when=asyncio.FIRST_COMPLETED)
        fatal.cancel()
        stopped.cancel()
        failed = inst.fatal is not None
        await self._shutdown(inst, failed)
        return 1 if failed else 0

    async def _sync_loop(self) -> None:
        rec = self.reconciler
        assert rec is not None
        while not await _wait(self._stop, self.params.sync_interval):
            try:
                self._note_setup(await self._net(rec.reconcile_once()))
            except Exception:  # a bug must not end the loop that keeps the node's DNS working
                log.exception("unexpected error during node setup")

    def _start_watchers(self) -> None:
        interval = self.options.watch_interval
        template_dir = _dir_of(self.params.base_corefile)
        self._watchers.append(
            asyncio.create_task(watch_directory(template_dir, interval, self._on_template_state))
        )
        if self.params.kubedns_cm is not None:
            self._watchers.append(
                asyncio.create_task(watch_directory(self.params.kubedns_cm, interval, self._on_kubedns_state))
            )

    def _already_seen(self, key: str, state: DirectoryState) -> bool:
        # watch_directory always reports its first scan; start-up has applied that content already.
        return self._first_digest.pop(key, None) == state.digest

    async def _on_template_state(self, state: DirectoryState) -> None:
        if self._already_seen("template", state) or self.inst is None:
            return
        base = self.params.base_corefile
        try:
            template = template_from_state(state, base)
        except TemplateError as exc:
            if self.inputs is None:  # still serving -conf as it is, as node-cache does
                self._config_error(f"Failed to read node-cache coreFile {base} - {exc.reason}")
            else:
                self._config_error(
                    f"Corefile template change not applied, keeping the last good Corefile: {exc}"
                )
            return
        inputs = (
            Inputs(template, self.kubedns) if self.inputs is None else replace(self.inputs, template=template)
        )
        await self._apply(inputs, "Corefile template")

    async def _on_kubedns_state(self, state: DirectoryState) -> None:
        if self._already_seen("kubedns", state) or self.inst is None:
            return
        try:
            config = config_from_state(state)
        except ConfigError as exc:
            self._config_error(f"Failed to sync kube-dns config directory {state.path}, err: {exc}")
            return
        self.kubedns = config
        if self.inputs is None:
            self._config_error(
                f"Failed to read node-cache coreFile {self.params.base_corefile} - the kube-dns ConfigMap"
                f" change waits for the template; serving {self.params.corefile} as it is"
            )
            return
        await self._apply(replace(self.inputs, kubedns=config), "kube-dns ConfigMap")

    async def _apply(self, inputs: Inputs, what: str) -> None:
        """Render ``inputs``; if that gives a new valid Corefile, write it and switch to it live."""
        async with self._apply_lock:
            if self._closing or self.inst is None:
                return
            try:
                result = build_corefile(inputs, self.params, self.env)
            except ConfigError as exc:
                self._config_error(f"{what} change not applied, keeping the last good Corefile: {exc}")
                return
            if result.text == self.served_text:
                self.inputs = inputs
                return
            self._log_render(result)
            if await self._switch_to(self.inst, result.text):
                self.inputs = inputs

    async def _switch_to(self, inst: Instance, text: str) -> bool:
        last_good = self.served_text
        path = self.params.corefile
        try:
            write_atomic(path, text)
        except OSError as exc:
            self._config_error(f"Failed to write the Corefile {path}: {exc}")
            return False
        if self.params.reload_with_signal:
            ok = await self._reload_via_signal()
        else:
            ok = await inst.reload(text)
        if ok:
            return True
        self._config_error("The new Corefile could not be applied; keeping the last good Corefile")
        try:
            write_atomic(path, last_good)
        except OSError as exc:
            log.error("Failed to restore the Corefile %s: %s", path, exc)
        return False

    async def _reload_via_signal(self) -> bool:
        """node-cache's ``-reloadwithsignal``: SIGUSR1 to ourselves; the handler re-reads ``-conf``."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._signal_waiter = waiter
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await asyncio.wait_for(asyncio.shield(waiter), self.options.signal_reload_timeout)
        except TimeoutError:
            log.error("No reload after SIGUSR1 within %gs", self.options.signal_reload_timeout)
            return False
        finally:
            self._signal_waiter = None

    def _on_sigusr1(self) -> None:
        log.info("SIGUSR1: Reloading")
        self._spawn(self._reload_from_file())

    async def _reload_from_file(self) -> None:
        waiter = self._signal_waiter
        ok = False
        if self.inst is not None and not self._closing:
            ok = await self.inst.reload()
        if waiter is not None and not waiter.done():
            waiter.set_result(ok)

    # -- shutdown ----------------------------------------------------------------------------------

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("Second %s: exiting now, skipping the rest of the teardown", sig.name)
            self.force_exit(1)
            return
        log.info("%s: Shutting down servers then terminating", sig.name)
        self._stop.set()

    async def _shutdown(self, inst: Instance, failed: bool) -> None:
        async with self._apply_lock:  # lets a live reload in progress finish, then no more
            self._closing = True
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._stop.set()
        if self._sync_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._sync_task), self.options.tick_timeout)
            except TimeoutError:
                log.warning(
                    "A node setup tick is still running after %gs; cancelling it", self.options.tick_timeout
                )
                self._sync_task.cancel()
                await asyncio.gather(self._sync_task, return_exceptions=True)

        inst.shutting_down = True  # /ready answers 503 from now on
        gen = inst.gen
        if gen is not None and gen.lameduck > 0:
            if not failed:
                log.info("Going into lameduck mode for %gs", gen.lameduck)
                await asyncio.sleep(gen.lameduck)
            # Served above (rules still in place, as CoreDNS's health OnShutdown does before
            # node-cache's teardown); Instance.stop must not wait a second time.
            gen.lameduck = 0.0
        teardown = not self.params.skip_teardown
        if teardown and self.backend is not None and self.rules:
            await self._net(
                Reconciler(self.backend, None, self.metrics, rules=self.rules, logger=log).teardown()
            )
        # After a loop was detected the in-flight queries are the looping ones: do not wait for them.
        await inst.stop(0.0 if failed else self.options.drain)
        if teardown and self.iface is not None:
            await self._net(Reconciler(None, self.iface, self.metrics, logger=log).teardown())
        if not teardown:
            log.info("Skipping teardown (-skipteardown): rules and interface addresses stay in place")
        self._remove_pidfile()

    async def _emergency_teardown(self) -> None:
        """After a bug: NOTRACK rules without a server would black-hole the node's DNS, so remove
        them (and the addresses) with a fresh reconciler, whatever state the old one is in."""
        with contextlib.suppress(Exception):
            if self.inst is not None:
                await self.inst.stop(0.0)
        if not self.params.skip_teardown:
            with contextlib.suppress(Exception):
                await self._net(
                    Reconciler(self.backend, self.iface, self.metrics, rules=self.rules).teardown()
                )
        self._remove_pidfile()

    def _remove_pidfile(self) -> None:
        if self._pidfile_written and self.params.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(self.params.pidfile)

    # -- helpers -----------------------------------------------------------------------------------

    async def _net(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self.net is not None
        return await self.net.call(coro)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _config_error(self, message: str) -> None:
        log.error("%s", message)
        self.metrics.inc("configmap")

    def _log_render(self, result: RenderResult) -> None:
        for warning in result.warnings:
            log.warning("%s", warning)
        log.info("%s", result.summary)
        log.info("Using config file:\n%s", result.text)


def _dir_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``stop`` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
