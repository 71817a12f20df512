"""The review web app (Flask) and a small server around it.

Safety: the server binds to 127.0.0.1 unless another address is asked for (with a
warning); every API call needs the per-session token (writes only in the
``X-Review-Token`` header, so a page from another origin cannot forge one); requests
whose ``Host`` is not the bound address are refused (DNS rebinding); images are
looked up by set name and id in memory, never by a path from the request; request
bodies are checked field by field and refused with a 400 that says what was wrong.
"""

from __future__ import annotations

import csv
import hmac
import io
import ipaddress
import secrets
import threading
import warnings
from collections.abc import Iterable
from importlib import resources
from typing import Any

from flask import Flask, Response, jsonify, request

from replicate._validation import check_choice, fail
from replicate.review.session import LABEL_STATUSES, MAX_PER_PAGE, PAIR_STATUSES, ReviewSession
from replicate.review.store import LABEL_VERDICTS, PAIR_VERDICTS, STAGES

__all__ = ["create_app", "ReviewServer", "start_server", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_BODY = 16 * 1024
_DECIDE_FIELDS = ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "verdict", "label", "reason")
_UNDO_FIELDS = ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "reason")
#: keyboard bindings shown in the page (digits relabel to class 0-9)
KEYS = {
    "label": {"a": "accept", "r": "reject", "d": "duplicate", "x": "unusable"},
    "pair": {"d": "duplicate", "s": "distinct"},
}


class BadRequest(ValueError):
    """A request the app refuses with 400."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(
    session: ReviewSession,
    *,
    token: str | None = None,
    reviewer: str = "",
    stage: str = "select",
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
) -> Flask:
    """The Flask app over one review session; ``app.config['REVIEW_TOKEN']`` holds the token.

    Parameters
    ----------
    session
        the review session served.
    token
        the access token every request must carry (``None``: a random one).
    reviewer
        the default reviewer name.
    stage
        the stage shown first: ``"select"`` or ``"verify"``.
    allowed_hosts
        the ``Host`` header values accepted (loopback names by default).
    """
    stage = check_choice("stage", stage, STAGES)
    token = token or secrets.token_urlsafe(24)
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, REVIEW_TOKEN=token)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep distance columns in table order
    hosts = {h.strip("[]").lower() for h in allowed_hosts}
    app.before_request(lambda: _guard(token, hosts))
    app.after_request(_security_headers)
    _install_error_handlers(app)
    _Api(session, reviewer, stage).register(app)
    return app


# ---------------------------------------------------------------------- the guard and the errors


def _error(status: int, message: str) -> Response:
    resp = jsonify({"error": message, "status": status})
    resp.status_code = status
    return resp


def _token_ok(value: str | None, token: str) -> bool:
    return bool(value) and hmac.compare_digest(str(value), token)


def _request_host() -> str:
    """The request's ``Host`` without its port (and without the brackets of an IPv6 address)."""
    raw = request.host or ""
    host = raw.rsplit(":", 1)[0] if not raw.startswith("[") else raw.split("]")[0]
    return host.strip("[]").lower()


_NEEDS_TOKEN_PAGE = (
    "<!doctype html><title>replicate review</title><p>This review server needs its session "
    "token: open the URL that <code>replicate review</code> printed (it ends in "
    "<code>?token=...</code>).</p>"
)


def _guard(token: str, hosts: set[str]) -> Response | None:
    """Before every request: a bound Host; the token in the header for writes, header or query for reads."""
    host = _request_host()
    if host not in hosts:
        return _error(403, f"Host == {host!r}; must be one of {sorted(hosts)}. Open the URL the server printed.")
    if request.path.startswith("/static/"):
        return None
    if request.method == "POST":
        if not _token_ok(request.headers.get("X-Review-Token"), token):
            return _error(403, "X-Review-Token header missing or wrong; writes need the session token.")
        return None
    if request.path == "/" or request.path.startswith("/api/"):
        if not (_token_ok(request.headers.get("X-Review-Token"), token) or _token_ok(request.args.get("token"), token)):
            if request.path == "/":
                return Response(_NEEDS_TOKEN_PAGE, status=403, mimetype="text/html")
            return _error(403, "token missing or wrong; pass the session token (X-Review-Token header or ?token=).")
    return None


def _security_headers(resp: Response) -> Response:
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cache-Control", "no-store")
    resp.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
    )
    return resp


def _install_error_handlers(app: Flask) -> None:
    """Every error as JSON ``{"error", "status"}``: bad input 400, unknown item 404, nothing to undo 409."""
    for exc in (BadRequest, ValueError, TypeError):
        app.register_error_handler(exc, lambda e: _error(400, str(e)))
    app.register_error_handler(KeyError, lambda e: _error(404, str(e.args[0]) if e.args else "not found"))
    app.register_error_handler(LookupError, lambda e: _error(409, str(e)))
    app.register_error_handler(
        413, lambda e: _error(413, f"request body larger than {MAX_BODY} bytes; send one decision per request.")
    )
    app.register_error_handler(404, lambda e: _error(404, f"no such endpoint: {request.method} {request.path}"))
    app.register_error_handler(405, lambda e: _error(405, f"method {request.method} not allowed on {request.path}"))


# ---------------------------------------------------------------------- request arguments


def _arg_int(name: str, default: int | None, lo: int = 0, hi: int | None = None) -> int | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} == {raw!r}; must be an integer.") from None
    if value < lo or (hi is not None and value > hi):
        raise BadRequest(f"{name} == {value}; must be in [{lo}, {hi if hi is not None else 'inf'}].")
    return value


def _arg_bool(name: str, default: bool) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise BadRequest(f"{name} == {raw!r}; must be 1 or 0.")


def _page_args(per_page: int) -> dict[str, Any]:
    """The paging query of ``/api/labels`` and ``/api/pairs``: status, page, per_page, images, scale."""
    return {
        "status": request.args.get("status") or None,
        "page": _arg_int("page", None),
        "per_page": _arg_int("per_page", per_page, 1, MAX_PER_PAGE) or per_page,
        "images": _arg_bool("images", True),
        "scale": _arg_int("scale", 1, 1, 8) or 1,
    }


def _json_body() -> dict[str, Any]:
    """The request's JSON object (a 400 naming what was sent otherwise)."""
    if not request.is_json:
        raise BadRequest(
            f"Content-Type == {request.content_type!r}; must be 'application/json'. Send the decision as JSON."
        )
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # JSON nested thousands deep: the parser gives up
        raise BadRequest("body == JSON nested too deeply; must be a flat JSON object of one decision.") from None
    if not isinstance(data, dict):
        raise BadRequest(
            "body == not a JSON object; must be a JSON object such as "
            '{"kind": "label", "item": "<id>", "verdict": "accept"}.'
        )
    return data


def _check_fields(data: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    """The decision's fields: only ``allowed`` ones, the ``required`` ones present, each of its type."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise BadRequest(f"fields == {unknown}; must be among {list(allowed)}.")
    missing = [f for f in required if f not in data]
    if missing:
        raise BadRequest(f"fields == missing {missing}; must include {list(required)}.")
    for f in ("kind", "item", "ref_set", "ref_id", "stage", "reviewer", "verdict"):
        if f in data and data[f] is not None and not isinstance(data[f], str):
            raise BadRequest(f"{f} == {data[f]!r}; must be a string.")
    label = data.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, (str, int))):
        raise BadRequest(f"label == {label!r}; must be a class name or index.")


# ---------------------------------------------------------------------- the pages and the API


class _Api:
    """The app's pages and API endpoints over one session (each method one endpoint)."""

    def __init__(self, session: ReviewSession, reviewer: str, stage: str) -> None:
        self.session, self.reviewer, self.stage = session, reviewer, stage

    def register(self, app: Flask) -> None:
        for rule, method, view in (
            ("/", "GET", self.index),
            ("/favicon.ico", "GET", self.favicon),
            ("/api/config", "GET", self.config),
            ("/api/labels", "GET", self.labels),
            ("/api/pairs", "GET", self.pairs),
            ("/api/image", "GET", self.image),
            ("/api/progress", "GET", self.progress),
            ("/api/decide", "POST", self.decide),
            ("/api/undo", "POST", self.undo),
            ("/api/decisions", "GET", self.decisions),
            ("/api/agreement", "GET", self.agreement),
            ("/api/export/blacklist", "GET", self.export_blacklist),
            ("/api/export/verdicts", "GET", self.export_verdicts),
        ):
            app.add_url_rule(rule, view.__name__, view, methods=[method])

    def body(self, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
        """A checked decision body, with the session's reviewer, stage and kind filled in."""
        data = _json_body()
        _check_fields(data, allowed, required)
        data.setdefault("reviewer", self.reviewer)
        data.setdefault("stage", self.stage)
        data.setdefault("kind", "label")
        data["ref_set"] = data.get("ref_set") or ""
        data["ref_id"] = data.get("ref_id") or ""
        return data

    def index(self) -> Response:
        page = resources.files("replicate.review").joinpath("static/index.html").read_text(encoding="utf-8")
        return Response(page, mimetype="text/html")

    def favicon(self) -> Response:
        return Response(status=204)

    def config(self) -> Response:
        q = self.session.queue
        return jsonify(
            {
                "candidates": q.candidates.name,
                "n_candidates": len(q),
                "n_pairs": q.n_pairs,
                "class_names": list(q.class_names),
                "keywords": q.keyword_counts(),
                "stages": list(STAGES),
                "label_verdicts": list(LABEL_VERDICTS),
                "pair_verdicts": list(PAIR_VERDICTS),
                "label_statuses": list(LABEL_STATUSES),
                "pair_statuses": list(PAIR_STATUSES),
                "distance_columns": list(q.distance_columns),
                "reviewer": self.reviewer,
                "stage": self.stage,
                "keys": KEYS,
                "max_per_page": MAX_PER_PAGE,
                "log": str(self.session.store.path),
            }
        )

    def labels(self) -> Response:
        return jsonify(
            self.session.label_page(
                request.args.get("stage", self.stage),
                class_name=request.args.get("class") or None,
                keyword=request.args.get("keyword") or None,
                **_page_args(per_page=100),
            )
        )

    def pairs(self) -> Response:
        return jsonify(self.session.pair_page(request.args.get("stage", self.stage), **_page_args(per_page=20)))

    def image(self) -> Response:
        from replicate.review.queue import encode_png

        queue = self.session.queue
        set_name = request.args.get("set") or queue.candidates.name
        item_id = request.args.get("id")
        if not item_id:
            raise BadRequest("id == missing; must be the id of an image (e.g. ?id=cifar10-test/00001).")
        if set_name not in queue.sets:
            raise KeyError(f"set == {set_name!r}; must be one of {sorted(queue.sets)}.")
        img = queue.image(set_name, item_id)
        if img is None:
            raise KeyError(f"id == {item_id!r}; must be the id of an image in {set_name!r}.")
        scale = _arg_int("scale", 1, 1, 8) or 1
        resp = Response(encode_png(img, scale), mimetype="image/png")
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    def progress(self) -> Response:
        return jsonify(self.session.progress(request.args.get("stage", self.stage)))

    def _event_response(self, event: Any) -> Response:
        resp = jsonify({"event": event.to_dict(), "progress": self.session.progress(event.stage)})
        resp.status_code = 201
        return resp

    def decide(self) -> Response:
        data = self.body(_DECIDE_FIELDS, ("item", "verdict"))
        fields: dict[str, Any] = {k: data.get(k) for k in _DECIDE_FIELDS if k in data}
        return self._event_response(self.session.decide(**fields))

    def undo(self) -> Response:
        data = self.body(_UNDO_FIELDS, ())
        fields: dict[str, Any] = {k: data.get(k) for k in _UNDO_FIELDS if k in data}
        event = self.session.undo(**fields)
        if event is None:
            raise LookupError(
                f"undo == nothing to undo for reviewer {data['reviewer']!r} in stage {data['stage']!r}"
                + (f" on item {data['item']!r}" if data.get("item") else "")
                + "; must follow a decision."
            )
        return self._event_response(event)

    def decisions(self) -> Response:
        since = _arg_int("since", 0) or 0
        return jsonify({"events": [e.to_dict() for e in self.session.store.events(since)]})

    def agreement(self) -> Response:
        from replicate.review.export import agreement as kappa

        res = kappa(
            self.session.store.path,
            request.args.get("a", "select"),
            request.args.get("b", "verify"),
            by=request.args.get("by", "stage"),  # type: ignore[arg-type]
            kind=request.args.get("kind", "label"),  # type: ignore[arg-type]
        )
        return jsonify({**res.to_dict(), "summary": res.summary()})

    def export_blacklist(self) -> Response:
        from replicate.review.export import blacklist

        ids = blacklist(self.session.store.path)
        return Response(
            "".join(f"{x}\n" for x in ids),
            mimetype="text/plain",
            headers={"Content-Disposition": "attachment; filename=blacklist.txt"},
        )

    def export_verdicts(self) -> Response:
        from replicate.review.export import verdicts

        kind = request.args.get("kind", "label")
        df = verdicts(self.session.store.path, kind)  # type: ignore[arg-type]
        buf = io.StringIO()
        df.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL)
        return Response(
            buf.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename=verdicts-{kind}.csv"},
        )


class ReviewServer:
    """A running review server (werkzeug, threaded) in a background thread."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        from werkzeug.serving import make_server

        self.app = app
        self._server = make_server(host, port, app, threaded=True)
        self.host = host
        self.port = int(self._server.server_port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page URL, token included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.app.config['REVIEW_TOKEN']}"

    @property
    def base(self) -> str:
        """``http://host:port`` without the token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ReviewServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="replicate-review", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def start_server(
    session: ReviewSession,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    reviewer: str = "",
    stage: str = "select",
    token: str | None = None,
    background: bool = True,
) -> ReviewServer:
    """Create the app and bind it; ``port=0`` picks a free port.

    Binding to anything but a loopback address makes the review reachable from
    other machines: it is allowed only when asked for, and warns.

    Parameters
    ----------
    session
        the review session served.
    host, port
        the address to bind (``"127.0.0.1"`` by default) and port (0: a free one).
    reviewer
        the default reviewer name.
    stage
        the stage shown first: ``"select"`` or ``"verify"``.
    token
        the access token (``None``: a random one).
    background
        start serving in a background thread (False: return the unstarted server).

    Returns
    -------
    ReviewServer
    """
    if not isinstance(host, str) or not host:
        raise fail("host", host, "an address such as '127.0.0.1'")
    allowed = list(LOOPBACK_HOSTS)
    if not _is_loopback(host):
        warnings.warn(
            f"replicate review is binding to {host!r}, reachable from other machines; anyone who "
            "has the URL with its token can write decisions. Use 127.0.0.1 unless you need this.",
            UserWarning,
            stacklevel=2,
        )
        allowed.append(host)
        if host in ("0.0.0.0", "::"):
            import socket

            allowed += [socket.gethostname(), socket.getfqdn()]
            try:
                allowed.append(socket.gethostbyname(socket.gethostname()))
            except OSError:  # pragma: no cover - no resolvable host name
                pass
    app = create_app(session, token=token, reviewer=reviewer, stage=stage, allowed_hosts=allowed)
    server = ReviewServer(app, host, port)
    return server.start() if background else server
