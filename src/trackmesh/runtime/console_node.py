"""``trackmesh console``: the operator's console as a cluster member (docs/console.md, "The console role").

It joins the cluster like any member (zenoh peer or router client, scouting off, links
authenticated with the cluster secret) and carries no media. It reads:

- the members' reports: media nodes' load reports (``tm/load/<zone>/<node>``), gateways' and
  connectors' status reports (``tm/status/<role>/<zone>/<index>``), and their liveliness, into a
  :class:`~trackmesh.http.console.cluster_view.ClusterView` (zones -> nodes, with report ages);
- the live rooms, peers and tracks by querying every media node's ``tm/console/<zone>/<node>``
  queryable (runtime/console_query.py), which is also how its kicks and room ends reach the node;
- the peers' timelines and the event log from the zone connectors' log API (HTTP, bearer: the
  logged-in app's secret; the cluster secret is the default app's);
- each zone's app list (multi-tenancy, runtime/cluster_apps.py), from the zone's connector as soon
  as its status report shows up: a tenant logs in with its app secret and sees (and acts on) its
  app's rooms, sessions, events and recordings only, as on standalone.

It serves the same ``/console`` as standalone (http/console/routes.py): the routes call
:meth:`call_workers` as on standalone, and this node answers from the cluster. A console that
loses the cluster keeps serving the last view, marked stale with its time (:meth:`console_stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import zenoh

from trackmesh.cluster.membership import GATEWAY_ROOT, LOAD_ROOT, NODE_ROOT, member_config
from trackmesh.cluster.topology import links_wanted, open_member
from trackmesh.cluster.zenoh_registry import undeclare
from trackmesh.cluster.zenoh_session import ZenohNode
from trackmesh.config import NodeConfig
from trackmesh.connector.apps import App
from trackmesh.http.console.cluster_view import ClusterView
from trackmesh.rpc import RpcError

from .cluster_apps import AppListFollower
from .cluster_node import PEER_WAIT
from .connector_link import CONNECTOR_ROOT
from .console_query import CONSOLE_ROOT, OPS, RECORDING_CHUNK, STATUS_ROOT
from .console_rpc import EVERY_APP
from .node import Node, StartupError

log = logging.getLogger("trackmesh.console")

QUERY_TIMEOUT = 2.0  # a media node slower than this to list its sessions shows as "did not answer"
LOG_TIMEOUT = 5.0
RECORDING_TIMEOUT = 10.0  # one chunk of a download (runtime/console_query.py RECORDING_CHUNK)
# A media node that went from the view this shortly before the console lost the cluster most likely
# went with it (losing the router drops the members' liveliness and the console's links in either
# order): its last rows belong to the stale view.
GONE_GRACE = 10.0


def _cache_key(params: dict[str, Any]) -> str:
    """The key of a listing's last rows: its app, or every app's (the cluster operator's)."""
    return EVERY_APP if params.get("apps") == "*" else str(params.get("app", ""))


def _refusal(result: object) -> tuple[int, str]:
    """A worker's result without ``ok`` (a media node's reply, not trusted): its HTTP status (503
    unless a 4xx/5xx) and its error, cut to 200 characters."""
    if not isinstance(result, dict):
        return 503, "?"
    status = result.get("status", 503)
    return (status if isinstance(status, int) and 400 <= status < 600 else 503), str(result.get("error", "?"))[:200]


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


class ConsoleNode(Node):
    def __init__(self, config: NodeConfig) -> None:
        super().__init__(config)
        self.zenoh: ZenohNode | None = None
        self.view = ClusterView()
        self.client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._entities: list[Any] = []
        # app -> media node (zone, node) -> (its last rows, unix time): shown for a node that does not
        # answer, and for every node once the console has lost the cluster.
        self._rooms: dict[str, dict[tuple[int, int], tuple[list[Any], float]]] = {}
        # Per listing, the last rows of nodes that went, with when they went (see GONE_GRACE).
        self._gone_rows: dict[str, dict[tuple[int, int], tuple[list[Any], float, float]]] = {}
        self._stale_since: float | None = None  # unix time the last good view is from, while the cluster is lost
        self.counters = {"queries": 0, "query_failures": 0, "log_failures": 0}
        # Multi-tenancy: each zone connector's app list (zone -> its apps), merged into cluster_apps.
        self._app_followers: dict[int, AppListFollower] = {}
        self._zone_apps: dict[int, list[App]] = {}
        self._apply_tasks: set[asyncio.Task[None]] = set()

    @property
    def has_media(self) -> bool:
        return False

    def now(self) -> float:
        return time.monotonic()

    def _post(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn)

    # ---- start and stop -----------------------------------------------------------------------

    async def _start_workers(self) -> None:
        import httpx

        loop = self._loop = asyncio.get_running_loop()
        mcfg = member_config(self.config, 0)
        try:
            self.zenoh = zn = await loop.run_in_executor(None, open_member, mcfg)
        except Exception as exc:
            raise StartupError(f"--cluster-port/--seeds: cannot open the cluster session: {exc}") from None
        session = zn.session
        live = session.liveliness()
        self._entities = [
            session.declare_subscriber(f"{LOAD_ROOT}*/*", self._on_report),
            session.declare_subscriber(f"{STATUS_ROOT}*/*/*", self._on_report),
            live.declare_subscriber(f"{NODE_ROOT}*/*", self._on_live),
            live.declare_subscriber(f"{GATEWAY_ROOT}*/*", self._on_live),
            live.declare_subscriber(f"{CONNECTOR_ROOT}*", self._on_live),
        ]
        # Never an environment proxy: requests go to cluster members only.
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(LOG_TIMEOUT, connect=2.0), trust_env=False)
        deadline = time.monotonic() + PEER_WAIT
        while zn.links() < links_wanted(mcfg) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if mcfg.seeds and not zn.links():
            log.warning("no cluster seed answers; starting anyway (zenoh keeps retrying)",
                        extra={"fields": {"seeds": ",".join(mcfg.seeds)}})  # fmt: skip
        log.info("console joined the cluster", extra={"fields": {"zone": self.config.zone, "links": zn.links()}})

    async def after_stop(self) -> None:
        for follower in self._app_followers.values():
            follower.close()
        self._app_followers = {}
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        for entity in self._entities:
            undeclare(entity)
        self._entities = []
        zn, self.zenoh = self.zenoh, None
        if zn is not None:
            zn.close()

    # ---- zenoh callbacks (zenoh threads) ------------------------------------------------------

    def _on_report(self, sample: zenoh.Sample) -> None:
        parts = str(sample.key_expr).split("/")
        if parts[1] == "load" and len(parts) == 4:
            role, zone, index = "media", parts[2], parts[3]
        elif parts[1] == "status" and len(parts) == 5:
            role, zone, index = parts[2], parts[3], parts[4]
        else:
            return
        if sample.kind == zenoh.SampleKind.PUT:
            data = sample.payload.to_bytes()
            self._post(lambda: self.view.report(role, data, self.now()))
            if role == "connector" and zone.isdigit() and int(zone) not in self._app_followers:
                self._post(lambda: self._follow_zone_apps(int(zone)))
        elif zone.isdigit() and index.isdigit():
            self._post(lambda: self.view.removed(role, int(zone), int(index)))

    def _on_live(self, sample: zenoh.Sample) -> None:
        if sample.kind == zenoh.SampleKind.PUT:
            return
        parts = str(sample.key_expr).split("/")
        if parts[1] == "conn" and len(parts) == 3 and parts[2].isdigit():
            zone = int(parts[2])
            self._post(lambda: self._connector_gone(zone))
            return
        role = {"node": "media", "gw": "gateway"}.get(parts[1])
        if role is not None and len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
            zone, index = int(parts[2]), int(parts[3])
            self._post(lambda: self.view.gone(role, zone, index, self.now()))

    # ---- multi-tenancy: every zone's app list ---------------------------------------------------

    def _follow_zone_apps(self, zone: int) -> None:
        """A zone connector reported: follow its app list (queried now, then kept current)."""
        zn, loop = self.zenoh, self._loop
        if zone in self._app_followers or zn is None or loop is None or zn.session.is_closed():
            return
        if len(self._app_followers) >= 1 << 12:  # far above any real zone count: forged reports stop here
            return
        follower = AppListFollower(zn.session, zone, self.config.secret, loop,
                                   lambda apps: self._zone_apps_changed(zone, apps))  # fmt: skip
        self._app_followers[zone] = follower
        follower.start()

    def _zone_apps_changed(self, zone: int, apps: list[App]) -> None:
        """The apps of every zone, as one list: a tenant logs in here with its secret whichever zone
        lists it. Zones should agree on an app's secret; when they do not, the lowest zone's wins."""
        self._zone_apps[zone] = apps
        merged: dict[str, App] = {}
        for z in sorted(self._zone_apps):
            for app in self._zone_apps[z]:
                merged.setdefault(app.app_id, app)
        task = asyncio.create_task(self.apply_cluster_apps(list(merged.values())), name="console-apps")
        self._apply_tasks.add(task)
        task.add_done_callback(self._apply_tasks.discard)

    def app_secret(self, app: str) -> str | None:
        """The secret of ``app`` (the cluster secret for the default app ""), or None: not (or no
        longer) in any zone's app list."""
        if app == "":
            return self.config.secret
        entry = self.cluster_apps.get(app) if self.cluster_apps is not None else None
        return entry.app_secret if entry is not None else None

    def _zone_app_ids(self, zone: int) -> set[str]:
        return {a.app_id for a in self._zone_apps.get(zone, [])}

    def _connector_gone(self, zone: int) -> None:
        for z, i in self._indexes("connector"):
            if z == zone:
                self.view.gone("connector", z, i, self.now())

    def _indexes(self, role: str) -> list[tuple[int, int]]:
        return [(z, i) for (r, z, i) in self.view.members if r == role]

    # ---- what the console routes call -----------------------------------------------------------

    def connected(self) -> bool:
        zn = self.zenoh
        return zn is not None and (not zn.config.seeds or zn.links() > 0)

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        zn = self.zenoh
        if zn is None:
            return False, "not started"
        if not self.connected():
            return False, f"not connected to any cluster seed ({','.join(zn.config.seeds)}); zenoh keeps retrying"
        return True, "ok"

    async def stats(self, media: bool = False) -> list[dict[str, Any]]:
        return []  # no workers

    def _query(self, op: str, params: dict[str, Any]) -> list[tuple[str, Any]]:
        """(key, decoded reply) of every media node that answered (runs in an executor thread)."""
        zn = self.zenoh
        if zn is None or zn.session.is_closed():
            raise RpcError(503, "the console is not in the cluster")
        payload = json.dumps({"op": op, **params})
        out: list[tuple[str, Any]] = []
        for reply in zn.session.get(f"{CONSOLE_ROOT}*/*", payload=payload, timeout=QUERY_TIMEOUT):
            if reply.ok is None:
                continue
            with contextlib.suppress(ValueError):
                out.append((str(reply.ok.key_expr), json.loads(reply.ok.payload.to_bytes())))
        return out

    async def call_workers(self, method: str, params: dict[str, Any]) -> list[Any]:
        """``method`` (console.rooms, console.kick, console.end_room) on every media node of the
        cluster: one result per worker of every node that answered, and an RpcError for each
        known media node that did not."""
        op = next((k for k, v in OPS.items() if v == method), None)
        if op is None:
            raise RpcError(404, f"the console role has no {method}")
        loop = asyncio.get_running_loop()
        self.counters["queries"] += 1
        try:
            if not self.connected():
                raise RpcError(503, "the console lost the cluster")
            replies = await loop.run_in_executor(None, self._query, op, params)
        except RpcError as exc:
            self.counters["query_failures"] += 1
            return self._stale_rows(method, params, exc)
        except Exception as exc:
            self.counters["query_failures"] += 1
            return self._stale_rows(method, params, RpcError(503, f"cluster query failed: {exc}"))
        if not self.connected():  # lost while the query ran: what came back is not the cluster's view
            self.counters["query_failures"] += 1
            return self._stale_rows(method, params, RpcError(503, "the console lost the cluster"))
        out: list[Any] = []
        by_node: dict[tuple[int, int], list[Any]] = {}
        for key, results in replies:
            parts = key.split("/")
            try:
                zone, node = int(parts[2]), int(parts[3])
            except (ValueError, IndexError):
                self.view.bad_reports += 1  # a member's malformed reply: counted, never a 500
                continue
            rows = by_node.setdefault((zone, node), [])
            for worker, result in enumerate(results if isinstance(results, list) else []):
                if not isinstance(result, dict) or "ok" not in result:
                    status, err = _refusal(result)
                    out.append(RpcError(status, f"zone {zone} node {node} worker {worker}: {err}"))
                    continue
                value = result["ok"]
                if method == "console.rooms" and isinstance(value, list):
                    value = [{**row, "zone": zone, "node": node} for row in value if isinstance(row, dict)]
                    rows.extend(value)
                out.append(value)
        if method != "console.rooms":
            return out
        cache = self._rooms.setdefault(_cache_key(params), {})
        now = time.time()
        for node_key, rows in by_node.items():
            cache[node_key] = (rows, now)
        self._stale_since = None
        live = {(z, i) for z, i in self._indexes("media") if self.view.members[("media", z, i)].gone is None}
        for node_key in list(cache):
            if node_key in by_node:
                continue
            if node_key in live:  # alive but silent: its last rows, said so
                rows, at = cache[node_key]
                out.append(rows)
                out.append(RpcError(504, f"zone {node_key[0]} node {node_key[1]} did not answer; its sessions as "
                                         f"of {time.strftime('%H:%M:%S', time.localtime(at))} are shown"))  # fmt: skip
            else:
                # Gone: so are its sessions (kept aside a moment in case the console is what went).
                rows, at = cache.pop(node_key)
                self._gone_rows.setdefault(_cache_key(params), {})[node_key] = (rows, at, now)
        gone = self._gone_rows.get(_cache_key(params), {})
        for node_key in [k for k, (_, _, went) in gone.items() if now - went > GONE_GRACE or k in by_node]:
            del gone[node_key]
        for zone, node in sorted(live - set(by_node) - set(cache)):
            out.append(RpcError(504, f"zone {zone} node {node} did not answer"))
        return out

    def _stale_rows(self, method: str, params: dict[str, Any], exc: RpcError) -> list[Any]:
        if method != "console.rooms":
            return [exc]
        cache = self._rooms.setdefault(_cache_key(params), {})
        if self._stale_since is None:
            now = time.time()
            for node_key, (rows, at, went) in self._gone_rows.pop(_cache_key(params), {}).items():
                if now - went <= GONE_GRACE and node_key not in cache:
                    cache[node_key] = (rows, at)
            self._stale_since = max((at for _, at in cache.values()), default=now)
        return [*(rows for rows, _ in cache.values()), exc]

    # ---- recordings: the media nodes' files (runtime/console_query.py node_op) ------------------

    async def console_recordings(self, app: str, room: str | None) -> tuple[list[dict[str, Any]], list[str]]:
        """Every media node's recorded files of ``app`` (of ``room``), each with its ``zone`` and ``node``,
        and what went wrong (a node that did not answer). A file two nodes list (a shared record
        directory) is listed once, from the first."""
        if not self.connected():
            raise RpcError(503, "the console lost the cluster")
        params = {"app": app, **({"room": room} if room is not None else {})}
        self.counters["queries"] += 1
        try:
            replies = await asyncio.get_running_loop().run_in_executor(None, self._query, "recordings", params)
        except Exception as exc:
            self.counters["query_failures"] += 1
            raise RpcError(503, f"cluster query failed: {exc}") from None
        files: list[dict[str, Any]] = []
        seen: set[str] = set()
        answered: set[tuple[int, int]] = set()
        for key, results in sorted(replies):
            parts = key.split("/")
            try:
                zone, node = int(parts[2]), int(parts[3])
                listed = results[0]["ok"]
            except (ValueError, IndexError, KeyError, TypeError):
                self.view.bad_reports += 1
                continue
            answered.add((zone, node))
            for f in listed if isinstance(listed, list) else []:
                path = f.get("path") if isinstance(f, dict) else None
                if isinstance(path, str) and path not in seen:
                    seen.add(path)
                    files.append({**f, "zone": zone, "node": node})
        live = {(z, i) for z, i in self._indexes("media") if self.view.members[("media", z, i)].gone is None}
        missing = [f"zone {z} node {i} did not answer: its recordings are not listed"
                   for z, i in sorted(live - answered)]  # fmt: skip
        files.sort(key=lambda i: (str(i.get("session", "")), _number(i.get("start_wall")), i["path"]))
        return files, missing

    def _chunk(self, zone: int, node: int, params: dict[str, Any]) -> bytes:
        zn = self.zenoh
        if zn is None or zn.session.is_closed():
            raise RpcError(503, "the console is not in the cluster")
        payload = json.dumps({"op": "recording_chunk", **params})
        for reply in zn.session.get(f"{CONSOLE_ROOT}{zone}/{node}", payload=payload, timeout=RECORDING_TIMEOUT):
            if reply.ok is not None:
                return bytes(reply.ok.payload.to_bytes())
            if reply.err is not None:
                try:
                    err = json.loads(reply.err.payload.to_bytes())
                    raise RpcError(int(err["status"]), str(err["error"])[:200])
                except (ValueError, KeyError, TypeError):
                    raise RpcError(502, "the media node refused the download") from None
        raise RpcError(504, f"zone {zone} node {node} did not answer")

    async def console_recording_chunk(self, zone: int, node: int, app: str, path: str,
                                      offset: int) -> tuple[bytes, bool]:  # fmt: skip
        """Up to RECORDING_CHUNK bytes of a recorded file of ``app`` on media node (zone, node), from
        ``offset``, and whether that was its end (a shorter chunk). RpcError: 404 not a file of the app
        there, 503/504 the cluster."""
        params = {"app": app, "path": path, "offset": offset}
        data = await asyncio.get_running_loop().run_in_executor(None, self._chunk, zone, node, params)
        return data, len(data) < RECORDING_CHUNK

    # ---- recording a room: one media node's worker starts or stops it, cluster-wide -------------

    def _record_targets(self, app: str, room: str) -> list[tuple[int, int]]:
        """Media nodes to ask, best first: those the last listing shows hosting the room, then the
        other live ones (a recording decision is cluster-wide: any media node can take it)."""
        live = sorted((z, i) for z, i in self._indexes("media") if self.view.members[("media", z, i)].gone is None)
        listed = {**self._rooms.get(EVERY_APP, {}), **self._rooms.get(app, {})}
        hosting = [key for key, (rows, _) in sorted(listed.items()) if key in live and any(
            isinstance(r, dict) and r.get("room") == room and r.get("app", app) == app for r in rows)]  # fmt: skip
        return hosting + [key for key in live if key not in hosting]

    def _ask_node(self, zone: int, node: int, payload: str) -> Any:
        """One media node's first result to a worker op (runs in an executor thread): the value, or
        an RpcError (its refusal, or 504 when it does not answer)."""
        zn = self.zenoh
        if zn is None or zn.session.is_closed():
            return RpcError(503, "the console is not in the cluster")
        for reply in zn.session.get(f"{CONSOLE_ROOT}{zone}/{node}", payload=payload, timeout=QUERY_TIMEOUT):
            if reply.ok is None:
                continue
            try:
                result = json.loads(reply.ok.payload.to_bytes())[0]
            except (ValueError, IndexError, KeyError, TypeError):
                self.view.bad_reports += 1
                return RpcError(502, f"zone {zone} node {node} answered a malformed reply")
            if isinstance(result, dict) and "ok" in result:
                return result["ok"]
            return RpcError(*_refusal(result))
        return RpcError(504, f"zone {zone} node {node} did not answer")

    async def console_record(self, app: str, room: str, action: str) -> Any:
        """Start or stop recording ``room`` of ``app`` (``record.start``/``record.stop`` on the room's
        worker of a media node that hosts it, else of any live one; the next one when a node does
        not answer). Its answer as ``POST /api/record/*`` gives it; RpcError otherwise."""
        if not self.connected():
            raise RpcError(503, "the console lost the cluster")
        targets = self._record_targets(app, room)
        if not targets:
            raise RpcError(503, "no live media node in the cluster")
        payload = json.dumps({"op": f"record_{action}", "app": app, "room": room})
        loop = asyncio.get_running_loop()
        last = RpcError(503, "no media node answered")
        for zone, node in targets[:3]:
            self.counters["queries"] += 1
            result = await loop.run_in_executor(None, self._ask_node, zone, node, payload)
            if not isinstance(result, RpcError):
                return result
            last = result
            if result.status < 500:  # the node's refusal (e.g. a stop of a room not recorded) is the answer
                raise result
            self.counters["query_failures"] += 1
        raise last

    def console_stale(self) -> dict[str, Any] | None:
        """None while the view is live; else since when the rooms shown are stale, and why."""
        if self._stale_since is None:
            return None
        return {"since": self._stale_since, "reason": self.readiness()[1]}

    def console_cluster(self) -> dict[str, Any]:
        zn = self.zenoh
        return {"zones": self.view.zones(self.now()), "connected": self.connected(),
                "links": zn.links() if zn is not None else 0, "bad_reports": self.view.bad_reports}  # fmt: skip

    def console_metrics(self) -> dict[str, float]:
        """``trackmesh_console{what=...}`` on /metrics (docs/observability.md)."""
        states = [n["state"] for z in self.view.zones(self.now()) for r in ("gateway", "media", "connector")
                  for n in z[r]]  # fmt: skip
        zn = self.zenoh
        return {"members_up": float(states.count("up")), "members_stale": float(states.count("stale")),
                "members_gone": float(states.count("gone")), "links": float(zn.links() if zn is not None else 0),
                "rooms_stale": float(self._stale_since is not None), "queries_total": float(self.counters["queries"]),
                "query_failures_total": float(self.counters["query_failures"]),
                "log_failures_total": float(self.counters["log_failures"]),
                "bad_reports_total": float(self.view.bad_reports),
                "app_lists_total": float(sum(f.counters["app_lists"] for f in self._app_followers.values())),
                "app_list_rejected_total": float(sum(f.counters["app_list_rejected"]
                                                     for f in self._app_followers.values()))}  # fmt: skip

    async def connector_log(self, path: str, params: dict[str, Any], app: str = "") -> list[Any]:
        """``GET /api/connector/log/<path>`` of ``app`` from every zone connector, merged (each
        connector answers with the app its bearer secret names). RpcError(503) when no connector
        answered, 401 when ``app`` is no longer in the cluster's app list."""
        rows: list[Any] = []
        errors: list[str] = []
        secret = self.app_secret(app)
        if secret is None:
            raise RpcError(401, "your app is no longer in the cluster's app list: log in again")
        targets = self.view.http_of("connector", self.now())
        if not targets:
            raise RpcError(503, "no connector in the cluster (the console reads timelines from the zones' connectors)")
        headers = {"Authorization": f"Bearer {secret}"}
        query = {k: v for k, v in params.items() if v is not None}
        for zone, base in targets:
            try:
                resp = await self.client.get(f"{base}/api/connector/log/{path}", params=query, headers=headers)
                if resp.status_code == 401 and app != "" and app not in self._zone_app_ids(zone):
                    continue  # a zone that does not list this tenant: none of its events are there
                body = resp.json()
                if resp.status_code != 200 or not body.get("status", False):
                    raise ValueError(body.get("error", f"HTTP {resp.status_code}"))
                data = body.get("data")
                rows.extend(data if isinstance(data, list) else [])
            except Exception as exc:
                self.counters["log_failures"] += 1
                errors.append(f"zone {zone}: {exc}")
        if errors and len(errors) == len(targets):
            raise RpcError(503, "the connectors did not answer: " + "; ".join(errors))
        return rows
