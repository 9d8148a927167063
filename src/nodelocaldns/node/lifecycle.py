"""The node-cache agent's life: start-up order, then the server's phases with the node's hooks.

Start-up (node-cache's order, made explicit):

1. render ``-basecorefile`` + the kube-dns ConfigMap, check it with the server's own parser, write
   ``-conf`` atomically, or serve ``-conf`` as it is when there is no usable template
   (``LiveConfig.initial``). No usable Corefile at all is fatal (exit 1);
2. remove stale rules, then the interface and its addresses, so ``bind`` can succeed; no rules yet
   (``NetSetup.prepare``);
3. the DNS server (``Server.start``): every listener bound, health/ready/metrics up;
4. only then the NOTRACK/ACCEPT rules: a server that failed to start never black-holes the node's DNS;
5. the pidfile, as the "fully up" signal.

Then: the rules and the interface are re-checked every ``-syncinterval`` (``SyncLoop``); both mounted
directories are polled and changes are applied live (``LiveConfig``), or through the SIGUSR1 handler
with ``-reloadwithsignal``.

Shutdown on SIGTERM/SIGINT (a second signal exits at once), or exit 1 when the loop plugin fires.
The node's steps are hooks in the server's phases: SERVING -> LAMEDUCK (not ready, still answering;
no wait after a fatal error) -> DRAINING, whose hook deletes the rules -> sockets close -> CLOSED,
whose hook removes the addresses. Rules go *before* the sockets close, as node-cache does (its
teardown runs before ``caddy.Stop``): from that moment kube-proxy's DNAT takes the kube-dns ClusterIP
again while the link-local address is still answered, so no query meets a closed port on a local
address with NOTRACK rules in front of it. ``-skipteardown`` keeps rules and addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nodelocaldns import __version__
from nodelocaldns.errors import ConfigError
from nodelocaldns.node.configsync import write_atomic
from nodelocaldns.node.diagnose import bind_hint, listen_addresses, listen_keys
from nodelocaldns.node.flags import NodeCacheParams
from nodelocaldns.node.handover import Handover
from nodelocaldns.node.liveconfig import LiveConfig
from nodelocaldns.node.netsetup import NetSetup
from nodelocaldns.node.networker import NetWorker
from nodelocaldns.node.setup_metrics import SetupMetrics, serve_setup_metrics
from nodelocaldns.node.sockshare import SocketShare
from nodelocaldns.server.httpd import HTTPServer
from nodelocaldns.server.process import Signals, banner
from nodelocaldns.server.server import Phase, Server
from nodelocaldns.server.settings import DEFAULT, ServerConfig

log = logging.getLogger("nodelocaldns.node")


@dataclass(frozen=True)
class AgentOptions:
    """Knobs that are not node-cache flags."""

    watch_interval: float = 10.0
    """Seconds between polls of the template and kube-dns ConfigMap directories (node-cache: 10 s)."""
    tick_timeout: float = 20.0
    """How long shutdown waits for a reconcile tick that is already running (xtables lock waits)."""
    signal_reload_timeout: float = 30.0
    """How long a ``-reloadwithsignal`` change waits for the SIGUSR1 handler's verdict."""
    server: ServerConfig = DEFAULT
    """The DNS server's tunables (drain time, TCP limits, ...)."""
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
        self.options = options or AgentOptions()
        self.metrics = SetupMetrics()
        self.config = LiveConfig(
            params,
            env,
            self.metrics,
            watch_interval=self.options.watch_interval,
            signal_reload_timeout=self.options.signal_reload_timeout,
        )
        self.signals = Signals(self.config.on_sigusr1, force_exit=force_exit)
        self.server: Server | None = None
        self.net: NetWorker | None = None
        self.setup: NetSetup | None = None
        self._metrics_server: HTTPServer | None = None
        self._pidfile_written = False
        self.handover: Handover | None = None
        self.share: SocketShare | None = None

    async def run(self) -> int:
        self.signals.install()
        self.net = NetWorker()
        self.setup = NetSetup(self.params, self.metrics, self.net)
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
            self.signals.remove()
            await self.config.cancel()
            if self._metrics_server is not None:
                await self._metrics_server.stop()
            self.net.close()
            self.setup.close()
            if self.share is not None:
                self.share.close()
            if self.handover is not None:
                self.handover.close()  # last: the instance lock covered the teardown

    @property
    def served_text(self) -> str:
        """The Corefile the server runs now (what ``-conf`` holds)."""
        return self.config.served_text

    # -- start-up ----------------------------------------------------------------------------------

    async def _start(self) -> int | None:
        p = self.params
        assert self.setup is not None
        log.info("Using Corefile %s", p.corefile)
        log.info("Using Pidfile %s", p.pidfile or "")
        text = await self.config.initial()
        if text is None:
            return 1
        await self._start_setup_metrics()
        handover = Handover.create(p)
        if handover is not None and await handover.join():
            self.handover = handover
        setup = await self.setup.prepare()

        server = self.server = Server(text, p.corefile, config=self.options.server)
        server.extra_ready_checks.append(self.setup.ready_check)
        if self._metrics_server is not None:  # node-cache registers the counter only once it serves it
            server.extra_collectors.append(self.metrics.collect)
        if p.setup_interface or p.setup_iptables:  # the node's DNS networking is ours: handovers too
            server.tcp_migrate.ensure("the node agent hands TCP over to its peers")
        server.add_hook(Phase.DRAINING, self.setup.delete_rules)
        server.add_hook(Phase.CLOSED, self.setup.remove_interface)
        try:
            await server.start()
        except (ConfigError, OSError) as exc:
            self.server = None  # Server.start closed what it had opened
            hint = bind_hint(exc, listen_keys(text))
            if setup.errors:
                hint += f" (the interface setup failed first: {'; '.join(str(e) for e in setup.errors)})"
            log.error("Failed to start the DNS server on %s: %s%s", listen_addresses(text), exc, hint)
            owner = await self.handover.failed_start_owner() if self.handover is not None else None
            if owner is not None:
                log.info(
                    "Leaving the interface and rules in place: agent pid %d (%s) owns them",
                    owner.pid,
                    owner.phase,
                )
            else:
                await self.setup.teardown(only_added=True)
            return 1
        if not p.quiet:
            banner(server, self.options.version)

        if not self.signals.stop.is_set():
            if self.handover is not None:
                # Under the instance lock: two agents started together must not both add the rules.
                async with self.handover.locked():
                    await self.setup.install_rules()
                await self.handover.serving()
                self._share_sockets(server)
            else:
                await self.setup.install_rules()
            self._write_pidfile()
            self._start_watchers()
        return None

    def _share_sockets(self, server: Server) -> None:
        """Hold and read the peers' UDP sockets, and let them read ours (node/sockshare.py)."""
        assert self.handover is not None
        share = SocketShare(self.handover.registry, server, asyncio.get_running_loop())
        try:
            share.start(self.handover.earlier)
        except OSError as exc:
            log.error("Socket sharing off: cannot listen in %s (%s)", self.handover.registry.dir, exc)
            share.close()
            return
        self.share = share

    def _start_watchers(self) -> None:
        assert self.server is not None
        self.config.start(self.server)

    async def _start_setup_metrics(self) -> None:
        addr = self.params.metrics_listen_address
        try:
            self._metrics_server = await serve_setup_metrics(addr, self.metrics)
        except (OSError, ConfigError) as exc:
            # node-cache logs and runs without its own metrics; DNS matters more than a scrape target.
            log.error("Failed to start metrics handler on %s: %s", addr, exc)

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

    # -- running and shutdown ------------------------------------------------------------------------

    async def _serve_until_done(self) -> int:
        server = self.server
        assert server is not None and self.setup is not None
        failed = await self.signals.wait(server)
        await self.config.close()  # lets a live reload in progress finish, then no more
        await self.setup.stop_sync(self.options.tick_timeout)
        await self._hand_over()
        # After a loop was detected the in-flight queries are the looping ones: do not wait for them.
        await server.shutdown(lameduck=not failed, drain=0.0 if failed else None)
        self._remove_pidfile()
        return 1 if failed else 0

    async def _hand_over(self) -> None:
        """Before lameduck: a peer that serves the same addresses keeps interface and rules."""
        assert self.setup is not None
        if self.handover is None:
            return
        if self.share is not None:  # before our sockets drain: no peer may read their end marks
            await self.share.leave()
        owner = await self.handover.leaving()
        if owner is not None:
            self.setup.keep_for(f"agent pid {owner.pid}")
            log.info("Agent pid %d serves the same addresses: handing over to it", owner.pid)

    async def _emergency_teardown(self) -> None:
        """After a bug: NOTRACK rules without a server would black-hole the node's DNS, so stop the
        server at once and remove rules and addresses, whatever state the run is in."""
        assert self.setup is not None
        await self.setup.cancel_sync()  # a tick in progress holds the reconciler
        if self.handover is not None and self.setup.kept_for is None:
            owner = await self.handover.failed_start_owner()
            if owner is not None:
                self.setup.keep_for(f"agent pid {owner.pid}")
        server = self.server
        torn_down = False
        if server is not None and server.phase < Phase.LAMEDUCK:
            try:
                await server.shutdown(lameduck=False, drain=0.0)  # its hooks tear the node setup down
                torn_down = True
            except Exception:
                log.exception("Shutdown after the error failed too")
        if not torn_down:
            await self.setup.teardown()
        self._remove_pidfile()

    def _remove_pidfile(self) -> None:
        if self._pidfile_written and self.params.pidfile:
            with contextlib.suppress(OSError):
                os.unlink(self.params.pidfile)
